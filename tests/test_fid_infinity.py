"""FID-infinity: the 1/N fit, and extrapolation on Gaussians with known true FID."""

import importlib

import numpy as np
import pytest

from imgdist.metrics import FIDInfinity, fid_infinity, frechet_distance
from imgdist.metrics.fid_infinity import default_sizes, fit_inverse_n
from needs import require_module


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


def test_evaluate_reports_the_intercept_of_the_fit():
    """The evaluation route stores fid_infinity's intercept and its fit, not one of the fitted points
    (the last, FID at the full size, is another number: issue 25's mutation went unnoticed)."""
    from imgdist.evaluation.run import evaluate_features
    from imgdist.extraction.features import Features

    rng = np.random.default_rng(8)
    real = rng.standard_normal((300, 6)).astype(np.float32)  # what Features keeps: no rounding between
    fake = (1.2 * rng.standard_normal((240, 6)) + 0.3).astype(np.float32)
    sizes = (60, 120, 180, 240)
    result = evaluate_features(Features.from_array(real), Features.from_array(fake), metrics="fid-inf",
                               fid_inf_sizes=sizes, seed=3)
    fit = fid_infinity(real, fake, sizes=sizes, seed=3, progress=False)
    assert abs(fit.value - fit.fids[-1]) > 0.01 * fit.value  # the test can tell them apart
    assert result.values["fid-inf"] == pytest.approx(fit.value, rel=1e-12)
    details = result.details["fid_inf_fit"]
    assert (details["slope"], details["r2"]) == pytest.approx((fit.slope, fit.r2), rel=1e-12)
    np.testing.assert_array_equal(details["sizes"], sizes)
    np.testing.assert_allclose(details["fids"], fit.fids, rtol=1e-12)


def test_errors():
    real, fake = np.zeros((10, 3)), np.ones((10, 3))
    with pytest.raises(ValueError):
        fid_infinity(real, fake, sizes=[5])
    with pytest.raises(ValueError):
        fid_infinity(real, fake, sizes=[5, 20])
    with pytest.raises(ValueError):
        fid_infinity(real, np.ones((10, 4)))


# ------------------------------------------------------------------ routes, exactness, cost

def _slow_route(real, fake, sizes, trials=1, seed=0):
    """The previous implementation: mean and covariance of each subset, then a d x d Fréchet
    distance (same subsets: choice(n, size) per trial from default_rng(seed); all rows at size n)."""
    mu_r, s_r = real if isinstance(real, tuple) else (real.mean(0), np.cov(real, rowvar=False))
    rng = np.random.default_rng(seed)
    out = []
    for size in sizes:
        vals = []
        for _ in range(trials):
            sub = fake[rng.choice(len(fake), int(size), replace=False)] if size < len(fake) else fake
            vals.append(frechet_distance(mu_r, s_r, sub.mean(0), np.cov(sub, rowvar=False)))
        out.append(np.mean(vals))
    return np.array(out)


def _exact_fid(real, sub):
    """50-digit Fréchet distance of two feature sets (eigenvalues of S1 S2 in mpmath)."""
    mpmath = require_module("mpmath")
    mpmath.mp.dps = 50

    def stats(z):
        m = mpmath.matrix(z.tolist())
        n, d = z.shape
        mu = [mpmath.fsum(m[i, j] for i in range(n)) / n for j in range(d)]
        c = mpmath.matrix(d, d)
        for j in range(d):
            for k in range(j, d):
                c[j, k] = c[k, j] = mpmath.fsum((m[i, j] - mu[j]) * (m[i, k] - mu[k]) for i in range(n)) / (n - 1)
        return mu, c

    mu1, c1 = stats(real)
    mu2, c2 = stats(sub)
    d = real.shape[1]
    ev = mpmath.eig(c1 * c2, left=False, right=False)
    tr = mpmath.fsum(mpmath.sqrt(max(mpmath.re(e), 0)) for e in ev)
    return float(mpmath.fsum((a - b) ** 2 for a, b in zip(mu1, mu2)) + sum(c1[i, i] + c2[i, i] for i in range(d))
                 - 2 * tr)


def _correlated(n, d, seed, shift):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + shift


@pytest.mark.parametrize("n_real", [60, 9])  # real covariance full rank / singular (N <= d)
def test_every_point_matches_the_slow_route_or_exact_arithmetic(n_real):
    d = 8
    real = _correlated(n_real, d, 1, 1.0)
    fake = _correlated(30, d, 2, 1.2)
    sizes = [5, 8, 12, 20, 30]  # N <= d: nuclear-norm route; N > d: one d x d eigenvalue problem
    res = fid_infinity(real, fake, sizes=sizes, trials=2, seed=7, progress=False)
    slow = _slow_route(real, fake, sizes, trials=2, seed=7)
    for size, got, old in zip(sizes, res.fids, slow):
        if size > d and n_real > d:
            assert got == pytest.approx(old, rel=1e-9)  # both full rank: the slow route is accurate
        else:
            # a singular covariance costs the slow route ~sqrt(eps) on its zero eigenvalues
            assert got == pytest.approx(old, rel=1e-6)
    # the rank-deficient points against 50-digit arithmetic on the same subsets (trial 1 of size 5)
    draws = np.random.default_rng(7)
    first = fake[draws.choice(30, 5, replace=False)]
    second = fake[draws.choice(30, 5, replace=False)]
    exact = 0.5 * (_exact_fid(real, first) + _exact_fid(real, second))
    assert res.fids[0] == pytest.approx(exact, rel=1e-10)


def test_real_features_and_statistics_agree_when_singular():
    # (mu, sigma) of 9 samples in 16 dimensions: the factor comes from an eigendecomposition
    real = _correlated(9, 16, 3, 0.5)
    fake = _correlated(40, 16, 4, 0.7)
    a = fid_infinity(real, fake, sizes=[10, 25, 40], seed=1, progress=False)
    b = fid_infinity((real.mean(0), np.cov(real, rowvar=False)), fake, sizes=[10, 25, 40], seed=1, progress=False)
    np.testing.assert_allclose(a.fids, b.fids, rtol=1e-7)


def test_progress_bar_only_when_slow(capsys, monkeypatch):
    real, fake = _correlated(50, 4, 5, 0.0), _correlated(50, 4, 6, 0.3)
    fid_infinity(real, fake, sizes=[10, 50], progress=True)
    assert capsys.readouterr().err == ""  # quicker than the bar's delay: nothing shown
    def no_delay(*args, **kwargs):
        return module_tqdm(*args, **{**kwargs, "delay": 0.0})

    import tqdm.auto  # imported where the bar is made: the metric module stays light for --help

    module_tqdm = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", no_delay)
    fid_infinity(real, fake, sizes=[10, 50], progress=True)
    err = capsys.readouterr().err
    assert "FID-infinity" in err and "/3 " in err  # the real side, then one step per subset
    fid_infinity(real, fake, sizes=[10, 50], progress=False)
    assert capsys.readouterr().err == ""


def test_memory_stays_in_blocks(monkeypatch):
    # float32 features are never copied whole in float64: only blocks of rows and d x d matrices
    import tracemalloc

    frechet = importlib.import_module("imgdist.metrics.frechet")
    monkeypatch.setattr(frechet, "_BLOCK_ELEMENTS", 1 << 15)
    rng = np.random.default_rng(8)
    real = rng.standard_normal((20000, 64), dtype=np.float32)
    fake = rng.standard_normal((20000, 64), dtype=np.float32)
    float64_copy = real.size * 8
    tracemalloc.start()
    fid_infinity(real, fake, sizes=[5000, 20000], progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.25 * float64_copy


def test_argument_errors():
    real, fake = np.zeros((10, 3)), np.ones((10, 3))
    for kwargs, name in (({"sizes": [2.5, 5]}, "sizes"), ({"sizes": "5,10"}, "sizes"), ({"trials": 0}, "trials"),
                         ({"seed": -3}, "seed")):
        with pytest.raises(ValueError, match=f"^{name} must"):
            fid_infinity(real, fake, progress=False, **kwargs)
    with pytest.raises(ValueError, match="feats_real must be features"):
        fid_infinity((np.zeros(3), np.eye(3), 5), fake)
    with pytest.raises(ValueError, match="feats_fake contains NaN"):
        fid_infinity(real + np.arange(10)[:, None], np.full((10, 3), np.nan), sizes=[5, 10], progress=False)
    with pytest.raises(ValueError, match="sigma_real contains NaN"):
        fid_infinity((np.zeros(3), np.full((3, 3), np.nan)), fake, progress=False)
