"""KID: the unbiased MMD^2 estimator against a direct double loop and exact rational arithmetic
(large common offsets included), subsets, full-set shortcut, warnings, seeding, argument checks."""

import warnings
from fractions import Fraction

import numpy as np
import pytest

from imgdist.errors import ImgdistWarning
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: every subset would be the whole set
        mean, std = kid(x, y, subsets=5, subset_size=40)
    assert mean == pytest.approx(_loop_mmd2(x, y), rel=1e-12)
    assert std is None  # no spread over identical subsets (it used to print rounding noise, 2e-16)


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
    # only the fake set is smaller than the subsets: subsets of 30, with a warning
    with pytest.warns(ImgdistWarning, match="subsets of 30"):
        mean, std = kid(x, y, subsets=4, subset_size=40)
    assert np.isfinite(mean) and std > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kid(x, y, subsets=2, subset_size=30)  # no warning when it fits
        # both sets smaller than the subsets: the full sets once (unequal sizes), no spread
        mean, std = kid(x, y, subsets=4, subset_size=1000)
    assert mean == pytest.approx(_loop_mmd2(x, y), rel=1e-12) and std is None


def test_seeded_reproducible():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((100, 8)), rng.standard_normal((120, 8)) + 0.2
    a = kid(x, y, subsets=10, subset_size=50, seed=7)
    assert kid(x, y, subsets=10, subset_size=50, seed=7) == a
    assert kid(x, y, subsets=10, subset_size=50, seed=8) != a


def test_input_errors():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        kid(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="feats_real must be a 2-D array"):
        kid_full(np.zeros(5), x)
    with pytest.raises(ValueError, match="feats_fake contains NaN"):
        kid(x, np.full((10, 3), np.nan))
    for kwargs, name in (({"subsets": 0}, "subsets"), ({"subsets": 2.5}, "subsets"), ({"subsets": "3"}, "subsets"),
                         ({"subset_size": 1}, "subset_size"), ({"subset_size": True}, "subset_size"),
                         ({"degree": 0}, "degree"), ({"degree": 2.5}, "degree"), ({"gamma": np.nan}, "gamma"),
                         ({"coef0": "1"}, "coef0"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed")):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            kid(x, x + 1, **kwargs)


# ------------------------------------------------------------------ exact rational reference

def _exact_mmd2(x, y, degree=3, gamma=None, coef0=1.0):
    """The unbiased estimator in rational arithmetic on the exact values of the float inputs."""
    d = x.shape[1]
    g = Fraction(1, d) if gamma is None else Fraction(gamma)
    c0 = Fraction(coef0)
    xs = [[Fraction(v) for v in row] for row in x]
    ys = [[Fraction(v) for v in row] for row in y]

    def k(a, b):
        return (g * sum(p * q for p, q in zip(a, b)) + c0) ** degree

    m, n = len(xs), len(ys)
    sxx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(ys[i], ys[j]) for i in range(n) for j in range(n) if i != j)
    sxy = sum(k(a, b) for a in xs for b in ys)
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("kernel", [{}, {"degree": 2, "gamma": 0.7, "coef0": 0.5}, {"degree": 4}])
def test_full_estimator_against_exact_arithmetic(offset, kernel):
    # KID is not shift-invariant: the offset changes the true value (to ~1e23 for the default
    # kernel), and the plain kernel sums (~1e36) cancel to it; the centred sums must not lose it
    rng = np.random.default_rng(11)
    x = rng.standard_normal((12, 5)) + offset
    y = rng.normal(0.3, 1.2, (10, 5)) + offset
    exact = _exact_mmd2(x, y, **kernel)
    assert kid_full(x, y, **kernel) == pytest.approx(float(exact), rel=1e-9)


def test_subsets_against_exact_arithmetic_with_offset():
    # kid() draws choice(n_real, size) then choice(n_fake, size) per subset from default_rng(seed)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((12, 5)) + 1e6
    y = rng.normal(0.2, 1.0, (13, 5)) + 1e6
    draws = np.random.default_rng(3)
    exact = []
    for _ in range(3):
        ix, iy = draws.choice(12, 8, replace=False), draws.choice(13, 8, replace=False)
        exact.append(float(_exact_mmd2(x[ix], y[iy])))
    mean, std = kid(x, y, subsets=3, subset_size=8, seed=3)
    assert mean == pytest.approx(np.mean(exact), rel=1e-9)
    assert std == pytest.approx(np.std(exact), rel=1e-9)


def test_plain_kernel_sums_lose_the_offset_case():
    # the reason for the centred sums: the direct kernel matrices are off by ~1e-4 relative here
    rng = np.random.default_rng(11)
    x = rng.standard_normal((12, 5)) + 1e6
    y = rng.normal(0.3, 1.2, (10, 5)) + 1e6
    exact = float(_exact_mmd2(x, y))
    direct = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    assert abs(direct / exact - 1) > 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_left_as_they_were(dtype):
    """KID centres float64 copies in place (1.6 GB less at 50k x 2048); the caller's arrays stay."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(5, 1, (60, 8)).astype(dtype), rng.normal(5, 1, (50, 8)).astype(dtype)
    x0, y0 = x.copy(), y.copy()
    value, _ = kid(x, y, subsets=3, subset_size=20)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    assert value == kid(x0.astype(np.float64), y0.astype(np.float64), subsets=3, subset_size=20)[0]
    assert kid(x, x, subsets=2, subset_size=20)[0] == kid(x0, x0.copy(), subsets=2, subset_size=20)[0]
