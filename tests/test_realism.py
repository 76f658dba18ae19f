"""Realism score (Kynkäänniemi et al. 2019, eq. 3) against a full-matrix float64 recomputation."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from imgdist.metrics import precision_recall, real_neighbours, realism


def _brute(real, fake, k, percentile):
    """Eq. 3 written out: all distances, reals with radius above the percentile left out."""
    radii = np.sort(cdist(real, real), axis=1)[:, k]  # column 0 is the sample itself
    kept = radii <= np.percentile(radii, percentile)
    d = cdist(fake, real)
    score = np.array([max(radii[i] / d[j, i] for i in range(len(real)) if kept[i]) for j in range(len(fake))])
    inside = np.array([any(d[j, i] < radii[i] for i in range(len(real))) for j in range(len(fake))])
    return score, d.argmin(axis=1), d.min(axis=1), inside


@pytest.mark.parametrize("chunk_size", [None, 1, 13])
@pytest.mark.parametrize("k, percentile", [(3, 50.0), (1, 100.0), (5, 25.0)])
def test_matches_brute_force(k, percentile, chunk_size):
    rng = np.random.default_rng(k)
    real = rng.standard_normal((90, 5))
    fake = 1.2 * rng.standard_normal((40, 5)) + 0.3
    got = realism(real, fake, k=k, prune_percentile=percentile, chunk_size=chunk_size)
    score, nearest, dist, inside = _brute(real, fake, k, percentile)
    np.testing.assert_allclose(got.realism, score, rtol=1e-10)
    np.testing.assert_array_equal(got.nearest_real, nearest)
    np.testing.assert_allclose(got.distance, dist, rtol=1e-10)
    np.testing.assert_array_equal(got.inside, inside)
    assert got.k == k and got.prune_percentile == percentile


def test_inside_is_precision():
    rng = np.random.default_rng(7)
    real, fake = rng.standard_normal((120, 4)), rng.standard_normal((80, 4)) + 0.5
    precision, _ = precision_recall(real, fake, k=3)
    assert realism(real, fake, k=3).inside.mean() == precision


def test_pruning_closed_form():
    # 1-D, k = 1: a tight cluster (radii 1) and two outliers (radii 10); the median radius is 1,
    # so the outliers are pruned from the score but still count for the precision test
    real = np.array([[0.0], [1.0], [2.0], [3.0], [100.0], [110.0]])
    fake = np.array([[105.0], [1.5]])
    got = realism(real, fake, k=1)
    assert got.radius_threshold == 1.0
    assert got.realism[0] == pytest.approx(1.0 / 102.0, rel=1e-14)  # nearest kept real: 3, radius 1
    assert got.realism[1] == pytest.approx(1.0 / 0.5, rel=1e-14)
    assert got.nearest_real[0] == 4  # 100 and 110 tie at 5: the lower index
    assert got.distance[0] == 5.0
    assert got.inside.tolist() == [True, True]  # 5 < 10: inside an outlier's ball
    unpruned = realism(real, fake, k=1, prune_percentile=100)
    assert unpruned.realism[0] == pytest.approx(10.0 / 5.0, rel=1e-14)


def test_exact_copy_is_infinitely_real():
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    got = realism(real, real[[4, 0]], k=2)
    assert np.isinf(got.realism).all()
    assert got.distance.tolist() == [0.0, 0.0]


def test_zero_radius_real_contributes_nothing():
    # three copies of one real (k = 2: radius 0) and two others; a fake on the copies: 0/0 -> 0
    real = np.array([[0.0], [0.0], [0.0], [4.0], [6.0]])
    got = realism(real, np.array([[0.0]]), k=2, prune_percentile=100)
    radii = np.sort(cdist(real, real), axis=1)[:, 2]
    assert got.realism[0] == pytest.approx(max(radii[3] / 4.0, radii[4] / 6.0))
    assert not got.inside[0]  # strictly inside no ball: the copies' radius is 0


def test_given_radii_skip_the_pass():
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((60, 3)), rng.standard_normal((30, 3))
    nb = real_neighbours(real, k=3)
    a = realism(real, fake, k=3, real_radii=nb.radii)
    b = realism(real, fake, k=3)
    np.testing.assert_array_equal(a.realism, b.realism)
    with pytest.raises(ValueError, match="one radius per real"):
        realism(real, fake, real_radii=nb.radii[:-1])


def test_bad_input():
    real = np.zeros((10, 3))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        realism(real, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="fake holds no samples"):
        realism(real, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="fake contains NaN"):
        realism(real, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="prune_percentile"):
        realism(real, real, prune_percentile=150)
    with pytest.raises(ValueError, match="k = 10 needs more than 10"):
        realism(real, real, k=10)
