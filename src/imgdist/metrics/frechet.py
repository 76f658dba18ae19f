"""Fréchet distance between two Gaussians (the distance behind FID).

Paper: M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter, "GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017 (FID), using the
closed form of D. C. Dowson and B. V. Landau, "The Fréchet distance between multivariate normal
distributions", J. Multivariate Analysis 12 (1982):

    d^2 = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)

How the trace term is computed
------------------------------
``S1 S2`` is not symmetric, but it is similar to a symmetric positive semi-definite matrix: with
the Cholesky factor ``S1 = L L^T``, ``S1 S2 = L (L^T S2 L) L^{-1}``, so the eigenvalues of
``S1 S2`` are those of ``M = L^T S2 L`` -- real and non-negative. ``tr sqrt(S1 S2)`` is therefore
the sum of the square roots of the eigenvalues of ``M``, which ``eigvalsh`` gives without
eigenvectors: one Cholesky, two matrix products and one symmetric eigenvalue solve, all in
float64 (about 0.7 s at d = 2048 on two idle cores, against ~12 s for ``scipy.linalg.sqrtm``, whose
output can also turn complex on near-singular input).

When neither covariance is positive definite (fewer samples than dimensions, constant features),
Cholesky fails and the symmetric square root ``R = sqrt(S1)`` is built from ``eigh`` with negative
eigenvalues clamped to zero; ``R S2 R`` has the same non-zero eigenvalues as ``S1 S2``. No jitter
is added to the matrices (it would bias the distance). Eigenvalues that round to small negative
numbers are clamped to zero, so the result is always a finite real number; the total is clamped at
zero too, since rounding can leave ``-1e-13`` for identical inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["fid_from_features", "frechet_distance", "mean_cov", "trace_sqrt_product"]


def _as_cov(sigma: np.ndarray, name: str) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 0:
        s = s.reshape(1, 1)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or infinity")
    return 0.5 * (s + s.T)


def _sqrt_eigvals_sum(m: np.ndarray) -> float:
    """Sum of sqrt of the eigenvalues of the symmetric PSD matrix ``m`` (negatives clamped)."""
    m = 0.5 * (m + m.T)
    w = scipy.linalg.eigvalsh(m, check_finite=False)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def _cholesky(s: np.ndarray) -> np.ndarray | None:
    try:
        return scipy.linalg.cholesky(s, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(S1 S2)`` for symmetric positive semi-definite ``S1``, ``S2`` (float64).

    Uses whichever covariance has a Cholesky factor ``L`` (eigenvalues of ``L^T S L``); if neither
    has one, the eigendecomposition of ``S1`` gives ``sqrt(S1)`` and the eigenvalues of
    ``sqrt(S1) S2 sqrt(S1)`` are used.
    """
    s1 = _as_cov(sigma1, "sigma1")
    s2 = _as_cov(sigma2, "sigma2")
    if s1.shape != s2.shape:
        raise ValueError(f"covariance shapes differ: {s1.shape} vs {s2.shape}")
    return _trace_sqrt(s1, s2)


def _trace_sqrt(s1: np.ndarray, s2: np.ndarray) -> float:
    for a, b in ((s1, s2), (s2, s1)):
        chol = _cholesky(a)
        if chol is not None and np.all(np.isfinite(chol)):
            return _sqrt_eigvals_sum(chol.T @ (b @ chol))
    # Both singular: symmetric square root of S1 from its eigendecomposition.
    w, v = scipy.linalg.eigh(s1, check_finite=False)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return _sqrt_eigvals_sum(root @ s2 @ root)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    Inputs are converted to float64 and the covariances symmetrised. Returns a finite,
    non-negative float, also for rank-deficient covariances (N < d).
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"means must be vectors of the same length, got {m1.shape} and {m2.shape}")
    s1 = _as_cov(sigma1, "sigma1")
    s2 = _as_cov(sigma2, "sigma2")
    if s1.shape != (m1.size, m1.size) or s2.shape != s1.shape:
        raise ValueError(
            f"covariance shapes {s1.shape}, {s2.shape} do not match mean length {m1.size}"
        )
    diff = m1 - m2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt(s1, s2)
    return float(max(value, 0.0))


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``ddof=1``, like ``np.cov``) of the rows of ``features``.

    float64 throughout; the covariance is ``(X - mu)^T (X - mu) / (N - 1)``, one symmetric product.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be a 2-D array with at least 2 rows, got shape {x.shape}")
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = xc.T @ xc
    sigma /= x.shape[0] - 1
    return mu, sigma


def fid_from_features(feats_real: np.ndarray, feats_fake: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (rows = samples).

    With fewer samples than dimensions the covariances are ``S1 = A^T A`` and ``S2 = B^T B`` for
    the centred, scaled feature matrices ``A`` (n1 x d) and ``B`` (n2 x d); the non-zero
    eigenvalues of ``S1 S2`` are the squared singular values of ``A B^T``, so ``tr sqrt(S1 S2)``
    is the nuclear norm of that n1 x n2 matrix: exact, and far cheaper than any d x d
    decomposition (bootstrap and FID-infinity call this many times).
    """
    x = np.asarray(feats_real, dtype=np.float64)
    y = np.asarray(feats_fake, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"need two N x d feature arrays with N >= 2, got {x.shape} and {y.shape}")
    if min(len(x), len(y)) >= x.shape[1]:
        mu1, s1 = mean_cov(x)
        mu2, s2 = mean_cov(y)
        return frechet_distance(mu1, s1, mu2, s2)
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    a = (x - mu1) / np.sqrt(len(x) - 1)
    b = (y - mu2) / np.sqrt(len(y) - 1)
    diff = mu1 - mu2
    trace_sqrt = scipy.linalg.svdvals(a @ b.T, check_finite=False).sum()
    value = diff @ diff + np.einsum("ij,ij->", a, a) + np.einsum("ij,ij->", b, b) - 2.0 * trace_sqrt
    return float(max(value, 0.0))
