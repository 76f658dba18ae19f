"""Pixel distances against independent references: scikit-image (PSNR, SSIM) and numpy (sums)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from imgdist.pairs.pixel import (
    abs_diff_stats,
    compare_pixels,
    luma,
    mse,
    pixel_distances,
    psnr,
    ssim,
    ssim_luma,
    ssim_per_channel,
    sum_abs_diff,
)

SSIM_KW = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
LUMA = np.array([0.299, 0.587, 0.114])


def _noise(img, rng):
    return np.clip(img.astype(np.float64) + rng.normal(0, 12, img.shape), 0, 255).round().astype(np.uint8)


def _blur(img, rng):
    return np.clip(gaussian_filter(img.astype(np.float64), sigma=(1.2, 1.2, 0)), 0, 255).round().astype(np.uint8)


def _quantise(img, rng):  # JPEG-like: coarse levels on 8 x 8 block means plus detail
    x = img.astype(np.float64)
    h, w = (img.shape[0] // 8) * 8, (img.shape[1] // 8) * 8
    blocks = x[:h, :w].reshape(h // 8, 8, w // 8, 8, 3)
    means = blocks.mean(axis=(1, 3), keepdims=True)
    detail = np.round((blocks - means) / 24.0) * 24.0
    x[:h, :w] = (means + detail).reshape(h, w, 3)
    return np.clip(x, 0, 255).round().astype(np.uint8)


def _shift(img, rng):  # one pixel to the right, the first column repeated
    return np.concatenate([img[:, :1], img[:, :-1]], axis=1)


DISTORTIONS = {"noise": _noise, "blur": _blur, "quantise": _quantise, "shift": _shift}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos():
    # crops keep the test quick; they are still real photographs with texture and flat areas
    return {
        "astronaut": skdata.astronaut()[32:160, 160:320],
        "chelsea": skdata.chelsea()[60:188, 100:260],
        "coffee": skdata.coffee()[150:278, 250:410],
    }


@pytest.fixture(scope="module")
def pairs(photos):
    rng = np.random.default_rng(0)
    return [(f"{p}-{d}", img, fn(img, rng)) for p, img in photos.items() for d, fn in DISTORTIONS.items()]


def test_pairs_are_distinct(pairs):
    for name, a, b in pairs:
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
        assert (a != b).any(), name


def test_psnr_matches_skimage(pairs):
    for name, a, b in pairs:
        expected = peak_signal_noise_ratio(a, b, data_range=255)
        got = float(psnr(a, b)[0])
        assert abs(got - expected) < 1e-4, (name, got, expected)


def test_ssim_matches_skimage(pairs):
    for name, a, b in pairs:
        expected = structural_similarity(a, b, channel_axis=2, **SSIM_KW)
        got = float(ssim(a, b)[0])
        assert 0.0 < expected < 1.0
        assert abs(got - expected) < 1e-4, (name, got, expected)
        if not name.startswith("astronaut"):
            continue
        per_channel = ssim_per_channel(a, b)[0].numpy()
        for c in range(3):
            ref = structural_similarity(a[:, :, c], b[:, :, c], **SSIM_KW)
            assert abs(per_channel[c] - ref) < 1e-4, (name, c)


def test_ssim_luma_matches_skimage(pairs):
    for name, a, b in pairs:
        la = a.astype(np.float64) @ LUMA
        lb = b.astype(np.float64) @ LUMA
        np.testing.assert_allclose(luma(a)[0, 0].numpy(), la, atol=1e-9)
        expected = structural_similarity(la, lb, **SSIM_KW)  # channel-less
        got = float(ssim_luma(a, b)[0])
        assert abs(got - expected) < 1e-4, (name, got, expected)


def test_sums_exact_against_numpy(pairs):
    for name, a, b in pairs:
        diff = a.astype(np.float64) - b.astype(np.float64)
        sad, ssd, n = abs_diff_stats(a, b)
        assert n == a.size
        assert float(sad[0]) == np.abs(diff).sum(), name
        assert float(ssd[0]) == (diff**2).sum(), name
        assert float(sum_abs_diff(a, b)[0]) == np.abs(diff).sum()
        assert float(mse(a, b)[0]) == (diff**2).sum() / a.size
        values = pixel_distances(a, b, with_ssim=False)
        assert float(values["mean_abs_diff"][0]) == np.abs(diff).sum() / a.size
        assert float(values["rmse"][0]) == math.sqrt((diff**2).sum() / a.size)
        assert set(values) == {"sum_abs_diff", "mean_abs_diff", "mse", "rmse", "psnr"}


def test_sums_exact_on_large_extreme_values():
    """All-0 against all-255 over many values: float32 accumulation would drift, integers must not."""
    a = np.zeros((2, 1024, 1024, 3), dtype=np.uint8)
    b = np.full_like(a, 255)
    b[1, 0, 0, 0] = 254
    sad, ssd, n = abs_diff_stats(a, b)
    total = 1024 * 1024 * 3
    assert sad.tolist() == [255.0 * total, 255.0 * total - 1]
    assert ssd.tolist() == [255.0**2 * total, 255.0**2 * total - (255**2 - 254**2)]
    assert sad.dtype == ssd.dtype == torch.float64


def test_batch_equals_single_calls(photos):
    rng = np.random.default_rng(1)
    a = np.stack([photos["astronaut"], photos["coffee"], photos["chelsea"]])
    b = np.stack([_noise(a[0], rng), _blur(a[1], rng), _shift(a[2], rng)])
    batch = pixel_distances(a, b)
    for key, values in batch.items():
        assert values.shape == (3,), key
    for i in range(3):
        single = pixel_distances(a[i], b[i])
        for key in batch:
            assert float(batch[key][i]) == pytest.approx(float(single[key][0]), rel=1e-12, abs=1e-12), key
    # torch N x 3 x H x W gives the same as numpy N x H x W x 3
    ta, tb = torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2)
    as_torch = pixel_distances(ta, tb)
    for key in batch:
        torch.testing.assert_close(as_torch[key], batch[key], rtol=1e-12, atol=1e-12)


def test_float_inputs_equal_uint8_inputs(photos):
    rng = np.random.default_rng(2)
    a = photos["chelsea"]
    b = _noise(a, rng)
    from_uint8 = pixel_distances(a, b)
    from_float = pixel_distances(a.astype(np.float32), b.astype(np.float32))
    from_double = pixel_distances(torch.from_numpy(a).permute(2, 0, 1).double(),
                                  torch.from_numpy(b).permute(2, 0, 1).double())
    for key in from_uint8:
        assert float(from_float[key][0]) == pytest.approx(float(from_uint8[key][0]), rel=1e-12), key
        assert float(from_double[key][0]) == pytest.approx(float(from_uint8[key][0]), rel=1e-12), key


def test_identical_images(photos):
    a = photos["astronaut"][:64, :64]
    d = compare_pixels(a, a.copy())
    assert d.sum_abs_diff == 0 and d.mean_abs_diff == 0 and d.mse == 0 and d.rmse == 0
    assert d.psnr == math.inf
    assert d.ssim == pytest.approx(1.0, abs=1e-12)
    assert d.ssim_luma == pytest.approx(1.0, abs=1e-12)


def test_small_images_have_no_ssim():
    a = np.zeros((10, 40, 3), dtype=np.uint8)
    b = np.full_like(a, 3)
    d = compare_pixels(a, b)
    assert d.sum_abs_diff == 3 * a.size and d.mse == 9
    assert math.isnan(d.ssim) and math.isnan(d.ssim_luma)
    with pytest.raises(ValueError, match="11x11"):
        ssim(a, b)


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        sum_abs_diff(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


def test_sums_exact_for_every_memory_layout():
    """numpy NHWC, torch NCHW, a mix of both, sliced (non-contiguous) views, sizes not a multiple of 256."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (5, 23, 37, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (5, 23, 37, 3), dtype=np.uint8)
    diff = a.astype(np.int64) - b.astype(np.int64)
    expected = (np.abs(diff).sum(axis=(1, 2, 3)).tolist(), (diff**2).sum(axis=(1, 2, 3)).tolist())
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).contiguous()
    for x, y in [(a, b), (ta, tb), (a, tb), (ta, b), (torch.from_numpy(a).permute(0, 3, 1, 2), tb)]:
        sad, ssd, n = abs_diff_stats(x, y)
        assert (sad.tolist(), ssd.tolist()) == expected and n == 23 * 37 * 3
    sad, ssd, _ = abs_diff_stats(ta[:, :, 1:, ::2], tb[:, :, 1:, ::2])
    sub = diff[:, 1:, ::2]
    assert sad.tolist() == np.abs(sub).sum(axis=(1, 2, 3)).tolist()
    assert ssd.tolist() == (sub**2).sum(axis=(1, 2, 3)).tolist()
