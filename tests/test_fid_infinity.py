"""FID-infinity: the 1/N fit, and extrapolation on Gaussians with known true FID."""

import numpy as np
import pytest

from imgdist.metrics import FIDInfinity, fid_infinity, frechet_distance
from imgdist.metrics.fid_infinity import default_sizes, fit_inverse_n


def test_fit_recovers_exact_line():
    sizes = np.array([5000, 10000, 20000, 35000, 50000])
    fids = 1234.5 / sizes + 7.25
    value, slope, r2, rms = fit_inverse_n(sizes, fids)
    assert value == pytest.approx(7.25, rel=1e-12)
    assert slope == pytest.approx(1234.5, rel=1e-9)
    assert r2 == pytest.approx(1.0, abs=1e-12) and rms < 1e-12


def test_fit_with_noise_is_least_squares():
    rng = np.random.default_rng(0)
    sizes = np.linspace(100, 1000, 15)
    fids = 50.0 / sizes + 3.0 + 0.001 * rng.standard_normal(15)
    value, slope, r2, _ = fit_inverse_n(sizes, fids)
    ref_slope, ref_value = np.polyfit(1.0 / sizes, fids, 1)
    assert (value, slope) == pytest.approx((ref_value, ref_slope), rel=1e-9)
    assert 0.0 < r2 <= 1.0


def test_default_sizes():
    s = default_sizes(50000)
    assert len(s) == 15 and s[0] == 5000 and s[-1] == 50000  # the paper's grid
    s = default_sizes(100)
    assert s[0] == 20 and s[-1] == 100 and np.all(np.diff(s) > 0)
    assert list(default_sizes(10)) == list(range(2, 11))


def test_recovers_true_fid_of_shifted_gaussian():
    # fake ~ N(delta, I), real statistics exact N(0, I): true FID = |delta|^2 = 2
    rng = np.random.default_rng(1)
    d = 8
    delta = np.full(d, 0.5)
    fake = rng.standard_normal((5000, d)) + delta
    res = fid_infinity((np.zeros(d), np.eye(d)), fake, seed=0, trials=2)
    assert isinstance(res, FIDInfinity)
    assert res.value == pytest.approx(2.0, abs=0.1)
    assert len(res.sizes) == len(res.fids) == 15


def test_same_distribution_extrapolates_to_zero_with_positive_slope():
    rng = np.random.default_rng(2)
    d = 8
    fake = rng.standard_normal((5000, d))
    res = fid_infinity((np.zeros(d), np.eye(d)), fake, seed=0, trials=3)
    assert abs(res.value) < 0.005 < res.fids[0]  # the bias at N=1000 is ~0.025
    assert 15 < res.slope < 40  # first-order bias of FID for N(0, I_8): about (d + d(d+1)/4) / N
    assert res.r2 > 0.8


def test_features_or_statistics_and_seeding():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((800, 5))
    fake = rng.standard_normal((600, 5)) + 0.3
    mu, sigma = real.mean(0), np.cov(real, rowvar=False)
    a = fid_infinity(real, fake, sizes=[200, 400, 600], seed=4)
    b = fid_infinity((mu, sigma), fake, sizes=[200, 400, 600], seed=4)
    assert a.value == pytest.approx(b.value, rel=1e-10)
    np.testing.assert_array_equal(a.sizes, [200, 400, 600])
    # the full-size point is the plain FID
    assert a.fids[-1] == pytest.approx(frechet_distance(mu, sigma, fake.mean(0), np.cov(fake, rowvar=False)))
    assert fid_infinity(real, fake, seed=4).value == fid_infinity(real, fake, seed=4).value
    assert fid_infinity(real, fake, seed=4).value != fid_infinity(real, fake, seed=5).value


def test_errors():
    real, fake = np.zeros((10, 3)), np.ones((10, 3))
    with pytest.raises(ValueError):
        fid_infinity(real, fake, sizes=[5])
    with pytest.raises(ValueError):
        fid_infinity(real, fake, sizes=[5, 20])
    with pytest.raises(ValueError):
        fid_infinity(real, np.ones((10, 4)))
