"""Probabilistic precision and recall (P-precision, P-recall) of generated samples.

Paper: D. Park, S. Kim, "Probabilistic Precision and Recall Towards Reliable Evaluation of
Generative Models", ICCV 2023; authors' code kdst-team/Probablistic_precision_recall
(``metric/pp_pr.py``, ``compute_pprecision_precall(real, fake, a=1.2, kth=4)``).

Definition, as the authors' code computes it (Euclidean distances):
- ``R_X = a * mean over x in X of d_k(x)``, ``d_k(x)`` the distance from ``x`` to its k-th nearest
  other sample of X (the (k+1)-th smallest entry of its row, self-distance 0 included); a = 1.2,
  k = 4;
- the probability that ``y`` lies in the ball around ``x``: ``p(x, y) = 1 - d(x, y) / R_X`` for
  ``d < R_X``, else 0;
- P-precision = mean over fakes ``y`` of ``1 - prod over reals x of (1 - p(x, y))`` with the reals'
  ``R``; P-recall = mean over reals ``x`` of ``1 - prod over fakes y of (1 - p(y, x))`` with the
  fakes' ``R``. Both lie in [0, 1], higher is better.
Unlike improved precision/recall, each sample's ball has the same radius (a mean over the set), so
one outlier cannot open a huge ball; and the score is continuous in the distances (``p`` goes
to 0 at the ball's edge), so no sample sits on a knife's edge.

The repository holds two variants: ``metric/pp_pr.py`` (exported by ``metric/__init__.py``,
defaults a = 1.2, k = 4) multiplies over every sample of the other set, as above and as followed
here; a top-level ``compute_pp_pr.py`` (default a = 1.5) keeps only the k largest ``p`` per sample
before the product. (One stored revision of ``metric/pp_pr.py`` multiplies an undefined ``f``
where it computed ``psr``; later copies name it ``f`` throughout.)

Memory: four passes over float64 distance row blocks (:func:`.prdc.distance_blocks`, ~64 MiB a
block): real x real and fake x fake for the two ``R``, then fake x real (rows are fakes: each
fake's product over the reals is taken within one block) and real x fake. Extra memory is about
three blocks plus O(N) vectors and the float64 copies of the inputs, never N x M.

Processes: ``shard`` splits every pass by blocks (:mod:`._shard`); each per-sample product comes
from one block, so every process gets the single-process bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._shard import ALONE, Shard
from .prdc import _check_k, _prepare, _radii, distance_blocks
from .registry import FEATURES, Metric, Setting, needs_more_than_k, register, register_group

__all__ = ["PPR", "p_precision_recall"]


@dataclass(frozen=True)
class PPR:
    """P-precision and P-recall (Park & Kim 2023) with the radii ``R`` they used."""

    precision: float      # NaN when not computed
    recall: float         # NaN when not computed
    radius_real: float    # R of the reals' balls (precision); NaN when not computed
    radius_fake: float    # R of the fakes' balls (recall); NaN when not computed
    a: float
    k: int


def _mean_radius(x, a, k, chunk_size, shard) -> float:
    return float(a * _radii(x, (k,), chunk_size, shard)[k].mean())


def _outside_all(rows, centres, radius, chunk_size, shard) -> np.ndarray:
    """For each row sample: the product over every centre of ``1 - p(centre, row)``."""
    out = np.zeros(len(rows), dtype=np.float64)
    for start, d in distance_blocks(rows, centres, chunk_size, shard=shard):
        # 1 - p = d / R inside a ball, 1 outside it
        miss = np.where(d < radius, d / radius, 1.0) if radius > 0 else np.ones_like(d)
        out[start:start + len(d)] = np.prod(miss, axis=1)
    return shard.total(out)


def p_precision_recall(real, fake, a: float = 1.2, k: int = 4, chunk_size: int | None = None, *,
                       precision: bool = True, recall: bool = True, shard: Shard = ALONE) -> PPR:
    """P-precision and P-recall (Park & Kim 2023). ``precision=False`` / ``recall=False`` skip the
    passes only the other one needs (its value is then NaN). ``chunk_size``: rows per distance
    block (default: blocks of ~64 MiB). ``shard``: this process's share of the blocks."""
    if not a > 0:
        raise ValueError(f"a must be positive, got {a}")
    x, y = _prepare(real, fake)
    nan = float("nan")
    p = r = radius_real = radius_fake = nan
    if precision:
        _check_k(k, len(x), "real")
        radius_real = _mean_radius(x, a, k, chunk_size, shard)
        p = float(np.mean(1.0 - _outside_all(y, x, radius_real, chunk_size, shard)))
    if recall:
        _check_k(k, len(y), "fake")
        radius_fake = _mean_radius(y, a, k, chunk_size, shard)
        r = float(np.mean(1.0 - _outside_all(x, y, radius_fake, chunk_size, shard)))
    return PPR(precision=p, recall=r, radius_real=radius_real, radius_fake=radius_fake, a=a, k=k)


# ---------------------------------------------------------------- registration

PPR_A = Setting("ppr_a", 1.2, "P-precision/P-recall: ball radius as a multiple of the mean k-NN distance",
                kind="number", minimum=1e-9)
PPR_K = Setting("ppr_k", 4, "P-precision/P-recall: k of that mean k-NN distance", minimum=1)
_KEYS = ("p-precision", "p-recall")


def _compute(run) -> dict:
    """Whichever of the two are chosen, from one set of passes (each side's radius only where needed)."""
    o, chosen = run.options, set(run.chosen)
    r = run.once("ppr", lambda: p_precision_recall(run.xr, run.xf, a=o.ppr_a, k=o.ppr_k, shard=run.shard,
                                                   precision=_KEYS[0] in chosen, recall=_KEYS[1] in chosen))
    run.result.details["ppr"] = {"a": r.a, "k": r.k, **({"radius_real": r.radius_real} if _KEYS[0] in chosen else {}),
                                 **({"radius_fake": r.radius_fake} if _KEYS[1] in chosen else {})}
    return {key: value for key, value in zip(_KEYS, (r.precision, r.recall)) if key in chosen}


_WHAT = "P-precision/P-recall"
_PAPER = "Park & Kim, Probabilistic Precision and Recall Towards Reliable Evaluation of Generative Models, ICCV 2023"
register(Metric(
    _KEYS[0], "P-precision: mean over fakes of the chance of lying in some real's ball of one common radius "
    "(Park & Kim 2023)", _compute, "p_precision", lower_is_better=False, needs={FEATURES}, settings=(PPR_A, PPR_K),
    check_sizes=needs_more_than_k(_WHAT, "ppr_k", ("real",)), order=44, paper=_PAPER,
    function=lambda sets, o: p_precision_recall(sets.real, sets.fake, a=o.ppr_a, k=o.ppr_k, recall=False).precision))
register(Metric(
    _KEYS[1], "P-recall: mean over reals of the chance of lying in some fake's ball of one common radius "
    "(Park & Kim 2023)", _compute, "p_recall", lower_is_better=False, needs={FEATURES}, settings=("ppr_a", "ppr_k"),
    check_sizes=needs_more_than_k(_WHAT, "ppr_k", ("fake",)), order=45, paper=_PAPER,
    function=lambda sets, o: p_precision_recall(sets.real, sets.fake, a=o.ppr_a, k=o.ppr_k, precision=False).recall))
register_group("ppr", _KEYS)
