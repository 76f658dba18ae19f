"""Precision/recall/density/coverage against a brute-force full-matrix implementation."""

import importlib

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from imgdist.metrics import PRDC, density_coverage, knn_radii, prdc, precision_recall


def _brute(real, fake, k):
    """Full distance matrices, sorted rows: the definitions of Kynkäänniemi/Naeem et al."""
    rr = np.sort(cdist(real, real), axis=1)[:, k]  # index 0 is the sample itself
    ff = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(real, fake)
    return {
        "precision": np.mean([any(d[i, j] < rr[i] for i in range(len(real))) for j in range(len(fake))]),
        "recall": np.mean([any(d[i, j] < ff[j] for j in range(len(fake))) for i in range(len(real))]),
        "density": np.sum(d < rr[:, None]) / (k * len(fake)),
        "coverage": np.mean(d.min(axis=1) < rr),
    }


def _sets(seed, n_real=83, n_fake=71, d=6):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_real, d)), 0.8 * rng.standard_normal((n_fake, d)) + 0.4


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 50, 1000])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force(k, chunk_size):
    real, fake = _sets(k)
    got = prdc(real, fake, k=k, chunk_size=chunk_size)
    ref = _brute(real, fake, k)
    for name, value in ref.items():
        assert getattr(got, name) == pytest.approx(value, rel=1e-12, abs=0), name
    assert got.k == k


def test_ties_and_duplicates_like_prdc():
    # small integers: many exact duplicates, distances exact in float64
    rng = np.random.default_rng(10)
    real = rng.integers(0, 3, (60, 4)).astype(float)
    fake = rng.integers(0, 3, (50, 4)).astype(float)
    fake[:10] = real[:10]
    for k in (1, 3, 5):
        got = prdc(real, fake, k=k, chunk_size=9)
        ref = _brute(real, fake, k)
        for name, value in ref.items():
            assert getattr(got, name) == pytest.approx(value, rel=1e-12, abs=0), (k, name)


def test_pairs_match_combined():
    real, fake = _sets(20)
    p, r = precision_recall(real, fake, k=3, chunk_size=11)
    d, c = density_coverage(real, fake, k=5, chunk_size=11)
    three, five = prdc(real, fake, k=3), prdc(real, fake, k=5)
    assert (p, r) == (three.precision, three.recall)
    assert (d, c) == (five.density, five.coverage)
    assert isinstance(five, PRDC)


def test_knn_radii_exclude_self():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_allclose(knn_radii(x, 1, chunk_size=1), [1.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(knn_radii(x, 2), [3.0, 2.0, 3.0, 6.0])


def test_identical_sets():
    real, _ = _sets(30)
    got = prdc(real, real, k=5)
    assert got.precision == 1.0 and got.recall == 1.0 and got.coverage == 1.0
    assert got.density == pytest.approx(1.0, rel=0.3)


def test_far_apart_sets():
    real, fake = _sets(31)
    got = prdc(real, fake + 100.0, k=3)
    assert (got.precision, got.recall, got.density, got.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_chunked_memory_does_not_need_n_squared(monkeypatch):
    # every distance block has at most chunk_size rows
    # the package re-exports the function prdc under the module's name
    mod = importlib.import_module("imgdist.metrics.prdc")

    shapes = []
    orig = mod.distance_blocks

    def spy(a, b, chunk_size=None, same=False, **kwargs):
        for start, d in orig(a, b, chunk_size, same=same, **kwargs):
            shapes.append(d.shape)
            yield start, d

    monkeypatch.setattr(mod, "distance_blocks", spy)
    real, fake = _sets(40, 200, 150)
    prdc(real, fake, k=3, chunk_size=16)
    assert shapes and max(s[0] for s in shapes) == 16


def test_errors():
    """imgdist's own messages: numpy raises ValueErrors of its own on these inputs (kth out of
    bounds, a matmul shape mismatch), so only the message shows that the check is there."""
    real, fake = _sets(50, 5, 5)
    with pytest.raises(ValueError, match=r"^k = 5 needs more than 5 samples, got 5$"):
        prdc(real, fake, k=5)  # k must be below the set size
    with pytest.raises(ValueError, match=r"^feature dimensions differ: 6 vs 3$"):
        prdc(real, fake[:, :3], k=2)
    with pytest.raises(ValueError, match=r"^k must be >= 1, got 0$"):
        prdc(real, fake, k=0)


def _count_passes(monkeypatch):
    mod = importlib.import_module("imgdist.metrics.prdc")
    passes = []
    orig = mod.distance_blocks

    def spy(a, b, chunk_size=None, same=False, **kwargs):
        passes.append((len(a), len(b), same))
        yield from orig(a, b, chunk_size, same=same, **kwargs)

    monkeypatch.setattr(mod, "distance_blocks", spy)
    return passes


@pytest.mark.parametrize("chunk_size", [None, 9])
def test_two_k_in_three_passes(monkeypatch, chunk_size):
    """Precision/recall with k = 3 and density/coverage with k = 5 (the papers' choices): the real
    radii of both k come from one real x real pass."""
    real, fake = _sets(11)
    passes = _count_passes(monkeypatch)
    got = prdc(real, fake, k=5, pr_k=3, chunk_size=chunk_size)
    assert sorted(passes) == sorted([(83, 83, True), (71, 71, True), (83, 71, False)])
    pr, dc = _brute(real, fake, 3), _brute(real, fake, 5)
    assert (got.precision, got.recall) == (pytest.approx(pr["precision"], abs=0), pytest.approx(pr["recall"], abs=0))
    assert (got.density, got.coverage) == (pytest.approx(dc["density"], rel=1e-12), pytest.approx(dc["coverage"], abs=0))
    assert (got.k, got.pr_k) == (5, 3)
    passes.clear()
    alone = prdc(real, fake, k=5, precision_recall=False, chunk_size=chunk_size)
    assert sorted(passes) == sorted([(83, 83, True), (83, 71, False)])  # no fake x fake pass
    assert (alone.density, alone.coverage) == (got.density, got.coverage) and np.isnan(alone.precision)


def test_evaluate_shares_the_passes_between_the_four_metrics(monkeypatch):
    from imgdist.evaluation.run import evaluate_features
    from imgdist.extraction.features import Features

    real, fake = _sets(12)
    passes = _count_passes(monkeypatch)
    result = evaluate_features(Features.from_array(real), Features.from_array(fake), metrics="prdc")
    assert len(passes) == 3
    pr, dc = _brute(real, fake, 3), _brute(real, fake, 5)
    assert result.values["precision"] == pr["precision"] and result.values["coverage"] == dc["coverage"]
    passes.clear()
    only = evaluate_features(Features.from_array(real), Features.from_array(fake), metrics="coverage")
    assert len(passes) == 2 and set(only.values) == {"coverage"}
