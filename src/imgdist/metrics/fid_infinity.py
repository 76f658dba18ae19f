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

Computation: every point is an exact Fréchet distance between the real Gaussian and a subset's,
``|mu_r - mu_f|^2 + tr S_r + tr S_f - 2 tr sqrt(S_r S_f)``, with the real side factorised once,
``S_r = F^T F`` (``F`` = the centred real features over sqrt(N - 1) when N <= d, else the
transposed Cholesky factor of ``S_r``). For a subset of size N <= d, with ``S_f = B^T B`` for its
centred, scaled features ``B``, the trace term is the nuclear norm of ``F B^T`` (see
:func:`~imgdist.metrics.frechet.nuclear_trace`): no d x d decomposition at all. Larger subsets
give ``tr sqrt(S_r S_f)`` as the sum of square roots of the eigenvalues of ``F S_f F^T``. Subset
covariances are accumulated over blocks of rows, so neither the real nor the generated features
are ever copied whole in float64 (50,000 x 2048 float32 features need only d x d matrices and
32 MB blocks beyond the inputs). A progress bar (stderr) appears when the run takes more than
two seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_int, check_seed, option
from ._shard import ALONE, Shard
from ..errors import SetTooSmall
from .registry import FEATURES, Metric, Setting, register
from .frechet import _as_cov, _as_mean, _check_samples, centred_factor, mean_cov, nuclear_trace

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


class _RealGaussian:
    """The real side, factorised once: mean, ``tr S_r`` and ``F`` with ``F^T F = S_r``."""

    def __init__(self, feats_real):
        if isinstance(feats_real, tuple):
            if len(feats_real) != 2:
                raise ValueError("feats_real must be features (N x d) or a (mu, sigma) pair")
            self.mu = _as_mean(feats_real[0], "mu_real")
            sigma = _as_cov(feats_real[1], "sigma_real")
            if self.mu.ndim != 1 or sigma.shape != (self.mu.size, self.mu.size):
                raise ValueError(f"mu_real {self.mu.shape} and sigma_real {sigma.shape} do not fit together")
            self.factor = self._covariance_factor(sigma)
            self.trace = float(np.trace(sigma))
            return
        x, _, n = _check_samples(feats_real, "feats_real")
        if n <= x.shape[1]:
            # fewer samples than dimensions: the centred features are the (exact) factor
            self.mu, self.factor = centred_factor(x, name="feats_real")
            self.trace = float(np.einsum("ij,ij->", self.factor, self.factor))
        else:
            self.mu, sigma = mean_cov(x, name="feats_real")
            self.factor = self._covariance_factor(sigma)
            self.trace = float(np.trace(sigma))

    @staticmethod
    def _covariance_factor(sigma: np.ndarray) -> np.ndarray:
        import scipy.linalg

        try:
            chol = scipy.linalg.cholesky(sigma, lower=True, check_finite=False)
            if np.all(np.isfinite(chol)):
                return chol.T
        except np.linalg.LinAlgError:
            pass
        # singular: sqrt of the non-negative eigenvalues times the eigenvectors
        w, v = scipy.linalg.eigh(sigma, check_finite=False)
        keep = w > 0
        return np.sqrt(w[keep])[:, None] * v[:, keep].T

    def frechet_to(self, fake: np.ndarray, rows: np.ndarray | None) -> float:
        """Fréchet distance to the Gaussian of ``fake[rows]`` (all rows for None)."""
        import scipy.linalg

        d = len(self.mu)
        size = len(fake) if rows is None else len(rows)
        if size <= d:
            mu_f, b = centred_factor(fake, rows, name="feats_fake")
            trace_f = float(np.einsum("ij,ij->", b, b))
            trace_sqrt = nuclear_trace(self.factor, b)
        else:
            mu_f, sigma_f = mean_cov(fake, rows, name="feats_fake")
            trace_f = float(np.trace(sigma_f))
            m = self.factor @ sigma_f @ self.factor.T
            w = scipy.linalg.eigvalsh(0.5 * (m + m.T), check_finite=False)
            trace_sqrt = float(np.sqrt(np.clip(w, 0.0, None)).sum())
        diff = self.mu - mu_f
        return float(max(diff @ diff + self.trace + trace_f - 2.0 * trace_sqrt, 0.0))


def fid_infinity(
    feats_real: np.ndarray | tuple[np.ndarray, np.ndarray],
    feats_fake: np.ndarray,
    sizes: np.ndarray | list[int] | None = None,
    trials: int = 1,
    seed: int | None = 0,
    progress: bool = True,
    *,
    shard: Shard = ALONE,
) -> FIDInfinity:
    """FID_inf of ``feats_fake`` against ``feats_real`` (features, or a ``(mu, sigma)`` pair).

    For each N in ``sizes`` (default :func:`default_sizes`), FID is computed ``trials`` times on
    random size-N subsets of the generated features (seeded :class:`numpy.random.Generator`,
    ``choice(n, N, replace=False)`` per subset; N = n uses all of them) and averaged; then
    ``FID = slope / N + intercept`` is fitted by least squares.

    Pass the real features where you have them: with fewer real samples than dimensions a
    ``(mu, sigma)`` pair costs a d x d eigendecomposition that the features avoid.
    ``progress``: a progress bar on stderr for runs longer than two seconds (rank 0's only).
    ``shard``: this process computes its share of the subsets (all are drawn everywhere, so each
    is the same whatever the split; :mod:`._shard`).
    """
    from tqdm.auto import tqdm

    fake, _, n = _check_samples(feats_fake, "feats_fake")
    if sizes is None:
        size_arr = default_sizes(n)
    else:
        size_arr = np.asarray(sizes)
        if size_arr.ndim != 1 or size_arr.dtype.kind not in "iu":
            raise ValueError(f"sizes must be a list of integers, got {sizes!r}")
        size_arr = size_arr.astype(np.int64)
    if size_arr.size < 2 or len(np.unique(size_arr)) < 2:
        raise ValueError("sizes must hold at least two different sample counts")
    if size_arr.min() < 2 or size_arr.max() > n:
        raise ValueError(f"sizes must lie between 2 and the number of generated samples ({n})")
    trials = check_int("trials", trials, 1, flag=False)
    rng = np.random.default_rng(check_seed(seed))
    values = np.zeros((size_arr.size, trials), dtype=np.float64)
    mine = [shard.owns(j) for j in range(values.size)]
    # one step for the real side's factorisation (seconds at d = 2048), then one per subset
    with tqdm(total=1 + sum(mine), desc="FID-infinity", unit="FID", delay=2.0,
              disable=not progress or shard.rank != 0, leave=False) as bar:
        real = _RealGaussian(feats_real)
        if fake.shape[1] != len(real.mu):
            raise ValueError(f"feats_fake must be N x {len(real.mu)} to match the real statistics, "
                             f"got {fake.shape}")
        bar.update()
        for i, size in enumerate(size_arr):
            for t in range(trials):
                rows = rng.choice(n, int(size), replace=False) if size < n else None
                if mine[i * trials + t]:
                    values[i, t] = real.frechet_to(fake, rows)
                    bar.update()
    fids = shard.total(values).mean(axis=1)
    value, slope, r2, rms = fit_inverse_n(size_arr, fids)
    return FIDInfinity(
        value=value, slope=slope, sizes=size_arr, fids=fids, r2=r2, residual_rms=rms
    )


# ---------------------------------------------------------------- registration


def _fid_inf(run) -> float:
    o = run.options
    fit = fid_infinity(run.xr, run.xf, sizes=o.fid_inf_sizes, seed=o.seed, progress=run.progress, shard=run.shard)
    run.result.details["fid_inf_fit"] = {"slope": fit.slope, "sizes": fit.sizes, "fids": fit.fids,
                                         "r2": fit.r2, "residual_rms": fit.residual_rms}
    return fit.value


def _need_sizes(options, counts, chosen) -> None:
    fake = counts.get("fake")
    if fake is None:
        return
    if fake < 3:
        raise SetTooSmall(f"fid-inf needs at least 3 fake images, got {fake}")
    if options.fid_inf_sizes and max(options.fid_inf_sizes) > fake:
        raise SetTooSmall(f"{option('fid_inf_sizes')} go up to {max(options.fid_inf_sizes)}, more than the "
                          f"{fake} fake images")


def _note(result) -> str | None:
    fit = result.details.get("fid_inf_fit")
    if not fit:
        return None
    return (f"{result.labels.get('fid-inf', 'FID_inf')}: line {fit['slope']:.4g}/N + intercept fitted over "
            f"N = {int(fit['sizes'][0])}..{int(fit['sizes'][-1])} ({len(fit['sizes'])} sizes), R^2 {fit['r2']:.4f}")


FID_INF = register(Metric(
    "fid-inf", "FID extrapolated to N → ∞ by a line in 1/N (Chong & Forsyth 2020)", _fid_inf, "FID_inf", "FD_inf",
    lower_is_better=True, needs={FEATURES}, aliases=("fid_inf", "fidinf"), covariance=True,
    settings=(Setting("fid_inf_sizes", None, "FID-infinity: the set sizes of the fit", kind="sizes", minimum=2,
                      cli=False), "seed"),
    check_sizes=_need_sizes, note=_note, order=50,
    function=lambda sets, o: fid_infinity(sets.real, sets.fake, sizes=o.fid_inf_sizes, seed=o.seed,
                                          progress=False).value,
    paper="Chong & Forsyth, Effectively Unbiased FID and Inception Score and Where to Find Them, CVPR 2020"))
