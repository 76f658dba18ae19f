"""Authenticity, copies, k-means and C_T against straightforward O(N^2) float64 recomputations,
and C_T's behaviour on Fashion-MNIST (Meehan et al. 2020: copying < 0, independent ~ 0, underfit > 0)."""

import gzip
import struct

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import mannwhitneyu

from imgdist.metrics import (
    authenticity,
    copies,
    ct_score,
    kmeans,
    nearest_real,
    real_neighbours,
    realism,
)
from imgdist.pairs.perturbations import add_noise
from needs import require_fashion_mnist, require_module


def _sets(seed, n_real=70, n_fake=45, d=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_real, d)), 0.9 * rng.standard_normal((n_fake, d)) + 0.2


def _int_sets(seed):
    # small integers: exact distances in float64, many ties and duplicates
    rng = np.random.default_rng(seed)
    real = rng.integers(0, 3, (50, 3)).astype(float)
    fake = rng.integers(0, 3, (40, 3)).astype(float)
    fake[:8] = real[:8]
    return real, fake


# ---------------------------------------------------------------- neighbours, authenticity, copies

def _brute_authenticity(real, fake):
    """Alaa et al. per fake: d(fake, x*) > d(x*, nearest other real), x* = the fake's nearest real."""
    rr = cdist(real, real)
    np.fill_diagonal(rr, np.inf)
    own = rr.min(axis=1)
    d = cdist(fake, real)
    flags = []
    for j in range(len(fake)):
        i = int(np.argmin(d[j]))  # first index on ties
        flags.append(d[j, i] > own[i])
    return np.mean(flags), np.array(flags)


@pytest.mark.parametrize("chunk_size", [None, 1, 9])
@pytest.mark.parametrize("make", [_sets, _int_sets])
def test_authenticity_matches_brute_force(make, chunk_size):
    real, fake = make(3)
    got = authenticity(real, fake, chunk_size=chunk_size)
    value, flags = _brute_authenticity(real, fake)
    assert got.value == value
    np.testing.assert_array_equal(got.authentic, flags)
    d = cdist(fake, real)
    np.testing.assert_array_equal(got.nearest_real, d.argmin(axis=1))
    np.testing.assert_allclose(got.distance, d.min(axis=1), rtol=1e-12, atol=1e-12)


def test_authenticity_closed_forms():
    real, _ = _sets(4)
    assert authenticity(real, real).value == 0.0          # exact copies: distance 0
    assert authenticity(real, real + 1e-6).value == 0.0   # near copies
    # 1-D: reals 0, 1, 10 (own nearest distances 1, 1, 9). Fake 0.4: closer to 0 than 1 is ->
    # unauthentic; 5.6: nearest 10 at 4.4 < 9 -> unauthentic; 19.5: 9.5 > 9 -> authentic; 0.5 ties
    # reals 0 and 1 (the lower index, 0: 0.5 < 1 -> unauthentic); 2.0 is at distance 1 from real 1,
    # a tie with that real's own nearest distance -> unauthentic; 19.0 ties too (9 vs 9)
    got = authenticity(np.array([[0.0], [1.0], [10.0]]),
                       np.array([[0.4], [5.6], [19.5], [0.5], [2.0], [19.0]]))
    assert got.authentic.tolist() == [False, False, True, False, False, False]
    assert got.nearest_real.tolist() == [0, 2, 2, 0, 1, 2]
    assert got.value == 1 / 6


def test_real_neighbours_and_nearest_real():
    real, fake = _int_sets(5)
    nb = real_neighbours(real, k=3, chunk_size=7)
    rr = cdist(real, real)
    np.fill_diagonal(rr, np.inf)
    np.testing.assert_array_equal(nb.nn_index, rr.argmin(axis=1))
    np.testing.assert_allclose(nb.nn_distance, rr.min(axis=1), atol=1e-12)
    np.testing.assert_allclose(nb.radii, np.sort(rr, axis=1)[:, 2], atol=1e-12)
    index, dist = nearest_real(real, fake, chunk_size=4)
    np.testing.assert_array_equal(index, cdist(fake, real).argmin(axis=1))


@pytest.mark.parametrize("percentile", [1.0, 10.0, 50.0])
def test_copies_match_brute_force(percentile):
    real, fake = _sets(6, n_real=120, n_fake=80)
    fake[:5] = real[10:15] + 1e-3  # five near copies
    got = copies(real, fake, percentile=percentile, chunk_size=11)
    rr = cdist(real, real)
    np.fill_diagonal(rr, np.inf)
    threshold = np.percentile(rr.min(axis=1), percentile)
    d = cdist(fake, real)
    expected = [j for j in range(len(fake)) if d[j].min() <= threshold]
    assert got.threshold == pytest.approx(threshold, rel=1e-12)
    assert sorted(got.fake_index.tolist()) == expected
    assert np.all(np.diff(got.distance) >= 0)  # closest first
    np.testing.assert_array_equal(got.real_index, d[got.fake_index].argmin(axis=1))
    assert got.count == len(expected) and got.fraction == len(expected) / 80
    planted = got.fake_index < 5
    assert planted.sum() == 5
    np.testing.assert_array_equal(got.real_index[planted], got.fake_index[planted] + 10)


def test_copies_threshold_zero_still_catches_exact_copies():
    real = np.repeat(np.arange(20.0)[:, None], 2, axis=0)  # every real has a duplicate: threshold 0
    got = copies(real, np.array([[3.0], [3.5]]))
    assert got.threshold == 0.0 and got.fake_index.tolist() == [0]


def test_reusing_neighbour_passes_gives_the_same():
    real, fake = _sets(8)
    nb = real_neighbours(real, k=3)
    r = realism(real, fake, k=3, real_radii=nb.radii)
    near = (r.nearest_real, r.distance)
    a1, a2 = authenticity(real, fake), authenticity(real, fake, real_nn=nb, fake_nearest=near)
    c1, c2 = copies(real, fake, 20), copies(real, fake, 20, real_nn=nb, fake_nearest=near)
    np.testing.assert_array_equal(a1.authentic, a2.authentic)
    np.testing.assert_array_equal(c1.fake_index, c2.fake_index)
    with pytest.raises(ValueError, match="one index and one distance per fake"):
        authenticity(real, fake, fake_nearest=(near[0][:-1], near[1][:-1]))


def test_memorization_bad_input():
    real, fake = _sets(9)
    with pytest.raises(ValueError, match="feature dimensions differ: real 5, fake 3"):
        authenticity(real, fake[:, :3])
    with pytest.raises(ValueError, match="fake holds no samples"):
        copies(real, fake[:0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        authenticity(real[:1], fake)
    with pytest.raises(ValueError, match="percentile"):
        copies(real, fake, percentile=-1)
    with pytest.raises(ValueError, match="real contains NaN"):
        authenticity(np.full_like(real, np.nan), fake)


# ---------------------------------------------------------------- k-means

def _blobs(seed, k=4, per=30, d=3):
    rng = np.random.default_rng(seed)
    centres = 20.0 * rng.standard_normal((k, d))
    labels = np.repeat(np.arange(k), per)
    return centres[labels] + rng.standard_normal((k * per, d)), labels


def test_kmeans_is_a_lloyd_fixed_point():
    x = np.random.default_rng(10).standard_normal((200, 4))
    centres, labels = kmeans(x, 6, seed=1, chunk_size=17)
    np.testing.assert_array_equal(labels, cdist(x, centres).argmin(axis=1))
    for c in range(6):
        np.testing.assert_allclose(centres[c], x[labels == c].mean(axis=0), rtol=1e-12, atol=1e-12)


def test_kmeans_finds_separated_blobs_like_scikit_learn():
    sklearn_cluster = require_module("sklearn.cluster")
    x, truth = _blobs(11)
    _, labels = kmeans(x, 4, seed=0)
    ref = sklearn_cluster.KMeans(4, n_init=10, random_state=0).fit(x).labels_
    # the same partition up to renaming: each found cell is exactly one true blob
    for found in (labels, ref):
        pairs = set(zip(found.tolist(), truth.tolist()))
        assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4


def test_kmeans_deterministic_and_chunk_invariant():
    x = np.random.default_rng(12).standard_normal((150, 3))
    a = kmeans(x, 5, seed=3)
    b = kmeans(x, 5, seed=3, chunk_size=7)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)


def test_kmeans_with_duplicates_and_k_equal_n():
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 10, axis=0)
    centres, labels = kmeans(x, 3, seed=0)  # more cells than distinct points: no crash, no NaN
    assert np.all(np.isfinite(centres))
    np.testing.assert_array_equal(labels, cdist(x, centres).argmin(axis=1))
    with pytest.raises(ValueError, match="1 <= k <= 20"):
        kmeans(x, 21)


# ---------------------------------------------------------------- C_T

def _brute_ct(train, test, fake, centres, min_fake):
    """Meehan et al.'s C_T written out: cells = nearest centre; per cell, distances to the nearest
    training point of the same cell; U from scipy; Z with the authors' 0.5; test-share weights."""
    cell = lambda a: cdist(a, centres).argmin(axis=1)  # noqa: E731
    ct_, cp, cq = cell(train), cell(test), cell(fake)
    num = den = 0.0
    for c in range(len(centres)):
        tc, pc, qc = train[ct_ == c], test[cp == c], fake[cq == c]
        if len(qc) < min_fake or len(pc) == 0:
            continue
        lq, lp = cdist(qc, tc).min(axis=1), cdist(pc, tc).min(axis=1)
        m, n = len(lq), len(lp)
        u = mannwhitneyu(lq, lp, alternative="less").statistic  # U of the generated sample
        z = (u - (m * n / 2 - 0.5)) / np.sqrt(m * n * (m + n + 1) / 12)
        num += (n / len(test)) * z
        den += n / len(test)
    return num / den


@pytest.mark.parametrize("min_fake", [1, 10, 25])
def test_ct_matches_brute_force(min_fake):
    rng = np.random.default_rng(13)
    train = rng.standard_normal((300, 4))
    test = rng.standard_normal((150, 4))
    fake = np.concatenate([train[:60] + 0.05 * rng.standard_normal((60, 4)),  # some copying
                           1.3 * rng.standard_normal((90, 4))])               # some underfitting
    centres, _ = kmeans(train, 5, seed=2)
    got = ct_score(train, test, fake, centres=centres, min_fake_per_cell=min_fake, chunk_size=16)
    assert got.value == pytest.approx(_brute_ct(train, test, fake, centres, min_fake), rel=1e-10)
    # the k-means route (the default) is the same computation on its own cells
    again = ct_score(train, test, fake, n_cells=5, seed=2, min_fake_per_cell=min_fake)
    assert again.value == pytest.approx(got.value, rel=1e-12)
    assert got.train_count.sum() == 300 and got.test_count.sum() == 150 and got.fake_count.sum() == 150


def test_ct_ties_count_half():
    # integer features: many equal nearest-training distances between test and generated samples
    rng = np.random.default_rng(14)
    train = rng.integers(0, 4, (80, 2)).astype(float)
    test = rng.integers(0, 5, (60, 2)).astype(float)
    fake = rng.integers(0, 5, (70, 2)).astype(float)
    centres = np.array([[0.0, 0.0], [3.0, 3.0]])
    got = ct_score(train, test, fake, centres=centres, min_fake_per_cell=1)
    assert got.value == pytest.approx(_brute_ct(train, test, fake, centres, 1), rel=1e-10)


def test_ct_refuses_when_no_cell_qualifies():
    rng = np.random.default_rng(15)
    train, test, fake = rng.standard_normal((100, 3)), rng.standard_normal((50, 3)), rng.standard_normal((30, 3))
    with pytest.raises(ValueError, match="no cell holds 21 generated samples"):
        ct_score(train, test, fake, n_cells=5)
    with pytest.raises(ValueError, match="n_cells must be within 1..100"):
        ct_score(train, test, fake, n_cells=101)
    with pytest.raises(ValueError, match="feature dimensions differ: train 3, test 2, fake 3"):
        ct_score(train, test[:, :2], fake)


# ---------------------------------------------------------------- C_T on Fashion-MNIST

def _idx(name):
    with gzip.open(require_fashion_mnist(name), "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def fashion():
    """Pixel-space features (28 x 28 = 784 values on 0..255) of disjoint train / held-out subsets."""
    rng = np.random.default_rng(0)
    train = _idx("train-images-idx3-ubyte.gz")
    test = _idx("t10k-images-idx3-ubyte.gz")
    train = train[rng.permutation(len(train))[:1500]]
    test = test[rng.permutation(len(test))[:1000]]
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32)  # noqa: E731
    return {
        "train": flat(train),
        "held_out": flat(test[:500]),
        "independent": flat(test[500:]),
        # the paper's data-copying: training samples returned with a small variation
        "near_copies": flat(add_noise(train[:500], 8, seed=1)),
        # the paper's underfitting (a KDE with a large bandwidth): training samples moved far away.
        # Not blur: in pixel space a blurred set lies *closer* to the training set than fresh samples
        # (C_T -4.6 / -3.7 / -3.2 at radius 1 / 1.5 / 2 here); blur reads as underfitting in a
        # network's features, which benchmarks/bench_diversity.py checks (C_T > 0 required there)
        "underfit": flat(add_noise(train[500:1000], 80, seed=2)),
    }


def test_ct_behaviour_on_fashion_mnist(fashion, one_thread):
    t, p = fashion["train"], fashion["held_out"]
    ct = {name: ct_score(t, p, fashion[name], n_cells=5).value
          for name in ("near_copies", "independent", "underfit")}
    assert ct["near_copies"] < -5, ct        # strongly negative: copying
    assert abs(ct["independent"]) < 2, ct    # a fresh sample: no evidence either way
    assert ct["underfit"] > 2, ct            # farther from the training set than fresh samples
    auth = {name: authenticity(t, fashion[name]).value for name in ("near_copies", "independent")}
    assert auth["near_copies"] == 0.0 and auth["independent"] > 0.5, auth
    found = copies(t, fashion["near_copies"])
    assert found.fraction > 0.9 and copies(t, fashion["independent"]).fraction < 0.05
