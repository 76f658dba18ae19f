"""Pixel distances on the 0..255 scale, vectorised over batches of image pairs.

These are the "naive" distances: they compare values at the same positions, so identical images
give 0 but a 1-pixel shift already gives a large distance. They are here to be compared with the
feature distances, and because PSNR / SSIM are what image-restoration work reports.

All functions take ``a`` and ``b`` as ``N x 3 x H x W`` (or ``3 x H x W``) tensors or
``[N x] H x W x 3`` uint8 numpy arrays, values 0..255, and return one value per pair.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0
#: SSIM constants of Wang et al. 2004, "Image quality assessment: from error visibility to
#: structural similarity": Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
#: luminance of ITU-R BT.601 (the Y of YCbCr, the usual channel for single-channel SSIM)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class PixelDistances:
    """Pixel distances of one pair of images (0..255 scale). ``psnr`` is ``inf`` for identical images."""

    sum_abs_diff: float
    mean_abs_diff: float
    mse: float
    rmse: float
    psnr: float
    ssim: float        # mean SSIM over the R, G, B channels; NaN when smaller than the window
    ssim_luma: float   # SSIM on BT.601 luminance

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def as_batch(images) -> torch.Tensor:
    """uint8/float images in torch (N x 3 x H x W) or numpy (N x H x W x 3) layout -> N x 3 x H x W."""
    if isinstance(images, np.ndarray):
        if not images.flags.writeable:  # memory-mapped or PIL-backed arrays
            images = images.copy()
        t = torch.from_numpy(np.ascontiguousarray(images))
        t = t[None] if t.ndim == 3 else t
        return t.permute(0, 3, 1, 2)
    t = torch.as_tensor(images)
    return t[None] if t.ndim == 3 else t


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def abs_diff_stats(a, b) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(sum |a-b|, sum (a-b)^2, values per image), exact for uint8 inputs.

    uint8: the differences are integers of at most 255 (squares at most 65025), exact in float32.
    They are summed in float32 over runs of 256 values (a run of squares is at most
    256 * 255^2 = 16,646,400 < 2^24, so every partial sum is an exact integer whatever the
    summation order), then the runs in float64 (exact up to 2^53). Pairs are processed a few
    images at a time (about 2^20 values): the float32 buffer, updated in place from a-b to |a-b|
    to (a-b)^2, stays in cache and is reused instead of freshly mapped memory for every batch.
    """
    a, b = as_batch(a), as_batch(b)
    _check_pair(a, b)
    values_per_image = a.shape[1:].numel()
    if a.dtype == torch.uint8 and b.dtype == torch.uint8:
        run, chunk_values = 256, 1 << 20
        n = a.shape[0]
        # both batches as N x values, in the same element order, without a copy where the layout
        # allows (NCHW-contiguous, or NHWC memory seen through as_batch's permute)
        m = values_per_image
        if a.ndim == 4 and not (a.is_contiguous() and b.is_contiguous()) \
                and a.permute(0, 2, 3, 1).is_contiguous() and b.permute(0, 2, 3, 1).is_contiguous():
            fa, fb = a.permute(0, 2, 3, 1).reshape(n, m), b.permute(0, 2, 3, 1).reshape(n, m)
        else:
            fa, fb = a.reshape(n, m), b.reshape(n, m)
        runs = m // run
        main = runs * run

        def exact_row_sums(x: torch.Tensor) -> torch.Tensor:
            total = x[:, :main].reshape(x.shape[0], runs, run).sum(dim=-1).sum(dim=-1, dtype=torch.float64)
            if main < m:
                total += x[:, main:].sum(dim=-1, dtype=torch.float64)
            return total

        sad = torch.empty(n, dtype=torch.float64, device=fa.device)
        ssd = torch.empty(n, dtype=torch.float64, device=fa.device)
        step = max(1, chunk_values // max(m, 1))
        for start in range(0, n, step):
            rows = slice(start, start + step)
            diff = fa[rows].to(torch.float32)  # a fresh buffer (fa may be the caller's memory)
            diff.sub_(fb[rows])
            diff.abs_()
            sad[rows] = exact_row_sums(diff)
            diff.square_()
            ssd[rows] = exact_row_sums(diff)
    else:
        dims = tuple(range(1, a.ndim))
        diff = a.to(torch.float64) - b.to(torch.float64)
        sad = diff.abs().sum(dim=dims)
        ssd = (diff * diff).sum(dim=dims)
    return sad, ssd, values_per_image


def sum_abs_diff(a, b) -> torch.Tensor:
    """Sum of absolute differences over all values: the naive image distance."""
    return abs_diff_stats(a, b)[0]


def mean_abs_diff(a, b) -> torch.Tensor:
    sad, _, n = abs_diff_stats(a, b)
    return sad / n


def mse(a, b) -> torch.Tensor:
    _, ssd, n = abs_diff_stats(a, b)
    return ssd / n


def psnr_from_mse(mse_values: torch.Tensor) -> torch.Tensor:
    """10 log10(255^2 / MSE); ``inf`` where the images are identical."""
    return 10.0 * torch.log10(DATA_RANGE**2 / mse_values)


def psnr(a, b) -> torch.Tensor:
    return psnr_from_mse(mse(a, b))


def _gaussian_kernel(dtype, device) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return k / k.sum()


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    # separable Gaussian, "valid" region only: the border rows a padded filter would invent are
    # exactly the ones scikit-image crops before averaging, so both give the same mean SSIM
    channels = x.shape[1]
    kh = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    kw = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    return F.conv2d(F.conv2d(x, kh, groups=channels), kw, groups=channels)


def ssim_per_channel(a, b) -> torch.Tensor:
    """Mean SSIM of each channel of each pair -> N x C (float64).

    Wang et al. 2004 with a Gaussian window (11, sigma 1.5), K1 = 0.01, K2 = 0.03, data range 255
    and population (not sample) covariances: the same numbers as scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=255)``.
    """
    a, b = as_batch(a), as_batch(b)
    _check_pair(a, b)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                         f"got {a.shape[-1]}x{a.shape[-2]}")
    # float64: variance = E[x^2] - E[x]^2 cancels badly in float32 on the 0..255 scale
    x, y = a.to(torch.float64), b.to(torch.float64)
    kernel = _gaussian_kernel(torch.float64, x.device)
    n = x.shape[0]
    maps = _filter(torch.cat([x, y, x * x, y * y, x * y]), kernel)
    mx, my, mxx, myy, mxy = maps.split(n)
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1))


def luma(images) -> torch.Tensor:
    """N x 3 x H x W -> N x 1 x H x W BT.601 luminance (float64, 0..255)."""
    x = as_batch(images).to(torch.float64)
    w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def ssim(a, b) -> torch.Tensor:
    """SSIM averaged over the R, G, B channels, per pair."""
    return ssim_per_channel(a, b).mean(dim=1)


def ssim_luma(a, b) -> torch.Tensor:
    """SSIM of the BT.601 luminance, per pair."""
    return ssim_per_channel(luma(a), luma(b))[:, 0]


def pixel_distances(a, b, *, with_ssim: bool = True) -> dict[str, torch.Tensor]:
    """Every pixel distance for each pair: name -> tensor of N values (float64)."""
    sad, ssd, n = abs_diff_stats(a, b)
    m = ssd / n
    out = {"sum_abs_diff": sad, "mean_abs_diff": sad / n, "mse": m, "rmse": m.sqrt(),
           "psnr": psnr_from_mse(m)}
    if with_ssim:
        if ssim_defined(a):
            out["ssim"] = ssim(a, b)
            out["ssim_luma"] = ssim_luma(a, b)
        else:  # undefined, not zero: the window does not fit (reported as n/a / null)
            out["ssim"] = out["ssim_luma"] = torch.full_like(sad, math.nan)
    return out


def ssim_defined(images) -> bool:
    """SSIM's 11 x 11 window must fit inside the image."""
    return min(as_batch(images).shape[-2:]) >= SSIM_WINDOW


def compare_pixels(a, b) -> PixelDistances:
    """All pixel distances of one pair of images."""
    values = pixel_distances(a, b)
    return PixelDistances(**{k: float(v[0]) for k, v in values.items()})

