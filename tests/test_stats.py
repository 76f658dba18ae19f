"""GaussianStats: streaming moments, exact merges, files readable by other tools, provenance checks.

Reference values come from numpy (``np.mean`` / ``np.cov``) on all rows at once and from the
metrics module's own ``frechet_distance``; files are inspected with plain ``np.load``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from imgdist import metrics
from imgdist.errors import ImgdistError, ProvenanceError, SourceError
from imgdist.extraction.provenance import Provenance
from imgdist.extraction.stats import GaussianStats, is_stats_file

PROV = Provenance(backbone="pixels", weights_sha256=None, resize_mode="antialias",
                  preprocessing="antialias (antialias-bilinear to 32, (x-0.0)/255.0)", feature_layer="pool")


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(n=200, d=6, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ a + 3.0 + shift  # correlated, non-zero mean


def _stats_of(x, provenance=PROV):
    return GaussianStats(provenance=provenance).update(x)


def test_update_in_batches_matches_numpy():
    x = _rows(203, 7)
    stats = GaussianStats(provenance=PROV)
    for start, stop in ((0, 1), (1, 50), (50, 51), (51, 130), (130, 203)):
        stats.update(x[start:stop].astype(np.float64))
    stats.update(np.empty((0, 7)))  # an empty batch changes nothing
    assert stats.n == 203 and stats.dim == 7
    np.testing.assert_allclose(stats.mu, np.mean(x, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False, ddof=1), rtol=1e-12, atol=1e-12)
    assert np.array_equal(stats.sigma, stats.sigma.T)


def test_update_accepts_torch_and_float32_in_float64():
    x = _rows(40, 5).astype(np.float32)
    stats = GaussianStats().update(torch.from_numpy(x[:17])).update(x[17:])
    ref = x.astype(np.float64)
    np.testing.assert_allclose(stats.mu, ref.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(ref, rowvar=False), rtol=1e-12, atol=1e-12)


def test_update_rejects_wrong_shapes():
    stats = GaussianStats().update(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        stats.update(np.zeros((3, 5)))
    with pytest.raises(ValueError):
        stats.update(np.zeros(4))


def test_merge_of_halves_equals_whole():
    x = _rows(301, 6, seed=3)
    whole = _stats_of(x)
    a, b = _stats_of(x[:120]), _stats_of(x[120:])
    merged = a.merge(b)
    assert merged is a and merged.n == 301
    np.testing.assert_allclose(merged.mu, whole.mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged.sigma, whole.sigma, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-12)


def test_merge_into_empty_and_of_empty():
    x = _rows(50, 4)
    empty = GaussianStats(provenance=PROV)
    empty.merge(_stats_of(x))
    np.testing.assert_allclose(empty.sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-12)
    full = _stats_of(x)
    full.merge(GaussianStats(provenance=PROV))
    assert full.n == 50


def test_merge_refuses_other_provenance():
    other = Provenance(backbone="efficientnet-lite0", resize_mode="clean", feature_layer="pool")
    with pytest.raises(ProvenanceError):
        _stats_of(_rows(10, 3)).merge(_stats_of(_rows(10, 3), other))


def test_save_load_round_trip(tmp_path):
    x = _rows(80, 5)
    stats = _stats_of(x)
    path = tmp_path / "ref.npz"
    stats.save(path)
    assert is_stats_file(path)
    loaded = GaussianStats.load(path)
    assert loaded.n == 80
    assert loaded.provenance == stats.provenance
    assert loaded.provenance.backbone == "pixels" and loaded.provenance.weights_sha256 is None
    np.testing.assert_allclose(loaded.mu, stats.mu, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(loaded.sigma, stats.sigma, rtol=1e-12, atol=1e-12)
    # rebuilt from n, the loaded statistics merge like the originals
    loaded.merge(_stats_of(x))
    np.testing.assert_allclose(loaded.sigma, np.cov(np.vstack([x, x]), rowvar=False), rtol=1e-10, atol=1e-10)
    assert not list(tmp_path.glob("*.part*"))  # no leftover temporary file


def test_saved_file_is_readable_like_pytorch_fid(tmp_path):
    x = _rows(60, 4)
    stats = _stats_of(x)
    path = tmp_path / "ours.npz"
    stats.save(path)
    with np.load(path) as data:  # what pytorch-fid's compute_statistics_of_path does
        mu, sigma = data["mu"][:], data["sigma"][:]
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-12)


def test_foreign_npz_with_only_mu_sigma(tmp_path):
    x, y = _rows(100, 5, seed=1), _rows(100, 5, seed=2, shift=0.5)
    path = tmp_path / "pytorch_fid.npz"
    np.savez(path, mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False))
    assert is_stats_file(path)
    foreign = GaussianStats.load(path)
    assert foreign.n == 0
    assert not foreign.provenance.known
    assert foreign.dim == 5
    with pytest.warns(UserWarning, match="without provenance"):
        value = foreign.frechet_distance(_stats_of(y))
    expected = metrics.frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert value == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ImgdistError):
        foreign.update(y)  # no sums to add to


def test_is_stats_file_negatives(tmp_path):
    np.savez(tmp_path / "images.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    (tmp_path / "folder.npz").mkdir()
    assert not is_stats_file(tmp_path / "images.npz")
    assert not is_stats_file(tmp_path / "missing.npz")
    assert not is_stats_file(tmp_path / "folder.npz")  # the image sources report folders
    assert not is_stats_file(np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match=r"junk\.npz: not a \.npz archive"):
        is_stats_file(tmp_path / "junk.npz")  # unreadable either way: said once, naming the file


@pytest.mark.parametrize("field,value", [("backbone", "efficientnet-lite0"), ("resize_mode", "native")])
def test_mismatched_provenance_raises_unless_forced(field, value):
    other = Provenance(**{**PROV.to_dict(), field: value})
    a, b = _stats_of(_rows(50, 4, seed=1)), _stats_of(_rows(50, 4, seed=2), other)
    with pytest.raises(ProvenanceError, match=field):
        a.frechet_distance(b)
    with pytest.warns(UserWarning, match="forced"):
        forced = a.frechet_distance(b, force=True)
    assert forced == pytest.approx(metrics.frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rel=1e-12)


def test_version_alone_is_not_a_mismatch():
    other = Provenance(**{**PROV.to_dict(), "imgdist_version": "0.0.1"})
    a, b = _stats_of(_rows(50, 4, seed=1)), _stats_of(_rows(50, 4, seed=2), other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert a.frechet_distance(b) > 0


def test_one_sample_has_no_covariance():
    stats = _stats_of(_rows(1, 4))
    np.testing.assert_allclose(stats.mu, _rows(1, 4)[0])
    with pytest.raises(ImgdistError, match="covariance needs at least 2"):
        stats.sigma
    with pytest.raises(ImgdistError, match="covariance needs at least 2"), pytest.warns(UserWarning):
        stats.frechet_distance(_stats_of(_rows(10, 4)))
    with pytest.raises(ImgdistError, match="empty"):
        GaussianStats().mu


def test_fewer_samples_than_dimensions_warns_and_stays_finite():
    a, b = _stats_of(_rows(8, 20, seed=1)), _stats_of(_rows(8, 20, seed=2, shift=0.3))
    with pytest.warns(UserWarning, match="8 images for 20 feature dimensions"):
        value = a.frechet_distance(b)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(metrics.fid_from_features(_rows(8, 20, seed=1), _rows(8, 20, seed=2, shift=0.3)),
                                  rel=1e-8)
    with pytest.warns(UserWarning):
        assert a.frechet_distance(a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_equals_metrics_function():
    x, y = _rows(150, 6, seed=5), _rows(120, 6, seed=6, shift=0.7)
    a, b = _stats_of(x), _stats_of(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same provenance, N > d: no warning at all
        value = a.frechet_distance(b)
    assert value == metrics.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert value == pytest.approx(metrics.fid_from_features(x, y), rel=1e-10)
    assert value == pytest.approx(b.frechet_distance(a), rel=1e-10)
    assert value > 0.1


def test_dimension_mismatch():
    with pytest.raises(ImgdistError, match="dimensions differ"):
        _stats_of(_rows(20, 3)).frechet_distance(_stats_of(_rows(20, 4)))


def test_from_moments_with_n_merges():
    x = _rows(70, 4)
    rebuilt = GaussianStats.from_moments(x[:30].mean(0), np.cov(x[:30], rowvar=False), n=30, provenance=PROV)
    rebuilt.merge(_stats_of(x[30:]))
    np.testing.assert_allclose(rebuilt.mu, x.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rebuilt.sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ large common offsets

def _grid_rows(n, d, seed, shift=0.0):
    """Rows on a 2^-10 grid: adding 1e6 is exact in float64, so shifted rows carry exactly the same
    information, and every statistic but the mean (and the Fréchet distance) must be unchanged."""
    return np.round(_rows(n, d, seed, shift) * 1024) / 1024


def _batched(x, offset, batch=50):
    stats = GaussianStats(provenance=PROV)
    for start in range(0, len(x), batch):
        stats.update(x[start:start + batch] + offset)
    return stats


def test_offset_of_1e6_costs_no_digits_in_batches_of_50():
    # the one-pass sum x x^T - n mu mu^T was off by ~1e-3 here (1e12-sized sums, 1e0 variances)
    x, y = _grid_rows(600, 10, 1), _grid_rows(500, 10, 2, shift=0.4)
    plain = _batched(x, 0.0).frechet_distance(_batched(y, 0.0))
    shifted_x, shifted_y = _batched(x, 1e6), _batched(y, 1e6)
    assert shifted_x.frechet_distance(shifted_y) == pytest.approx(plain, rel=1e-6)
    np.testing.assert_allclose(shifted_x.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shifted_x.mu - 1e6, x.mean(axis=0), rtol=0, atol=1e-9)


def test_merge_under_offset_equals_whole():
    x = _grid_rows(333, 7, 3) + 1e6
    parts = [_batched(x[a:b], 0.0, batch=17) for a, b in ((0, 1), (1, 100), (100, 333))]
    merged = GaussianStats(provenance=PROV)
    for part in parts:
        merged.merge(part)
    assert merged.n == 333
    np.testing.assert_allclose(merged.sigma, np.cov(x - 1e6, rowvar=False), rtol=1e-9, atol=1e-9)
    n, mean, scatter = merged.state
    rebuilt = GaussianStats.from_state(n, mean, scatter, PROV)
    np.testing.assert_array_equal(rebuilt.sigma, merged.sigma)


class _OffsetFeatures(torch.nn.Module):
    """The first 12 normalised pixels on a 1/16 grid, plus ``offset``: float32 holds 1e6 + k/16
    exactly, so the network's features differ by the offset alone."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return torch.round(x.flatten(1)[:, :12] * 16) / 16 + self.offset


def test_offset_of_1e6_through_evaluate():
    import imgdist

    rng = np.random.default_rng(6)
    real = rng.integers(0, 256, (120, 4, 4, 3), dtype=np.uint8)  # 120 images > 12 dimensions:
    fake = np.clip(real[::-1].astype(int) + rng.integers(-40, 60, real.shape), 0, 255).astype(np.uint8)

    def fid(offset):  # ... so FID comes from the streamed statistics (batches of 50, 50, 20)
        backbone = imgdist.custom_backbone(_OffsetFeatures(offset), input_size=4, mean=0.5, std=0.25)
        return imgdist.evaluate(real, fake, metrics="fid", backbone=backbone, progress=False).values["fid"]

    plain = fid(0.0)
    assert plain > 0.1
    assert fid(1e6) == pytest.approx(plain, rel=1e-6)
