"""The extraction engine on the ``pixels`` backbone: values, order, errors and the feature cache.

Expected features are computed here without imgdist: Pillow decodes the PNGs and resizes each
channel in float mode with its (antialiased) bilinear filter, and 'native' mode is plain
``img / 255`` flattened channel by channel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import imgdist
from imgdist.errors import ImageError
import imgdist.extraction.collect as collect_module
import imgdist.extraction.features as features_module
import imgdist.extraction.together as together_module
from imgdist.extraction.features import FeatureExtractor
from imgdist.extraction.stats import GaussianStats


pytestmark = pytest.mark.usefixtures("one_thread")


def _image(seed, height=24, width=20):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * (7 + seed) + yy * 3) % 256, (yy * (5 + seed)) % 256,
                     np.full_like(xx, (37 * seed) % 256)], -1)
    noise = rng.integers(-20, 21, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write_folder(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


def _pil_pixels(img, size=32):
    """Independent 'antialias' pixels features: Pillow's float bilinear resize, / 255, C,H,W order."""
    channels = [np.asarray(Image.fromarray(img[:, :, c].astype(np.float32), mode="F")
                           .resize((size, size), Image.BILINEAR)) for c in range(3)]
    return np.stack(channels).reshape(-1).astype(np.float64) / 255.0


def _native(img):
    return (img.astype(np.float32) / np.float32(255)).transpose(2, 0, 1).reshape(-1)


def _extract(source, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("workers", 0)
    kwargs.setdefault("mode", "native")  # d = 3 * 24 * 20; 'antialias' (d = 3072) where resizing is the point
    return imgdist.extract_features(source, "pixels", **kwargs)


@pytest.fixture
def images():
    return [_image(i) for i in range(10)]


@pytest.fixture
def folder(tmp_path, images):
    _write_folder(tmp_path / "imgs", images)
    return tmp_path / "imgs"


def test_native_mode_is_exactly_img_over_255(images):
    feats = _extract(images[:4], mode="native")
    assert feats.features.shape == (4, 3 * 24 * 20)
    assert feats.features.dtype == np.float32
    for img, row in zip(images, feats.features):
        np.testing.assert_array_equal(row, _native(img))
    assert feats.provenance.backbone == "pixels" and feats.provenance.resize_mode == "native"


def test_antialias_mode_equals_pillow_bilinear(folder, images):
    feats = _extract(str(folder), mode="antialias")
    assert feats.features.shape == (10, 3 * 32 * 32)
    expected = np.stack([_pil_pixels(img) for img in images])
    np.testing.assert_allclose(feats.features, expected, rtol=0, atol=2e-6)
    # a 32 x 32 image is left as it is
    small = _image(3, 32, 32)
    np.testing.assert_array_equal(_extract([small], mode="antialias").features[0], _native(small))


@pytest.mark.parametrize("workers", [0, 2])
def test_order_is_the_folder_order(folder, images, workers):
    feats = _extract(str(folder), workers=workers, batch_size=3, mode="antialias")
    assert [p.rsplit("/", 1)[-1] for p in feats.names] == [f"img_{i:02d}.png" for i in range(10)]
    expected = np.stack([_pil_pixels(img) for img in images])
    np.testing.assert_allclose(feats.features, expected, rtol=0, atol=2e-6)


def test_workers_do_not_change_anything(folder):
    a = _extract(str(folder), workers=0, batch_size=4)
    b = _extract(str(folder), workers=2, batch_size=3)
    assert a.names == b.names
    np.testing.assert_array_equal(a.features, b.features)


def test_stats_equal_stats_of_returned_features(folder):
    feats = _extract(str(folder), batch_size=3)
    ref = GaussianStats().update(feats.features)
    x = feats.features.astype(np.float64)
    assert feats.stats.n == 10
    np.testing.assert_allclose(feats.stats.mu, x.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(feats.stats.sigma, np.cov(x, rowvar=False), rtol=0, atol=1e-12)
    np.testing.assert_allclose(feats.stats.sigma, ref.sigma, rtol=0, atol=1e-12)
    assert feats.stats.provenance == feats.provenance


def test_keep_features_false_keeps_only_stats(folder):
    full = _extract(str(folder), batch_size=4)
    lean = _extract(str(folder), batch_size=4, keep_features=False)
    assert lean.features is None and lean.logits is None
    assert lean.names == full.names
    np.testing.assert_array_equal(lean.stats.mu, full.stats.mu)
    np.testing.assert_array_equal(lean.stats.sigma, full.stats.sigma)


def test_corrupt_file_skip_and_raise(tmp_path, images):
    paths = _write_folder(tmp_path / "imgs", images[:6])
    bad = tmp_path / "imgs" / "img_02b.png"  # sorts in the middle
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")
    feats = _extract(str(tmp_path / "imgs"), on_error="skip", batch_size=2)
    assert feats.names == paths
    assert len(feats.skipped) == 1
    assert feats.skipped.items[0][0] == str(bad)
    np.testing.assert_array_equal(feats.features, np.stack([_native(i) for i in images[:6]]))
    assert feats.stats.n == 6

    with pytest.raises(ImageError, match="img_02b.png") as info:
        _extract(str(tmp_path / "imgs"), batch_size=2)
    assert info.value.name == str(bad)
    assert "\n" not in str(info.value)


def test_native_mode_two_sizes_names_the_odd_one(tmp_path, images):
    _write_folder(tmp_path / "imgs", images[:5])
    odd = tmp_path / "imgs" / "img_02z.png"
    Image.fromarray(_image(7, 30, 30)).save(odd)
    with pytest.raises(ImageError, match="img_02z.png") as info:
        _extract(str(tmp_path / "imgs"), mode="native", batch_size=2)
    assert info.value.name == str(odd)
    assert "30x30" in str(info.value)


def test_cache_second_run_is_all_cached(folder, tmp_path):
    cache = tmp_path / "cache"
    first = _extract(str(folder), cache=str(cache), batch_size=4)
    assert first.cached == 0
    assert len(list(cache.glob("*.sqlite"))) == 1
    second = _extract(str(folder), cache=str(cache), batch_size=4)
    assert second.cached == 10
    assert second.names == first.names
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_allclose(second.stats.sigma, first.stats.sigma, rtol=0, atol=1e-12)


class _CountingEmbed:
    """Wraps the start of each network batch (FeatureExtractor._launch): counts calls and images;
    optionally interrupts on call k."""

    def __init__(self, monkeypatch, interrupt_on=None):
        self.calls, self.images, self.interrupt_on = 0, 0, interrupt_on
        original = FeatureExtractor._launch
        counter = self

        def launch(self, batch, *args, **kwargs):
            counter.calls += 1
            if counter.calls == counter.interrupt_on:
                raise KeyboardInterrupt
            counter.images += len(batch)
            return original(self, batch, *args, **kwargs)

        monkeypatch.setattr(FeatureExtractor, "_launch", launch)


def test_cache_recomputes_only_changed_file(folder, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = _extract(str(folder), cache=cache, batch_size=4)
    changed = _image(99)
    Image.fromarray(changed).save(folder / "img_04.png")
    counter = _CountingEmbed(monkeypatch)
    second = _extract(str(folder), cache=cache, batch_size=4)
    assert counter.images == 1 and counter.calls == 1
    assert second.cached == 9
    np.testing.assert_array_equal(second.features[4], _native(changed))
    keep = [i for i in range(10) if i != 4]
    np.testing.assert_array_equal(second.features[keep], first.features[keep])


def test_interrupted_run_keeps_committed_batches(folder, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    with monkeypatch.context() as m:
        _CountingEmbed(m, interrupt_on=3)
        with pytest.raises(KeyboardInterrupt):
            _extract(str(folder), cache=cache, batch_size=2)
    counter = _CountingEmbed(monkeypatch)
    rerun = _extract(str(folder), cache=cache, batch_size=2)
    assert rerun.cached == 4  # two batches of two were committed before the interruption
    assert counter.images == 6 and counter.calls == 3
    reference = _extract(str(folder), batch_size=5)
    assert rerun.names == reference.names
    np.testing.assert_array_equal(rerun.features, reference.features)
    np.testing.assert_allclose(rerun.stats.mu, reference.stats.mu, rtol=0, atol=1e-12)


def test_progress_rate_and_eta_are_the_networks_not_the_caches(tmp_path, monkeypatch):
    """Cached rows arrive thousands of times faster than a ViT computes on a CPU (ViT-L/14: ~0.4
    images/s on a shared 2-core machine): counted in the rate, 40,000 cached + 10,000 new images
    would show seconds left for hours of work. Here a network of 0.4 s per batch of 2 after 32
    cached images: 3 batches = ~1.2 s are left after the first computed one."""
    import time

    images = [_image(i) for i in range(40)]
    _write_folder(tmp_path / "first", images[:32])  # the same bytes: the same cache keys
    _write_folder(tmp_path / "all", images)
    cache = str(tmp_path / "cache")
    _extract(str(tmp_path / "first"), cache=cache, batch_size=8)

    original = FeatureExtractor._launch

    def slow(self, batch, *args, **kwargs):
        time.sleep(0.4)
        return original(self, batch, *args, **kwargs)

    shown = {}

    class Recording(together_module.tqdm):
        def update(self, n=1):
            out = super().update(n)
            d = self.format_dict
            rate = d["rate"] or ((d["n"] - d["initial"]) / d["elapsed"] if d["elapsed"] else None)
            shown[self.n] = (d["total"] - d["n"]) / rate if rate else None  # tqdm's own ETA formula
            return out

    monkeypatch.setattr(FeatureExtractor, "_launch", slow)
    monkeypatch.setattr(together_module, "tqdm", Recording)
    feats = _extract(str(tmp_path / "all"), cache=cache, batch_size=2, progress=True)
    assert feats.cached == 32 and sorted(shown) == [32, 34, 36, 38, 40]
    assert 0.6 < shown[34] < 5, shown  # counting the cached rows in the rate shows ~0.1 s
    assert shown[40] == 0


def test_arrays_are_cached_by_content_lists_are_not(images, tmp_path, monkeypatch):
    counter = _CountingEmbed(monkeypatch)
    cache = str(tmp_path / "c")
    arr = np.stack(images[:4])
    a = _extract(arr, mode="native", cache=cache)
    b = _extract(arr, mode="native", cache=cache)
    assert (a.cached, b.cached, counter.images) == (0, 4, 4)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.features, np.stack([_native(i) for i in images[:4]]))
    listed = _extract(list(images[:4]), mode="native", cache=cache)  # no stable bytes to key on
    assert listed.cached == 0 and counter.images == 8
    np.testing.assert_array_equal(listed.features, a.features)


def test_cached_rows_are_read_in_chunks_and_stream_into_the_stats(folder, tmp_path, monkeypatch):
    # without keep_features the cached path must not hold every row at once
    cache = str(tmp_path / "cache")
    reference = _extract(str(folder), cache=cache, batch_size=4)
    monkeypatch.setattr(collect_module, "CACHE_READ_CHUNK", 3)
    requested = []
    original = features_module.FeatureCache.get

    def get(self, keys, *args):
        requested.append(len(keys))
        return original(self, keys, *args)

    monkeypatch.setattr(features_module.FeatureCache, "get", get)
    again = _extract(str(folder), cache=cache, batch_size=4, keep_features=False)
    assert again.cached == 10 and again.features is None
    assert requested == [3, 3, 3, 1]
    np.testing.assert_allclose(again.stats.mu, reference.stats.mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(again.stats.sigma, reference.stats.sigma, rtol=0, atol=1e-12)


def test_rows_cached_without_logits_are_recomputed_when_logits_are_needed(tmp_path):
    images = [_image(seed) for seed in range(4)]
    _write_folder(tmp_path / "imgs", images)
    cache = str(tmp_path / "cache")
    ext = FeatureExtractor("efficientnet-lite0", progress=False, cache=cache, workers=0)
    without = ext.extract(str(tmp_path / "imgs"))
    assert without.cached == 0 and without.logits is None
    with_logits = ext.extract(str(tmp_path / "imgs"), keep_logits=True)
    assert with_logits.cached == 0 and with_logits.logits.shape == (4, 1000)
    np.testing.assert_allclose(with_logits.features, without.features, rtol=1e-5, atol=1e-6)
    again = ext.extract(str(tmp_path / "imgs"), keep_logits=True)
    assert again.cached == 4
    np.testing.assert_array_equal(again.logits, with_logits.logits)


def test_one_decode_feeds_several_networks(folder, tmp_path, monkeypatch):
    """Two networks with different resize recipes from one decode: each image is read once, and
    each network's features equal its own extraction's; an image one network has cached is decoded
    only for the other."""
    from imgdist.extraction.features import FeatureExtractor
    from imgdist.extraction.together import Job, extract_together
    from imgdist.extraction.sources import FileSource

    loads = []
    original = FileSource.load
    monkeypatch.setattr(FileSource, "load", lambda self, i: loads.append(i) or original(self, i))
    cache = str(tmp_path / "cache")
    native = FeatureExtractor("pixels", mode="native", progress=False, workers=0, cache=cache)
    small = FeatureExtractor("pixels", mode="antialias", progress=False, workers=0, batch_size=3)
    alone = [ex.extract(str(folder)) for ex in (native, small)]
    loads.clear()
    together = extract_together(str(folder), [Job(native), Job(small)])
    assert sorted(loads) == list(range(10))  # one decode per image, though only 'small' computed anything
    assert together[0].cached == 10 and together[1].cached == 0
    for one, both in zip(alone, together):
        np.testing.assert_array_equal(one.features, both.features)
        assert one.names == both.names and one.stats.n == both.stats.n == 10
    loads.clear()
    uncached = FeatureExtractor("pixels", mode="native", progress=False, workers=0)
    both = extract_together(str(folder), [Job(uncached), Job(small, keep_features=False)])
    assert sorted(loads) == list(range(10)) and both[0].cached == 0 and both[1].features is None
    np.testing.assert_array_equal(both[0].features, alone[0].features)
    np.testing.assert_allclose(both[1].stats.mu, together[1].stats.mu, rtol=1e-12)
