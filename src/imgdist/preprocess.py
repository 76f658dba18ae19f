"""How an image becomes a network input: resize to the backbone's size, then scale values.

The reference FID tools agree on the network and disagree only here, by 4-130% in FID on the
same images and weights, so each recipe reproduces one tool's operations in that tool's order:

* ``bilinear``      torch bilinear with half-pixel centres, no antialiasing (pytorch-fid)
* ``tf1-bilinear``  TensorFlow-1 ``resize_bilinear`` without the half-pixel offset, which is what
                    the original TensorFlow FID graph does (torch-fidelity reproduces it)
* ``pil-bicubic``   Pillow's antialiased bicubic on float channels, clipped to 0..255
                    (clean-fid, Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties
                    in GAN Evaluation")
* ``antialias-bilinear``  torch bilinear with antialiasing (what Pillow's bilinear does)
* ``none``          no resize: every image must already have the input size

Images arrive as uint8 ``H x W x 3`` arrays. Resizing runs per image (in data-loader workers);
scaling runs per batch on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RESIZE_KERNELS = ("bilinear", "tf1-bilinear", "pil-bicubic", "antialias-bilinear", "none")


@dataclass(frozen=True)
class Preprocessing:
    """A resize recipe: ``x * pre_scale -> resize to size x size -> (x - mean) / std``.

    ``x`` starts on the 0..255 scale. ``pre_scale`` exists so that a recipe can follow its
    reference tool's operation order exactly (pytorch-fid resizes ``v / 255``).
    ``size`` None keeps each image's own size (the ``pixels`` backbone at native size).
    """

    name: str
    size: int | None
    resize: str
    mean: float | tuple[float, float, float] = 0.0
    std: float | tuple[float, float, float] = 1.0
    pre_scale: float = 1.0

    def __post_init__(self):
        if self.resize not in RESIZE_KERNELS:
            raise ValueError(f"unknown resize kernel {self.resize!r}; choose from {RESIZE_KERNELS}")

    def describe(self) -> str:
        """One line for provenance and printed results."""
        def num(v):
            return f"({', '.join(f'{c:.4g}' for c in v)})" if isinstance(v, tuple) else f"{v:.4g}"

        x = "v" if self.pre_scale == 1.0 else f"v/{1.0 / self.pre_scale:.4g}"
        return (f"{self.name} ({self.resize} on {x} to {self.size or 'native size'}, "
                f"then (x-{num(self.mean)})/{num(self.std)})")

    def resize_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 H x W x 3 -> float32 3 x size x size (pre-scaled, not yet normalised)."""
        x = torch.from_numpy(np.asarray(image).astype(np.float32)).permute(2, 0, 1)
        if self.pre_scale != 1.0:
            x = x / (1.0 / self.pre_scale)  # a division, bit-exact with pytorch-fid's v / 255
        return resize_chw(x, self.size, self.resize)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """Pre-scaled, resized N x 3 x S x S batch -> network input."""
        mean = torch.as_tensor(self.mean, dtype=batch.dtype, device=batch.device)
        std = torch.as_tensor(self.std, dtype=batch.dtype, device=batch.device)
        if mean.ndim:
            mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        return (batch - mean) / std

    def __call__(self, images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Convenience for in-process use: uint8 images -> normalised batch."""
        return self.normalise(torch.stack([self.resize_image(im) for im in images]))


def resize_chw(x: torch.Tensor, size: int | None, kernel: str) -> torch.Tensor:
    """Resize one float C x H x W image to size x size with the named kernel."""
    if size is None or kernel == "none" or tuple(x.shape[-2:]) == (size, size):
        if kernel == "none" and size is not None and tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"image is {x.shape[-1]}x{x.shape[-2]}, the backbone needs {size}x{size} "
                             "and resize is 'none'")
        return x
    if kernel == "bilinear":
        return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    if kernel == "antialias-bilinear":
        return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True)[0]
    if kernel == "tf1-bilinear":
        return _tf1_bilinear(x, size, size)
    if kernel == "pil-bicubic":
        return _pil_bicubic(x, size)
    raise ValueError(f"unknown resize kernel {kernel!r}")


def _tf1_axis(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # TF1 resize_bilinear(align_corners=False): source = dst * (in / out) in float32, no 0.5 offset
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32, device=device) * scale
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, src - lo.to(torch.float32)


def _tf1_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # along x first, then y, as TensorFlow does: the other order differs by up to 2e-3 of 0..255
    y0, y1, fy = _tf1_axis(x.shape[-2], height, x.device)
    x0, x1, fx = _tf1_axis(x.shape[-1], width, x.device)
    fx = fx.view(1, 1, -1)
    top, bottom = x[:, y0, :], x[:, y1, :]
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * fx
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * fx
    return top + (bottom - top) * fy.view(1, -1, 1)


def _pil_bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    channels = []
    for channel in x.numpy().astype(np.float32):
        resized = Image.fromarray(channel).resize((size, size), resample=Image.BICUBIC)
        channels.append(np.asarray(resized, dtype=np.float32).clip(0, 255))
    return torch.from_numpy(np.stack(channels))
