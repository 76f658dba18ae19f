"""KID: the unbiased MMD^2 estimator against a direct double loop, subsets, warnings, seeding."""

import warnings

import numpy as np
import pytest

from imgdist.metrics import kid, kid_full, mmd2_unbiased, polynomial_kernel


def _loop_mmd2(x, y, degree=3, coef0=1.0):
    """Direct float64 double loops over pairs, written from the estimator's definition."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + coef0) ** degree

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_full_estimator_matches_double_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5))
    y = rng.standard_normal((9, 5)) + 0.3
    assert kid_full(x, y) == pytest.approx(_loop_mmd2(x, y), rel=1e-12, abs=1e-14)


def test_other_kernel_parameters():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)) * 2
    got = kid_full(x, y, degree=2, coef0=0.5)
    assert got == pytest.approx(_loop_mmd2(x, y, degree=2, coef0=0.5), rel=1e-12)
    kxx = polynomial_kernel(x, x, degree=2, gamma=0.7, coef0=0.0)
    np.testing.assert_allclose(kxx, (0.7 * x @ x.T) ** 2, rtol=1e-12)


def test_mmd2_unbiased_from_kernel_matrices():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((5, 3))
    kxx, kyy, kxy = (polynomial_kernel(a, b) for a, b in ((x, x), (y, y), (x, y)))
    assert mmd2_unbiased(kxx, kyy, kxy) == pytest.approx(_loop_mmd2(x, y), rel=1e-12)
    with pytest.raises(ValueError):
        mmd2_unbiased(kxx, kyy, kxy.T)


def test_subsets_of_full_size_equal_the_full_estimator():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 6)) + 0.5
    mean, std = kid(x, y, subsets=5, subset_size=40)
    assert mean == pytest.approx(kid_full(x, y), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_same_distribution_near_zero_shift_positive():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    mean0, std0 = kid(x, y, subsets=20, subset_size=200)
    assert abs(mean0) < 3 * std0 + 1e-3
    mean1, _ = kid(x, y + 0.5, subsets=20, subset_size=200)
    assert mean1 > 10 * abs(mean0) and mean1 > 0


def test_small_sets_reduce_subset_size_with_warning():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((30, 4))
    with pytest.warns(UserWarning, match="subsets of 30"):
        mean, std = kid(x, y, subsets=4, subset_size=1000)
    assert np.isfinite(mean) and np.isfinite(std)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kid(x, y, subsets=2, subset_size=30)  # no warning when it fits


def test_seeded_reproducible():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((100, 8)), rng.standard_normal((120, 8)) + 0.2
    a = kid(x, y, subsets=10, subset_size=50, seed=7)
    assert kid(x, y, subsets=10, subset_size=50, seed=7) == a
    assert kid(x, y, subsets=10, subset_size=50, seed=8) != a


def test_input_errors():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError):
        kid(x, np.zeros((10, 4)))
    with pytest.raises(ValueError):
        kid(x, x, subsets=0)
    with pytest.raises(ValueError):
        kid_full(np.zeros(5), x)
