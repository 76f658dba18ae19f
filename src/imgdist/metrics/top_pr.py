"""TopP&R: topological precision and recall, as ``top-pr`` 0.2.1 (``compute_top_pr``) computes it.

Paper: P. J. Kim, Y. Jang, J. Kim, J. Yoo, "TopP&R: Robust Support Estimation Approach for
Evaluating Fidelity and Diversity in Generative Models", NeurIPS 2023.

Each set's support is estimated by a kernel density estimate (KDE) and kept only where the
density is significant, above a bootstrap confidence band. Precision is the share of the fakes
significant in their own KDE that are also significant in the reals' KDE; recall swaps the roles.
Step by step, with the package's defaults (cosine kernel, random projection on, F1 computed):

1. Features become float32. When ``d > 32`` both sets are projected to 32 dimensions by one
   bias-free linear map ``W`` (32 x d): torch's CPU generator seeded 99 draws ``W`` from
   ``N(0, 2 / (d + 32))`` (Xavier normal), and ``y = x W^T`` in float32. Below, ``d`` is the
   dimension after projection.
2. Each set gets its own bandwidth, the package's balloon estimate. With ``k = 5 d``, row ``i``
   (``i < n - k``, in input order) contributes the distance to its k-th nearest neighbour among
   the rows *after* it; the bandwidth ``h`` is the ``floor(m / 2)``-th smallest (1-based) of those
   ``m = n - k`` values. The estimate depends on the order of the rows, as the package's does.
3. KDE with the cosine kernel: ``p(y) = (pi / 4h)^d / n * sum over |y - x_j| <= h of
   cos(pi |y - x_j| / 2h)``.
4. Confidence band: ``p`` at the set's own points, and again from each of 10 bootstrap resamples
   (drawn with replacement by numpy's legacy generator seeded 42: the reals' 10 draws, then the
   fakes' 10, each ``choice(n, n)``); ``theta_b = sqrt(n) max_i |p(x_i) - p_b(x_i)|`` and the band
   is ``c = quantile(theta, 1 - alpha) / sqrt(n)`` (numpy's linear interpolation).
5. A point is significant for a set when that set's KDE at the point exceeds that set's band.
   ``precision = #{fakes significant for both} / #{fakes significant for the fakes}``, recall the
   same with the roles swapped; F1 is their harmonic mean (0 when either is at most 1e-4).

Seeds: the package seeds torch with 42 and then 99 before drawing ``W``, and seeds numpy's global
generator with 42 -- but only on the projection path. For ``d <= 32`` its bootstrap draws from
whatever state the caller's global numpy generator is in; here they always come from a
generator seeded 42, so the values equal the package's after ``numpy.random.seed(42)``. Neither
torch's nor numpy's global generator is touched.

Dimensions ``d <= 3`` are refused: there the package replaces the balloon estimate by a grid
search with persistent homology and then fails itself (in 0.2.1 the scores compared against the
bands are never assigned on that path: ``UnboundLocalError``), so no reference value exists.

The constant ``(pi / 4h)^d`` multiplies a set's KDE and its band alike, so every comparison holds
without it; it is left out, and the scores and bands here are the package's divided by it. That
changes no decision and removes an overflow (or underflow to 0) the package has for small (or
large) bandwidths at ``d = 32``.

Memory and cost: distances in row blocks of about 64 MiB (:func:`imgdist.metrics.prdc.distance_blocks`),
never n x n; besides the inputs and their float32 projection, O(n) per set. The 10 bootstrap
KDEs reuse each block of kernel values (the resample's counts weight the kernel columns). 10,000 x
50,000 features fit in well under 4 GB. With a :class:`~imgdist.metrics._shard.Shard` each
process computes its blocks only, and the combined arrays are those of one process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ImgdistError, SetTooSmall
from ._shard import ALONE, Shard
from .prdc import distance_blocks
from .registry import FEATURES, Metric, Setting, register, register_group

__all__ = ["TopPR", "TopPRScores", "min_samples", "random_projection", "top_pr", "top_pr_scores"]

#: the package's constants (top_pr.py: ``SEED``, the projection's ``torch.manual_seed(99)``, its
#: output width, the bootstrap's ``repeat``, ``k = 5 d``, the F1 floor)
NUMPY_SEED = 42
PROJECTION_SEED = 99
PROJECTION_DIM = 32
BOOTSTRAPS = 10
K_PER_DIM = 5
F1_FLOOR = 1e-4
#: below this dimension the package takes its grid path, which fails (see the module docstring)
MIN_DIM = 4


@dataclass(frozen=True)
class TopPRScores:
    """What decides TopP&R: per-sample KDE scores and the bands (without the ``(pi/4h)^d``
    factor, see the module docstring), the bandwidths and the working dimension."""

    real_on_real: np.ndarray   # the reals' KDE at each real
    fake_on_fake: np.ndarray   # the fakes' KDE at each fake
    fake_on_real: np.ndarray   # the fakes' KDE at each real
    real_on_fake: np.ndarray   # the reals' KDE at each fake
    band_real: float
    band_fake: float
    bandwidth_real: float
    bandwidth_fake: float
    dim: int                   # after the projection
    projected: bool

    def kde_factor(self, side: str) -> float:
        """``(pi / 4h)^d``: the factor that turns this side's scores and band into the package's."""
        h = self.bandwidth_real if side == "real" else self.bandwidth_fake
        return (math.pi / (4.0 * h)) ** self.dim


@dataclass(frozen=True)
class TopPR:
    """Topological precision (fidelity) and recall (diversity), Kim et al. 2023."""

    precision: float
    recall: float
    f1: float
    significant_real: int      # reals above the reals' band
    significant_fake: int
    real_in_fake: int          # of those reals, also above the fakes' band (recall's numerator)
    fake_in_real: int          # precision's numerator
    bandwidth_real: float
    bandwidth_fake: float
    dim: int
    projected: bool


def min_samples(d: int) -> int:
    """The fewest samples per set for ``d``-dimensional features: the balloon estimate needs
    ``k = 5 d'`` neighbours after some row (``d'``: the dimension after projection)."""
    return K_PER_DIM * min(d, PROJECTION_DIM) + 1


def random_projection(x: np.ndarray) -> np.ndarray:
    """float32 ``n x d`` -> ``n x 32``: the package's projection (see the module docstring)."""
    import torch

    d = x.shape[1]
    generator = torch.Generator().manual_seed(PROJECTION_SEED)
    weight = torch.empty(PROJECTION_DIM, d, dtype=torch.float32)
    weight.normal_(0.0, math.sqrt(2.0 / float(d + PROJECTION_DIM)), generator=generator)
    with torch.no_grad():
        return torch.nn.functional.linear(torch.from_numpy(np.ascontiguousarray(x)), weight).numpy()


def _float32(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must be a 2-D real array (samples x features), got {a.dtype} array of "
                         f"shape {a.shape}")
    a = np.asarray(a, dtype=np.float32)  # the package's first step, whatever the input's type
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity (in float32)")
    return a


def _balloon_bandwidth(x: np.ndarray, k: int, name: str, chunk: int | None, shard: Shard) -> float:
    """The package's bandwidth: the median (the floor(m/2)-th smallest) over rows ``i < m = n - k``
    of the distance to the k-th nearest of the rows after ``i``."""
    m = len(x) - k
    kth = np.zeros(m)
    for start, dist in distance_blocks(x[:m], x, chunk, shard=shard):
        later = dist[:, start:]   # row r of the block is row start + r; it may only see columns > r
        rows = len(later)
        later[np.tril_indices(rows, 0, later.shape[1])] = np.inf
        kth[start:start + rows] = np.partition(later, k - 1, axis=1)[:, k - 1]
    kth = np.sort(shard.total(kth))
    h = float(kth[int(m * 0.5) - 1])  # m = 1: index -1, the only value, as in the package
    if not h > 0.0:
        raise ImgdistError(f"top-precision/top-recall: the {name} set's bandwidth is 0 (its rows "
                           f"repeat: the {k}-th nearest later row is a copy for at least half of them)")
    return h


def _kernel_sums(positions: np.ndarray, data: np.ndarray, h: float, weights: np.ndarray, same: bool,
                 chunk: int | None, shard: Shard) -> np.ndarray:
    """``sum_j w_j cos(pi d_ij / 2h) [d_ij <= h] / n`` for every position ``i`` and weight column."""
    out = np.zeros((len(positions), weights.shape[1]))
    scale = math.pi / (2.0 * h)
    for start, d2 in distance_blocks(positions, data, chunk, same=same, shard=shard, squared=True):
        # the package's KDE distances (scikit-learn's, for float32 features) are float32: the
        # squared distance rounded to float32, its root taken in float32
        dist = np.sqrt(d2.astype(np.float32)).astype(np.float64)
        outside = dist > h
        dist *= scale
        np.cos(dist, out=dist)
        dist[outside] = 0.0
        out[start:start + len(dist)] = dist @ weights
    out = shard.total(out)
    out /= len(data)
    return out


def _band(x: np.ndarray, h: float, alpha: float, rng: np.random.RandomState, chunk: int | None,
          shard: Shard) -> tuple[float, np.ndarray]:
    """``(c, p)``: the bootstrap confidence band and the KDE at the set's own points."""
    n = len(x)
    weights = np.ones((n, 1 + BOOTSTRAPS))
    for b in range(BOOTSTRAPS):
        weights[:, 1 + b] = np.bincount(rng.choice(n, size=n, replace=True), minlength=n)
    sums = _kernel_sums(x, x, h, weights, True, chunk, shard)
    p = sums[:, 0]
    theta = math.sqrt(n) * np.abs(sums[:, 1:] - p[:, None]).max(axis=0)
    return float(np.quantile(theta, 1 - alpha) / math.sqrt(n)), p


def top_pr_scores(real, fake, alpha: float = 0.1, *, chunk_size: int | None = None,
                  shard: Shard = ALONE) -> TopPRScores:
    """Per-sample scores, bands and bandwidths of TopP&R (see the module docstring); :func:`top_pr`
    turns them into the metric. ``real`` and ``fake`` are ``n x d`` arrays, ``d >= 4``;
    ``chunk_size``: rows per distance block (default: ~64 MiB blocks)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    xr, xf = _float32(real, "real"), _float32(fake, "fake")
    if xr.shape[1] != xf.shape[1]:
        raise ValueError(f"feature dimensions differ: {xr.shape[1]} vs {xf.shape[1]}")
    d = xr.shape[1]
    if d < MIN_DIM:
        raise ImgdistError(f"top-precision/top-recall: {d}-dimensional features are not supported: for d <= 3 "
                           "top-pr 0.2.1 switches to a persistent-homology grid search and then fails "
                           "(UnboundLocalError), so there is no reference to reproduce")
    projected = d > PROJECTION_DIM
    if projected:
        xr, xf = random_projection(xr), random_projection(xf)
    dim = xr.shape[1]
    k = K_PER_DIM * dim
    for name, x in (("real", xr), ("fake", xf)):
        if len(x) <= k:
            raise ValueError(f"{name} set has {len(x)} samples; TopP&R's balloon bandwidth needs more than "
                             f"k = 5 x {dim} = {k}")
    xr64, xf64 = xr.astype(np.float64), xf.astype(np.float64)
    h_r = _balloon_bandwidth(xr64, k, "real", chunk_size, shard)
    h_f = _balloon_bandwidth(xf64, k, "fake", chunk_size, shard)
    rng = np.random.RandomState(NUMPY_SEED)
    c_r, p_rr = _band(xr64, h_r, alpha, rng, chunk_size, shard)
    c_f, p_ff = _band(xf64, h_f, alpha, rng, chunk_size, shard)
    p_fr = _kernel_sums(xr64, xf64, h_f, np.ones((len(xf64), 1)), False, chunk_size, shard)[:, 0]
    p_rf = _kernel_sums(xf64, xr64, h_r, np.ones((len(xr64), 1)), False, chunk_size, shard)[:, 0]
    return TopPRScores(real_on_real=p_rr, fake_on_fake=p_ff, fake_on_real=p_fr, real_on_fake=p_rf,
                       band_real=c_r, band_fake=c_f, bandwidth_real=h_r, bandwidth_fake=h_f, dim=dim,
                       projected=projected)


def top_pr(real, fake, alpha: float = 0.1, *, chunk_size: int | None = None, shard: Shard = ALONE) -> TopPR:
    """TopP&R of ``fake`` against ``real`` (Kim et al., NeurIPS 2023), equal to ``top-pr`` 0.2.1's
    ``compute_top_pr(real_features=real, fake_features=fake, alpha=alpha)``: ``precision`` is its
    ``fidelity``, ``recall`` its ``diversity``, ``f1`` its ``Top_F1``. A share whose denominator
    is 0 (no sample above its own band) is NaN."""
    s = top_pr_scores(real, fake, alpha, chunk_size=chunk_size, shard=shard)
    sig_r = s.real_on_real > s.band_real
    sig_f = s.fake_on_fake > s.band_fake
    real_in_fake = int(np.sum(sig_r & (s.fake_on_real > s.band_fake)))
    fake_in_real = int(np.sum(sig_f & (s.real_on_fake > s.band_real)))
    n_r, n_f = int(sig_r.sum()), int(sig_f.sum())
    precision = fake_in_real / n_f if n_f else math.nan
    recall = real_in_fake / n_r if n_r else math.nan
    f1 = 2.0 / (1.0 / precision + 1.0 / recall) if precision > F1_FLOOR and recall > F1_FLOOR else 0.0
    return TopPR(precision=precision, recall=recall, f1=f1, significant_real=n_r, significant_fake=n_f,
                 real_in_fake=real_in_fake, fake_in_real=fake_in_real, bandwidth_real=s.bandwidth_real,
                 bandwidth_fake=s.bandwidth_fake, dim=s.dim, projected=s.projected)


# ---------------------------------------------------------------- registration

ALPHA = Setting("top_pr_alpha", 0.1, "TopP&R: significance level of the bootstrap confidence band (top-pr's alpha)",
                kind="fraction")
_NAMES = ("top-precision", "top-recall")
#: the fewest samples per set when the feature dimension is not known yet (checks run before the
#: extraction): what features of 32 or more dimensions, projected to 32, need
_MIN_UNKNOWN_DIM = min_samples(PROJECTION_DIM)


def _top_pr(run) -> dict:
    alpha = run.options.top_pr_alpha
    r = run.once("top_pr", lambda: top_pr(run.xr, run.xf, alpha, shard=run.shard))
    run.result.details["top_pr"] = {
        "alpha": alpha, "f1": r.f1, "bandwidth_real": r.bandwidth_real, "bandwidth_fake": r.bandwidth_fake,
        "significant_real": r.significant_real, "significant_fake": r.significant_fake,
        "real_in_fake": r.real_in_fake, "fake_in_real": r.fake_in_real,
        "dim": r.dim, "projected_from": run.xr.shape[1] if r.projected else None}
    values = {}
    for name, value, side in (("top-precision", r.precision, "fake"), ("top-recall", r.recall, "real")):
        if name not in run.chosen:
            continue
        if math.isnan(value):
            run.result.warnings.append(f"{name}: no {side} sample lies above the {side}s' own confidence band, "
                                       "so the share is undefined and left out")
        else:
            values[name] = value
    return values


def _need_samples(options, counts, chosen) -> None:
    for side in ("real", "fake"):
        n = counts.get(side)
        if n is not None and n < _MIN_UNKNOWN_DIM:
            raise SetTooSmall(f"top-precision/top-recall: each set needs at least {_MIN_UNKNOWN_DIM} images (the "
                              f"balloon bandwidth is the distance to the {_MIN_UNKNOWN_DIM - 1}-th nearest later "
                              f"sample in 32 dimensions), and the {side} set has {n}")


def _note(result) -> str | None:
    d = result.details.get("top_pr")
    if d is None:
        return None
    space = f"{d['projected_from']} dimensions projected to {d['dim']}" if d["projected_from"] else f"{d['dim']} dimensions"
    return (f"TopP&R (alpha {d['alpha']:g}, {space}): F1 {d['f1']:.4g}; significant {d['significant_real']} reals "
            f"(bandwidth {d['bandwidth_real']:.4g}) and {d['significant_fake']} fakes (bandwidth "
            f"{d['bandwidth_fake']:.4g})")


def _function(sets, options) -> dict:
    r = top_pr(sets.real, sets.fake, options.top_pr_alpha)
    return {"top-precision": r.precision, "top-recall": r.recall}


_PAPER = ("Kim et al., TopP&R: Robust Support Estimation Approach for Evaluating Fidelity and Diversity in "
          "Generative Models, NeurIPS 2023")
# not part of 'all': at least 161 images per set, where every other metric of 'all' works on a few dozen
_COMMON = dict(compute=_top_pr, lower_is_better=False, needs={FEATURES}, settings=(ALPHA,),
               check_sizes=_need_samples, function=_function, in_all=False, paper=_PAPER)
register(Metric("top-precision", "share of significant fakes inside the reals' significant support, TopP&R "
                "(Kim et al. 2023)", label="top-precision", order=44, note=_note, **_COMMON))
# one note for the pair: top-recall's only when top-precision is not in the table
register(Metric("top-recall", "share of significant reals inside the fakes' significant support, TopP&R "
                "(Kim et al. 2023)", label="top-recall", order=45,
                note=lambda result: None if "top-precision" in result.values else _note(result), **_COMMON))
register_group("top-pr", _NAMES)
