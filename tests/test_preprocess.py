"""The two stages of a resize recipe: decoding side (``prepare``) and device side (``finish``).

The reference for every recipe is the same recipe applied to one image at a time (the path the
parity tests check against pytorch-fid, torch-fidelity, clean-fid, the DINOv2 and CLIP code):
a whole batch resized on the device must give the same bits, and what travels from the decoding
side must be the uint8 image itself wherever the kernel is plain tensor arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import imgdist
from imgdist.extraction.backbones import list_specs
from imgdist.extraction.features import FeatureExtractor
from imgdist.extraction.preprocess import Preprocessing

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(count, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _recipes():
    seen = {}
    for spec in list_specs():
        for prep in spec.modes.values():
            seen.setdefault((prep.resize, prep.crop, prep.size is None), prep)
    # kernels no registered recipe pairs with a crop
    seen["extra-1"] = Preprocessing("x", 40, "tf1-bilinear", mean=1.0, std=2.0, crop="resize-center")
    seen["extra-2"] = Preprocessing("y", 40, "antialias-bilinear", pre_scale=1 / 255, crop="center")
    return sorted(seen.values(), key=lambda p: (p.resize, p.crop, p.name))


RECIPES = _recipes()


@pytest.mark.parametrize("prep", RECIPES, ids=lambda p: f"{p.name}-{p.resize}-{p.crop}")
def test_batch_on_the_device_equals_one_image_at_a_time(prep):
    size = prep.size or 24
    images = _images(4, 30, 26) if prep.resize != "none" else _images(4, size, size)
    if prep.size is None:
        images = _images(4, 7, 9)
    one_by_one = torch.stack([prep.normalise(prep.resize_image(im)[None])[0] for im in images])
    batch = torch.stack([prep.prepare(im) for im in images])
    assert torch.equal(prep.finish(batch), one_by_one)
    # images of different sizes in one batch: resized one by one on the device, same bits
    if prep.size is not None and prep.resize != "none":
        mixed = images[:2] + _images(2, 41, 33, seed=5)
        expected = torch.stack([prep.normalise(prep.resize_image(im)[None])[0] for im in mixed])
        assert torch.equal(prep.finish([prep.prepare(im) for im in mixed]), expected)


@pytest.mark.parametrize("prep", RECIPES, ids=lambda p: f"{p.name}-{p.resize}-{p.crop}")
def test_what_travels_is_uint8_except_for_the_float_pillow_kernel(prep):
    image = _images(1, 30, 26)[0] if prep.resize != "none" else _images(1, prep.size or 5, prep.size or 5)[0]
    x = prep.prepare(image)
    if prep.resize == "pil-bicubic":
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, prep.size, prep.size)
    elif prep.resize == "pil-bicubic-rgb":
        assert x.dtype == torch.uint8 and tuple(x.shape) == (3, prep.size, prep.size)
    else:
        expected = image
        if prep.crop == "center":
            side = min(image.shape[:2])
            top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
            expected = image[top:top + side, left:left + side]
        assert x.dtype == torch.uint8
        assert np.array_equal(x.permute(1, 2, 0).numpy(), expected)  # the image itself, unresized


def test_resize_none_refuses_the_wrong_size_where_the_image_is_decoded():
    prep = Preprocessing("n", 8, "none")
    with pytest.raises(ValueError, match="8x8"):
        prep.prepare(_images(1, 9, 8)[0])


def _folder(path, images):
    path.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(path / f"{i:02d}.png")
    return path


@pytest.mark.parametrize("backbone,mode", [("pixels", "antialias"), ("efficientnet-lite0", None)])
def test_workers_main_process_and_in_memory_paths_agree(tmp_path, backbone, mode):
    """uint8 images from worker processes, resized per batch, equal in-process decoding and
    ``embed_images`` (the 'device' is the CPU here; on a GPU the same code resizes there)."""
    images = _images(6, 37, 45, seed=3) + _images(3, 20, 30, seed=4)  # two sizes in one batch
    folder = _folder(tmp_path / "imgs", images)
    ex = FeatureExtractor(backbone, mode=mode, progress=False, batch_size=4, workers=0)
    here = ex.extract(str(folder)).features
    ex.workers = 2
    workers = ex.extract(str(folder))
    assert workers.timing.workers == 2
    direct, _ = ex.embed_images(images)
    np.testing.assert_array_equal(workers.features, here)
    np.testing.assert_allclose(direct, here, rtol=0, atol=1e-6 * np.abs(here).max())


def test_auto_workers_decode_the_first_batch_here_then_choose(tmp_path, monkeypatch):
    import imgdist.extraction.features as F

    folder = _folder(tmp_path / "imgs", _images(10, 12, 12))
    seen = []

    def choose(decode_s, compute_s, device_type, cores=None):
        seen.append((decode_s > 0, compute_s > 0, device_type))
        return 0

    monkeypatch.setattr(F, "choose_workers", choose)
    out = imgdist.extract_features(str(folder), "pixels", mode="antialias", progress=False, batch_size=4)
    assert seen == [(True, True, "cpu")] and out.timing.workers == 0 and len(out) == 10


@pytest.mark.parametrize("decode,compute,device,cores,expected", [
    (0.03, 1.0, "cpu", 2, 0),      # Fashion-MNIST PNGs through Inception: decoding is 3%
    (0.2, 1.0, "cpu", 2, 0),       # below CPU_WORKER_SHARE: the network keeps both cores
    (1.0, 1.0, "cpu", 2, 1),       # half the work: one core decodes, the network keeps one
    (3.0, 1.0, "cpu", 16, 12),     # 75% of 16 cores
    (1.0, 0.01, "cpu", 1, 0),      # one core: nothing to overlap with
    (0.5, 0.01, "cuda", 16, 16),   # accelerator: every core decodes (the main process waits on it)
    (0.5, 0.01, "cuda", 64, 16),   # ... up to MAX_WORKERS
    (0.0, 1.0, "cuda", 8, 0),      # nothing to decode (arrays)
])
def test_choose_workers(decode, compute, device, cores, expected):
    from imgdist.extraction.features import choose_workers

    assert choose_workers(decode, compute, device, cores) == expected


def test_features_do_not_depend_on_the_thread_count(tmp_path):
    """torch's CPU resize rounds differently with 1 and 2 threads; the extractor resizes with one,
    so a machine's (or a torchrun rank's) thread count does not move Inception's features (its
    oneDNN convolutions give the same bits with either; EfficientNet's depthwise ones do not,
    7e-6 apart, which is beyond imgdist's reach)."""
    from stand_in_weights import save_stand_in

    folder = _folder(tmp_path / "imgs", _images(12, 28, 28, seed=9))
    weights = save_stand_in(tmp_path / "w.pth")
    ex = FeatureExtractor("inception", weights=weights, progress=False, batch_size=6, workers=0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = ex.extract(str(folder)).features
        torch.set_num_threads(1)
        one = ex.extract(str(folder)).features
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_no_more_workers_than_batches(tmp_path):
    folder = _folder(tmp_path / "imgs", _images(9, 12, 12))
    ex = FeatureExtractor("pixels", mode="antialias", progress=False, batch_size=4, workers=1000)
    out = ex.extract(str(folder))
    assert out.timing.workers == 2  # 9 images in batches of 4, the first decoded in the main process
    ex.workers = 0
    np.testing.assert_array_equal(out.features, ex.extract(str(folder)).features)
