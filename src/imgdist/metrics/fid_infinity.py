"""FID-infinity: FID extrapolated to an infinite number of generated samples.

Paper: M. J. Chong, D. Forsyth, "Effectively Unbiased FID and Inception Score and where to find
them", CVPR 2020.

FID computed from N generated samples is biased upwards, with a bias that is, to first order,
linear in 1/N (its size depends on the generator, so FIDs of different models at one N are not
comparable). The paper computes FID of the full real statistics against random subsets of the
generated features at several N (15 values evenly spaced from 5,000 to 50,000), fits the
least-squares line ``FID(N) = slope / N + intercept`` and reports the intercept, the value at
N -> infinity, as FID_inf. Each N gets its own random subset, drawn without replacement.

Defaults here: 15 sizes evenly spaced from ``min(5000, n // 5)`` to ``n`` (n = number of generated
samples), so small sets keep the paper's 1:10 range as far as possible. The 1/N law is an
asymptotic one; when N is at or below the feature dimension the covariances are rank-deficient and
the extrapolation is rough -- inspect ``r2`` and the residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frechet import frechet_distance, mean_cov

__all__ = ["FIDInfinity", "default_sizes", "fid_infinity", "fit_inverse_n"]


@dataclass(frozen=True)
class FIDInfinity:
    """Result of the FID-infinity extrapolation.

    ``value`` is the intercept (FID at N -> infinity), ``slope`` the coefficient of 1/N, ``sizes``
    and ``fids`` the points that were fitted (FID averaged over ``trials`` subsets per size),
    ``r2`` the coefficient of determination of the fit and ``residual_rms`` the root mean square
    residual in FID units.
    """

    value: float
    slope: float
    sizes: np.ndarray
    fids: np.ndarray
    r2: float
    residual_rms: float


def default_sizes(n: int, num: int = 15, lo: int | None = None) -> np.ndarray:
    """``num`` sizes evenly spaced from ``lo`` (default ``min(5000, n // 5)``, at least 2) to ``n``."""
    if n < 3:
        raise ValueError(f"FID-infinity needs at least 3 generated samples, got {n}")
    if lo is None:
        lo = min(5000, n // 5)
    lo = max(2, min(int(lo), n - 1))
    num = max(2, min(int(num), n - lo + 1))
    return np.unique(np.linspace(lo, n, num).astype(np.int64))


def fit_inverse_n(sizes: np.ndarray, fids: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares fit ``fid = slope / N + intercept``: ``(intercept, slope, r2, residual_rms)``."""
    n = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(fids, dtype=np.float64)
    if n.shape != y.shape or n.ndim != 1 or n.size < 2:
        raise ValueError("need at least two (size, fid) points of matching shape")
    design = np.column_stack([1.0 / n, np.ones_like(n)])
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ np.array([slope, intercept])
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return float(intercept), float(slope), r2, float(np.sqrt(ss_res / n.size))


def fid_infinity(
    feats_real: np.ndarray | tuple[np.ndarray, np.ndarray],
    feats_fake: np.ndarray,
    sizes: np.ndarray | list[int] | None = None,
    trials: int = 1,
    seed: int | None = 0,
) -> FIDInfinity:
    """FID_inf of ``feats_fake`` against ``feats_real`` (features, or a ``(mu, sigma)`` pair).

    For each N in ``sizes`` (default :func:`default_sizes`), FID is computed ``trials`` times on
    random size-N subsets of the generated features (seeded :class:`numpy.random.Generator`) and
    averaged; then ``FID = slope / N + intercept`` is fitted by least squares.
    """
    if isinstance(feats_real, tuple):
        mu_r = np.asarray(feats_real[0], dtype=np.float64)
        sigma_r = np.asarray(feats_real[1], dtype=np.float64)
    else:
        mu_r, sigma_r = mean_cov(feats_real)
    fake = np.asarray(feats_fake, dtype=np.float64)
    if fake.ndim != 2 or fake.shape[1] != mu_r.shape[0]:
        raise ValueError(
            f"feats_fake must be N x {mu_r.shape[0]} to match the real statistics, got {fake.shape}"
        )
    n = fake.shape[0]
    size_arr = default_sizes(n) if sizes is None else np.asarray(sizes, dtype=np.int64)
    if size_arr.ndim != 1 or size_arr.size < 2 or len(np.unique(size_arr)) < 2:
        raise ValueError("sizes must hold at least two different sample counts")
    if size_arr.min() < 2 or size_arr.max() > n:
        raise ValueError(f"sizes must lie between 2 and the number of generated samples ({n})")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    rng = np.random.default_rng(seed)
    fids = np.empty(size_arr.size, dtype=np.float64)
    for i, size in enumerate(size_arr):
        vals = []
        for _ in range(trials):
            sub = fake[rng.choice(n, int(size), replace=False)] if size < n else fake
            mu_f, sigma_f = mean_cov(sub)
            vals.append(frechet_distance(mu_r, sigma_r, mu_f, sigma_f))
        fids[i] = np.mean(vals)
    value, slope, r2, rms = fit_inverse_n(size_arr, fids)
    return FIDInfinity(
        value=value, slope=slope, sizes=size_arr, fids=fids, r2=r2, residual_rms=rms
    )
