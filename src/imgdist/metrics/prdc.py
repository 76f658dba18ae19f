"""Precision/recall and density/coverage of generated samples on k-NN feature manifolds.

Papers:
- T. Kynkäänniemi, T. Karras, S. Laine, J. Lehtinen, T. Aila, "Improved Precision and Recall
  Metric for Assessing Generative Models", NeurIPS 2019 (precision, recall; k = 3).
- M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi, J. Yoo, "Reliable Fidelity and Diversity Metrics for
  Generative Models", ICML 2020 (density, coverage; k = 5).

Definitions (Euclidean distances; the values match the ``prdc`` package of Naeem et al.):
- radius ``r(x)`` of a sample within its own set: the distance to its k-th nearest neighbour
  other than itself, i.e. the (k+1)-th smallest entry of its row of the within-set distance matrix,
  self-distance 0 included. With duplicate samples this counts the duplicate as a neighbour at
  distance 0, exactly like ``prdc``.
- precision = fraction of fakes ``y`` with ``d(x, y) < r(x)`` for some real ``x``;
- recall    = fraction of reals ``x`` with ``d(x, y) < r(y)`` for some fake ``y``;
- density   = (1/k) * mean over fakes of the number of reals ``x`` with ``d(x, y) < r(x)``;
- coverage  = fraction of reals ``x`` whose nearest fake is closer than ``r(x)``.
All comparisons are strict.

Memory: distances are computed in row blocks of ``chunk_size`` samples against a whole set, so
the peak extra memory is about two float64 blocks, ``2 * 8 * chunk_size * max(N_real, N_fake)``
bytes, plus O(N) vectors and the float64 copies of the inputs (O(N d)), never N x N. By default
the block size is chosen so one float64 block stays under ``DEFAULT_BLOCK_BYTES`` (64 MiB): at
N = 50,000 that is 167-row blocks.

Numerics: distances are float64, ``sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0))`` (clamped: rounding can
make the expansion slightly negative), with the self-distance set to exactly 0 in within-set
blocks; the rare pairs whose squared distance falls below ``NEAR_TOLERANCE`` of ``|x|^2 + |y|^2``,
where the expansion has lost most digits, are recomputed from ``x - y``, so an exact copy is at
distance exactly 0 (what ``copies`` and authenticity look for). Only the order of distances matters here, so results agree with ``prdc`` exactly unless
two different distances tie to within float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arrays import as_features
from ._shard import ALONE, Shard
from .registry import FEATURES, Metric, Setting, needs_more_than_k, register, register_group

__all__ = [
    "PRDC",
    "DEFAULT_BLOCK_BYTES",
    "density_coverage",
    "knn_radii",
    "precision_recall",
    "prdc",
]

DEFAULT_BLOCK_BYTES = 64 * 2**20
#: squared distances below this share of |a|^2 + |b|^2 are recomputed directly: in float64 the
#: expansion keeps ~16 digits of |a|^2 + |b|^2, so below ~1e-8 of it fewer than half remain
NEAR_TOLERANCE = 1e-8


@dataclass(frozen=True)
class PRDC:
    """Precision, recall (Kynkäänniemi et al. 2019), density, coverage (Naeem et al. 2020)."""

    precision: float
    recall: float
    density: float
    coverage: float
    k: int                      # density/coverage
    pr_k: int | None = None     # precision/recall, where it differs from k


def _chunk(chunk_size: int | None, n_cols: int) -> int:
    if chunk_size is None:
        chunk_size = DEFAULT_BLOCK_BYTES // (8 * max(n_cols, 1))
    return max(1, int(chunk_size))


def distance_blocks(a: np.ndarray, b: np.ndarray, chunk_size: int | None = None, *, same: bool = False,
                    shard: Shard = ALONE, squared: bool = False):
    """Yield ``(start, D)``: float64 distances from rows ``a[start:start+len(D)]`` to every row of ``b``.

    ``same=True`` (``a`` is ``b``) sets each row's self-distance to exactly 0. ``shard``: only the
    blocks this process owns (see :mod:`._shard`); the blocks are the same whatever the shard.
    ``squared=True``: squared distances (no root taken).
    """
    sq_a = np.einsum("ij,ij->i", a, a)
    sq_b = sq_a if same else np.einsum("ij,ij->i", b, b)
    c = _chunk(chunk_size, len(b))
    for block, start in enumerate(range(0, len(a), c)):
        if not shard.owns(block):
            continue
        stop = min(start + c, len(a))
        d2 = a[start:stop] @ b.T
        d2 *= -2.0
        d2 += sq_a[start:stop, None]
        d2 += sq_b[None, :]
        # the expansion cancels for near-identical rows (an exact copy comes out ~1e-7, not 0):
        # those few distances are recomputed from the differences themselves
        close = np.nonzero(d2 <= NEAR_TOLERANCE * (sq_a[start:stop, None] + sq_b[None, :]))
        if len(close[0]):
            diff = a[start + close[0]] - b[close[1]]
            d2[close] = np.einsum("ij,ij->i", diff, diff)
        np.maximum(d2, 0.0, out=d2)
        if same:
            rows = np.arange(stop - start)
            d2[rows, start + rows] = 0.0
        yield start, d2 if squared else np.sqrt(d2, out=d2)


def _check_k(k: int, n: int, name: str) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        raise ValueError(f"k = {k} needs more than {k} {name + ' ' if name else ''}samples, got {n}")


def knn_radii(x: np.ndarray, k: int, chunk_size: int | None = None) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row (``prdc``'s radii)."""
    x = as_features(x, "x")
    return _radii(x, (k,), chunk_size, ALONE)[k]


def _radii(x: np.ndarray, ks: tuple[int, ...], chunk_size: int | None, shard: Shard) -> dict[int, np.ndarray]:
    """``knn_radii`` for several k in one pass over the distances."""
    ks = tuple(sorted(set(ks)))
    for k in ks:
        _check_k(k, len(x), "")
    radii = {k: np.zeros(len(x), dtype=np.float64) for k in ks}
    for start, d in distance_blocks(x, x, chunk_size, same=True, shard=shard):
        # the (k+1)-th smallest value of the row, self-distance 0 included
        part = np.partition(d, ks, axis=1)
        for k in ks:
            radii[k][start : start + len(d)] = part[:, k]
    return {k: shard.total(r) for k, r in radii.items()}


def given_radii(radii, n: int) -> np.ndarray:
    """k-NN radii a caller computed already (one pass shared by several metrics), checked."""
    r = np.asarray(radii, dtype=np.float64)
    if r.shape != (n,):
        raise ValueError(f"real_radii must hold one radius per real sample ({n}), got shape {r.shape}")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("real_radii must be finite and non-negative")
    return r


def _prepare(real, fake):
    x = as_features(real, "real")
    y = as_features(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    return x, y


def _scan(x, y, r_real_pr, r_fake_pr, r_real_dc, chunk_size, shard: Shard = ALONE):
    """One chunked pass over real-to-fake distances collecting every count the four metrics need:
    ``precise`` (a fake inside some real's precision ball), ``recalled`` (a real inside some fake's
    ball; only with ``r_fake_pr``), and with ``r_real_dc`` the density counts and ``covered``."""
    precise = np.zeros(len(y), dtype=bool)
    recalled = np.zeros(len(x), dtype=bool)
    fake_hits = np.zeros(len(y), dtype=np.int64)  # reals whose density ball holds each fake
    covered = np.zeros(len(x), dtype=bool)
    for start, d in distance_blocks(x, y, chunk_size, shard=shard):
        stop = start + len(d)
        if r_real_pr is not None:
            precise |= (d < r_real_pr[start:stop, None]).any(axis=0)
        if r_fake_pr is not None:
            recalled[start:stop] = (d < r_fake_pr[None, :]).any(axis=1)
        if r_real_dc is not None:
            inside = d < r_real_dc[start:stop, None]
            fake_hits += inside.sum(axis=0)
            covered[start:stop] = inside.any(axis=1)  # nearest fake closer than r(x)
    return shard.total(precise), shard.total(recalled), shard.total(fake_hits), shard.total(covered)


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, chunk_size: int | None = None
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) as ``(precision, recall)``."""
    x, y = _prepare(real, fake)
    r_real, r_fake = knn_radii(x, k, chunk_size), knn_radii(y, k, chunk_size)
    precise, recalled, _, _ = _scan(x, y, r_real, r_fake, None, chunk_size)
    return float(precise.mean()), float(recalled.mean())


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, chunk_size: int | None = None
) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) as ``(density, coverage)``; needs real radii only."""
    x, y = _prepare(real, fake)
    _, _, fake_hits, covered = _scan(x, y, None, None, knn_radii(x, k, chunk_size), chunk_size)
    return float((1.0 / k) * fake_hits.mean()), float(covered.mean())


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk_size: int | None = None, *,
         pr_k: int | None = None, precision_recall: bool = True, shard: Shard = ALONE) -> PRDC:
    """All four metrics (like ``prdc.compute_prdc(real, fake, nearest_k=k)``), in three passes over
    the distances whatever the two k: real x real, fake x fake, real x fake.

    ``k``: density/coverage's k, and precision/recall's unless ``pr_k`` is given (Kynkäänniemi et
    al. use 3, Naeem et al. 5). ``precision_recall=False`` skips the fake x fake pass that only
    recall needs (precision and recall are then NaN). ``chunk_size`` is the number of rows per
    distance block (default: blocks of ~64 MiB). ``shard``: this process's share of the blocks
    (:mod:`._shard`); every process gets the whole result.
    """
    pr_k = k if pr_k is None else pr_k
    x, y = _prepare(real, fake)
    r_real = _radii(x, (pr_k, k) if precision_recall else (k,), chunk_size, shard)
    r_fake = _radii(y, (pr_k,), chunk_size, shard)[pr_k] if precision_recall else None
    precise, recalled, fake_hits, covered = _scan(x, y, r_real.get(pr_k) if precision_recall else None, r_fake,
                                                  r_real[k], chunk_size, shard)
    nan = float("nan")
    return PRDC(
        precision=float(precise.mean()) if precision_recall else nan,
        recall=float(recalled.mean()) if precision_recall else nan,
        density=float((1.0 / k) * fake_hits.mean()),
        coverage=float(covered.mean()),
        k=k,
        pr_k=pr_k,
    )


# ---------------------------------------------------------------- registration

PR_K = Setting("pr_k", 3, "precision/recall and realism: k nearest neighbours", minimum=1)   # Kynkäänniemi et al.
DC_K = Setting("dc_k", 5, "density/coverage: k nearest neighbours", minimum=1)              # Naeem et al.
_PR, _DC = ("precision", "recall"), ("density", "coverage")


def _knn(run) -> dict:
    """Whichever of the four are chosen, from one set of distance passes (real x real for both k,
    fake x fake only where precision/recall need it, real x fake)."""
    o, chosen = run.options, set(run.chosen)
    pr = bool(chosen & set(_PR))
    r = run.once("prdc", lambda: prdc(run.xr, run.xf, k=o.dc_k, pr_k=o.pr_k, shard=run.shard,
                                      precision_recall=pr))
    if pr:
        run.result.details["precision_recall_k"] = o.pr_k
    if chosen & set(_DC):
        run.result.details["density_coverage_k"] = o.dc_k
    return {name: getattr(r, name) for name in _PR + _DC if name in chosen}


_KYN = "Kynkäänniemi et al., Improved Precision and Recall Metric for Assessing Generative Models, NeurIPS 2019"
_NAEEM = "Naeem et al., Reliable Fidelity and Diversity Metrics for Generative Models, ICML 2020"
# precision and recall need k-NN radii in both sets; density and coverage in the reals only
_NEED_PR_K = needs_more_than_k("precision/recall", "pr_k", ("real", "fake"), per_set=True)
_NEED_DC_K = needs_more_than_k("density/coverage", "dc_k")


def _function(sets, o) -> dict:
    pr = precision_recall(sets.real, sets.fake, k=o.pr_k)
    dc = density_coverage(sets.real, sets.fake, k=o.dc_k)
    return dict(zip(_PR + _DC, pr + dc))


_COMMON = dict(compute=_knn, lower_is_better=False, needs={FEATURES}, function=_function)
register(Metric("precision", "share of fakes inside the reals' k-NN manifold (Kynkäänniemi et al. 2019)",
                label="precision", settings=(PR_K,), check_sizes=_NEED_PR_K, default=True, order=40, paper=_KYN,
                **_COMMON))
register(Metric("recall", "share of reals inside the fakes' k-NN manifold (Kynkäänniemi et al. 2019)",
                label="recall", settings=(PR_K,), check_sizes=_NEED_PR_K, default=True, order=41, paper=_KYN,
                **_COMMON))
register(Metric("density", "k-NN balls of reals counted per fake (Naeem et al. 2020)", label="density",
                settings=(DC_K,), check_sizes=_NEED_DC_K, order=42, paper=_NAEEM, **_COMMON))
register(Metric("coverage", "share of reals whose k-NN ball holds a fake (Naeem et al. 2020)", label="coverage",
                settings=(DC_K,), check_sizes=_NEED_DC_K, order=43, paper=_NAEEM, **_COMMON))
register_group("prdc", _PR + _DC)
register_group("pr", _PR)
register_group("dc", _DC)
