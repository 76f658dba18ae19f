"""Fréchet distance: closed forms, a float64 sqrtm reference, rank-deficient covariances."""

import numpy as np
import pytest
import scipy.linalg

from imgdist.metrics import fid_from_features, frechet_distance, mean_cov, trace_sqrt_product
from needs import require_module


def _rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _random_spd(d, rng, n=None):
    n = n or 2 * d
    x = rng.standard_normal((n, d)) * rng.uniform(0.2, 2.0, d)
    return x.T @ x / n


def test_one_dimensional_closed_form():
    # N(m1, v1) vs N(m2, v2): (m1-m2)^2 + (sqrt v1 - sqrt v2)^2
    got = frechet_distance([1.5], [[4.0]], [-0.5], [[9.0]])
    assert got == pytest.approx(2.0**2 + (2.0 - 3.0) ** 2, rel=1e-14)


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    d = 50
    a, b = rng.uniform(0.1, 5.0, d), rng.uniform(0.1, 5.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_rotated_commuting_closed_form():
    # S_i = R D_i R^T commute, so sqrt(S1 S2) = R sqrt(D1 D2) R^T
    rng = np.random.default_rng(2)
    d = 80
    rot = _rotation(d, rng)
    a, b = rng.uniform(0.01, 10.0, d), rng.uniform(0.01, 10.0, d)
    s1, s2 = (rot * a) @ rot.T, (rot * b) @ rot.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a) + np.sum(b) - 2 * np.sum(np.sqrt(a * b))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.sum(np.sqrt(a * b)), rel=1e-10)


def test_identical_gaussians_give_zero():
    rng = np.random.default_rng(3)
    s = _random_spd(40, rng)
    mu = rng.standard_normal(40)
    got = frechet_distance(mu, s, mu, s)
    assert 0.0 <= got < 1e-9 * np.trace(s)


@pytest.mark.parametrize("n,seed", [(10, 0), (100, 2), (200, 0)])
def test_identical_gaussians_give_exactly_zero(n, seed):
    # the eigenvalue route alone leaves rounding here (2.3e-13 for N = 100 and 200 at these seeds):
    # identical inputs are 0, as identical images are
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 64)) * 3.0 + 5.0
    mu, s = x.mean(axis=0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, s, mu.copy(), s.copy()) == 0.0


def _sqrtm_reference(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def test_matches_sqrtm_reference_d512():
    rng = np.random.default_rng(4)
    d = 512
    s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
    mu1, mu2 = rng.standard_normal(d) * 0.1, rng.standard_normal(d) * 0.1
    ref = _sqrtm_reference(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


@pytest.mark.slow
def test_matches_sqrtm_reference_d2048():
    rng = np.random.default_rng(5)
    d = 2048
    s1, s2 = _random_spd(d, rng, n=3000), _random_spd(d, rng, n=3000)
    mu1, mu2 = rng.standard_normal(d) * 0.1, rng.standard_normal(d) * 0.1
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _sqrtm_reference(mu1, s1, mu2, s2)  # ~12 s on an idle 2-core machine
    assert ours == pytest.approx(ref, rel=1e-6)


def _svd_trace_sqrt(x1, x2):
    # S_i = A_i A_i^T with A_i = centred X_i^T / sqrt(n-1): tr sqrt(S1 S2) = nuclear norm of A1^T A2
    a1 = (x1 - x1.mean(0)).T / np.sqrt(len(x1) - 1)
    a2 = (x2 - x2.mean(0)).T / np.sqrt(len(x2) - 1)
    return np.linalg.svd(a1.T @ a2, compute_uv=False).sum()


@pytest.mark.parametrize("n1,n2", [(20, 300), (300, 25), (30, 40), (64, 64)])
def test_rank_deficient_covariances(n1, n2):
    # n < d: singular covariances (one or both); also exercises the eigh fallback
    rng = np.random.default_rng(n1 * 1000 + n2)
    d = 128
    x1 = rng.standard_normal((n1, d))
    x2 = rng.standard_normal((n2, d)) * 1.3 + 0.2
    mu1, s1 = mean_cov(x1)
    mu2, s2 = mean_cov(x2)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float) and np.isfinite(got) and got >= 0.0
    ref_tr = _svd_trace_sqrt(x1, x2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(ref_tr, rel=1e-6)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * ref_tr
    assert got == pytest.approx(expected, rel=1e-6)


def test_constant_feature_and_zero_covariance():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 10))
    x[:, 3] = 1.0  # a constant feature: singular covariance
    y = rng.standard_normal((60, 10))
    got = fid_from_features(x, y)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * _svd_trace_sqrt(x, y)
    assert got == pytest.approx(expected, rel=1e-10)
    zero = np.zeros((10, 10))
    assert frechet_distance(np.zeros(10), zero, np.ones(10), zero) == pytest.approx(10.0)


def test_singular_fallback_clips_negative_eigenvalues_to_zero():
    """Neither covariance has a Cholesky factor (S2 has a zero row, S1 an eigenvalue of -1e-7, inside
    the accepted rounding), so sqrt(S1) comes from eigh. Its negative eigenvalue must count as 0,
    not as |-1e-7|: S2's variance 1e6 along that direction would make the latter add
    sqrt(1e-7 * 1e6) = 0.32 to tr sqrt(S1 S2). Both commute (one rotation R of coordinates 1..3), so
    tr sqrt(S1 S2) = sum sqrt(a_i b_i) over the eigenvalue pairs, the negative one taken as 0."""
    rng = np.random.default_rng(17)
    rot = _rotation(3, rng)
    a, b = np.array([1.0, 0.5, -1e-7]), np.array([3.0, 0.25, 1e6])
    s1, s2 = np.zeros((4, 4)), np.zeros((4, 4))
    s1[0, 0] = 2.0  # S2's zero variance there
    s1[1:, 1:], s2[1:, 1:] = (rot * a) @ rot.T, (rot * b) @ rot.T
    s1, s2 = 0.5 * (s1 + s1.T), 0.5 * (s2 + s2.T)
    for s in (s1, s2):
        with pytest.raises(np.linalg.LinAlgError):
            scipy.linalg.cholesky(s, lower=True)
    trace = np.sqrt(3.0) + np.sqrt(0.125)
    # 1e-6: the square roots of the zero eigenvalues' rounding (~1e-16 of 3) add ~1e-8 each
    assert trace_sqrt_product(s1, s2) == pytest.approx(trace, abs=1e-6)
    assert trace_sqrt_product(s2, s1) == pytest.approx(trace, abs=1e-6)
    expected = np.trace(s1) + np.trace(s2) - 2.0 * trace
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(expected, abs=1e-6)


def test_symmetric_and_accepts_asymmetric_rounding():
    rng = np.random.default_rng(7)
    s1, s2 = _random_spd(30, rng), _random_spd(30, rng)
    mu1, mu2 = rng.standard_normal(30), rng.standard_normal(30)
    a = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(a, rel=1e-10)
    noisy = s1 + 1e-12 * rng.standard_normal(s1.shape)  # not exactly symmetric
    assert frechet_distance(mu1, noisy, mu2, s2) == pytest.approx(a, rel=1e-9)


def test_float32_inputs_are_promoted():
    rng = np.random.default_rng(8)
    s1, s2 = _random_spd(16, rng), _random_spd(16, rng)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    ref = frechet_distance(mu1, s1, mu2, s2)
    got = frechet_distance(*(a.astype(np.float32) for a in (mu1, s1, mu2, s2)))
    assert got == pytest.approx(ref, rel=1e-5)


def test_mean_cov_matches_numpy():
    x = np.random.default_rng(9).standard_normal((100, 7))
    mu, s = mean_cov(x)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(s, np.cov(x, rowvar=False), rtol=1e-12)


def test_shape_errors():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)[:2])
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("n1,n2,d", [(40, 30, 100), (120, 90, 64), (50, 200, 128)])
def test_fid_from_features_low_rank_route_matches_covariance_route(n1, n2, d):
    # N < d takes the nuclear-norm route; it must equal the covariance route on the same data
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d)) * 0.1
    y = rng.normal(0.3, 1.0, size=(n2, d))
    mu1, s1 = mean_cov(x)
    mu2, s2 = mean_cov(y)
    value = fid_from_features(x, y)
    # the covariance route loses ~sqrt(eps) on the near-zero eigenvalues of singular covariances
    assert value == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6)


def test_fid_from_features_low_rank_route_against_50_digit_reference():
    # rank-deficient covariances: float64 eigen-routes lose ~sqrt(eps) on the zero eigenvalues;
    # 50-digit arithmetic gives the exact value to compare the nuclear-norm route with
    mpmath = require_module("mpmath")
    mpmath.mp.dps = 50
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 16))
    y = rng.normal(0.5, 2.0, size=(7, 16))

    def cov(z):
        m = mpmath.matrix(z.tolist())
        n, d = z.shape
        mu = [mpmath.fsum(m[i, j] for i in range(n)) / n for j in range(d)]
        c = mpmath.matrix(d, d)
        for j in range(d):
            for k in range(d):
                c[j, k] = mpmath.fsum((m[i, j] - mu[j]) * (m[i, k] - mu[k]) for i in range(n)) / (n - 1)
        return mu, c

    mu1, c1 = cov(x)
    mu2, c2 = cov(y)
    eigenvalues = mpmath.eig(c1 * c2, left=False, right=False)
    trace_sqrt = mpmath.fsum(mpmath.sqrt(max(mpmath.re(e), 0)) for e in eigenvalues)
    exact = (mpmath.fsum((a - b) ** 2 for a, b in zip(mu1, mu2))
             + sum(c1[i, i] for i in range(16)) + sum(c2[i, i] for i in range(16)) - 2 * trace_sqrt)
    assert fid_from_features(x, y) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("operand", ["mu1", "sigma1", "mu2", "sigma2"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_operand(operand, bad):
    # NaN used to flow through to a nan result (the docstring promises a finite number)
    rng = np.random.default_rng(10)
    args = {"mu1": rng.standard_normal(4), "sigma1": _random_spd(4, rng),
            "mu2": rng.standard_normal(4), "sigma2": _random_spd(4, rng)}
    args[operand] = args[operand].copy()
    args[operand][(0, 0) if operand.startswith("sigma") else 1] = bad
    with pytest.raises(ValueError, match=f"^{operand} contains NaN or infinity"):
        frechet_distance(**args)


def test_asymmetric_covariance_is_an_error_not_symmetrised():
    rng = np.random.default_rng(11)
    s1, s2 = _random_spd(6, rng), _random_spd(6, rng)
    mu = np.zeros(6)
    edited = s2.copy()
    edited[0, 1] += 0.5  # a changed entry, not rounding: symmetrising would silently halve the edit
    with pytest.raises(ValueError, match=r"^sigma2 is not symmetric"):
        frechet_distance(mu, s1, mu, edited)
    with pytest.raises(ValueError, match=r"^sigma1 is not symmetric"):
        trace_sqrt_product(edited, s1)
    # rounding-level asymmetry (float32 sums reach ~1e-7 of the largest entry) is averaged away
    nudged = s2.copy()
    nudged[0, 1] += 1e-7 * np.abs(s2).max()
    assert frechet_distance(mu, s1, mu, nudged) == pytest.approx(
        frechet_distance(mu, s1, mu, 0.5 * (nudged + nudged.T)), rel=1e-14)


def test_fid_from_features_rejects_non_finite_features():
    x = np.random.default_rng(12).standard_normal((20, 5))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="^feats_fake contains NaN"):
        fid_from_features(x, bad)
    with pytest.raises(ValueError, match="^feats_real contains NaN"):
        fid_from_features(bad[:4], x[:4])  # the N < d route checks too


def test_mean_cov_is_exact_under_a_large_offset():
    # multiples of 2^-10 plus 1e6 are exact in float64: the covariance must not notice the offset
    x = np.round(np.random.default_rng(13).standard_normal((300, 5)) * 1024) / 1024
    mu, s = mean_cov(x + 1e6)
    np.testing.assert_allclose(s, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mu - 1e6, x.mean(0), rtol=0, atol=1e-9)
    rows = np.array([5, 0, 17, 17, 200])  # a subset, repeats allowed
    np.testing.assert_allclose(mean_cov(x, rows)[1], np.cov(x[rows], rowvar=False), rtol=1e-12, atol=1e-12)


def test_the_api_refuses_what_a_statistics_file_may_not_hold():
    """Issue 18: frechet_distance(0, -I, 0, I) returned 0.0; the API checks what statistics files are
    checked for (one validator, metrics._arrays.covariance_defect), with the same PSD tolerance."""
    from imgdist.extraction.stats import PSD_RTOL

    eye = np.eye(3)
    with pytest.raises(ValueError, match=r"sigma1 is not positive semi-definite \(smallest eigenvalue -1"):
        frechet_distance(np.zeros(3), -eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        trace_sqrt_product(eye, -eye)
    # eigenvalues (10, 1, lam): just inside the tolerance passes, just outside is refused
    for lam, ok in ((-0.5 * PSD_RTOL * 10, True), (-2 * PSD_RTOL * 10, False)):
        s = np.diag([10.0, 1.0, lam])
        if ok:
            # the accepted negative eigenvalue counts as 0 in tr sqrt(S I) = sqrt 10 + 1 + 0 (as |lam|
            # it would add sqrt(5e-6) = 2.2e-3)
            expected = 3.0 + (11.0 + lam) + 3.0 - 2.0 * (np.sqrt(10.0) + 1.0)
            assert frechet_distance(np.zeros(3), s, np.ones(3), eye) == pytest.approx(expected, rel=1e-12)
        else:
            with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
                frechet_distance(np.zeros(3), s, np.ones(3), eye)


def _complex_calls():
    import imgdist.metrics as M

    rng = np.random.default_rng(0)
    mu, eye = np.zeros(3), np.eye(3)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 3))
    return {
        "frechet mu1": lambda: M.frechet_distance(mu + 5j, eye, mu, eye),
        "frechet mu2": lambda: M.frechet_distance(mu, eye, mu + 5j, eye),
        "frechet sigma1": lambda: M.frechet_distance(mu, eye + 0j, mu, eye),
        "frechet sigma2": lambda: M.frechet_distance(mu, eye, mu, eye * (1 + 1j)),
        "frechet python complex": lambda: M.frechet_distance(np.array([5j, 0, 0], dtype=object), eye, mu, eye),
        "trace_sqrt_product": lambda: M.trace_sqrt_product(eye + 1j, eye),
        "fid_from_features": lambda: M.fid_from_features(x + 1j, y),
        "mean_cov": lambda: M.mean_cov(x * 1j),
        "kid": lambda: M.kid(x + 1j, y, subset_size=5, subsets=2),
        "polynomial_kernel": lambda: M.polynomial_kernel(x + 1j, y),
        "mmd2_unbiased": lambda: M.mmd2_unbiased(eye + 1j, eye, eye),
        "inception_score": lambda: M.inception_score(x + 1j, splits=2),
        "fid_bootstrap_ci": lambda: M.fid_bootstrap_ci(x + 1j, y, n_boot=2),
        "prdc": lambda: M.prdc(x + 1j, y, k=2),
    }


@pytest.mark.parametrize("call", sorted(_complex_calls()))
def test_complex_input_is_refused_not_stripped_of_its_imaginary_part(call):
    """Issue 23, item 12: at 0c5d37c ``frechet_distance(mu + 5j, I, mu, I)`` returned 0.0 (numpy drops
    the imaginary part converting to float64, with a ComplexWarning); the right value would be 75.
    Every entry point refuses complex numbers, as the statistics reader does."""
    with pytest.raises(ValueError, match=r"complex|real"):
        _complex_calls()[call]()
