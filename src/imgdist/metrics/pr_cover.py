"""Precision cover and recall cover of generated samples.

Paper: F. Cheema, R. Urner, "Precision Recall Cover: A Method For Assessing Generative Models",
AISTATS 2023 (PMLR 206:6571-6594); authors' code ``GenerativeMetrics.PRCover(P, Q, k, C)`` with
``PR_Cover_Indicator``.

Definition, as the authors' code computes it (Euclidean distances, k = 3, C = 3):
- ``k' = C * k``; each sample's radius within its own set is the distance to its k'-th nearest
  other sample of that set (the authors ask a k-d tree for ``k' + 1`` neighbours and drop the
  first, the sample itself; with duplicates this is the (k'+1)-th smallest entry of the row,
  self-distance 0 included);
- a sample is covered when its ball holds at least ``k = k'/C`` samples of the other set, a point
  on the sphere counting (``d <= radius``);
- precision cover = share of fakes whose ball (radius among the fakes) holds at least k reals;
  recall cover = share of reals whose ball (radius among the reals) holds at least k fakes. Both
  lie in [0, 1], higher is better. The k'-ball is C times wider in neighbour count than the k
  samples it must catch, so a sample counts only where both sets have comparable density, not
  wherever a single outlier of the other set happens to reach.

Memory: three passes over float64 distance row blocks (:func:`.prdc.distance_blocks`, ~64 MiB a
block): real x real and fake x fake for the radii, then one real x fake pass counting both ways
(per row for recall cover, per column, summed over blocks as exact integers, for precision cover).
Extra memory is about two blocks plus O(N) vectors and the float64 copies of the inputs.

Processes: ``shard`` splits every pass by blocks (:mod:`._shard`); counts are integers, so every
process gets the single-process result exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._shard import ALONE, Shard
from .prdc import _check_k, _prepare, _radii, distance_blocks
from .registry import FEATURES, Metric, Setting, needs_more_than_k, register, register_group

__all__ = ["PRCover", "pr_cover"]


@dataclass(frozen=True)
class PRCover:
    """Precision cover and recall cover (Cheema & Urner 2023)."""

    precision: float      # NaN when not computed
    recall: float         # NaN when not computed
    k: int
    c: int


def pr_cover(real, fake, k: int = 3, c: int = 3, chunk_size: int | None = None, *, precision: bool = True,
             recall: bool = True, shard: Shard = ALONE) -> PRCover:
    """Precision cover and recall cover (Cheema & Urner 2023) with ``k' = c * k`` neighbour balls.

    ``precision=False`` / ``recall=False`` skip the radius pass only the other one needs (its value
    is then NaN). ``chunk_size``: rows per distance block (default: blocks of ~64 MiB). ``shard``:
    this process's share of the blocks; every process gets the whole result.
    """
    if k < 1 or c < 1:
        raise ValueError(f"k and c must be >= 1, got k = {k}, c = {c}")
    x, y = _prepare(real, fake)
    k_ball = c * k
    if recall:
        _check_k(k_ball, len(x), "real")
    if precision:
        _check_k(k_ball, len(y), "fake")
    r_real = _radii(x, (k_ball,), chunk_size, shard)[k_ball] if recall else None
    r_fake = _radii(y, (k_ball,), chunk_size, shard)[k_ball] if precision else None
    fakes_near_real = np.zeros(len(x), dtype=np.int64)   # fakes inside each real's ball
    reals_near_fake = np.zeros(len(y), dtype=np.int64)   # reals inside each fake's ball
    for start, d in distance_blocks(x, y, chunk_size, shard=shard):
        stop = start + len(d)
        if recall:
            fakes_near_real[start:stop] = (d <= r_real[start:stop, None]).sum(axis=1)
        if precision:
            reals_near_fake += (d <= r_fake[None, :]).sum(axis=0)
    nan = float("nan")
    return PRCover(precision=float(np.mean(shard.total(reals_near_fake) >= k)) if precision else nan,
                   recall=float(np.mean(shard.total(fakes_near_real) >= k)) if recall else nan, k=k, c=c)


# ---------------------------------------------------------------- registration

PRC_K = Setting("prc_k", 3, "precision/recall cover: other-set samples a k'-NN ball must hold", minimum=1)
PRC_C = Setting("prc_c", 3, "precision/recall cover: the ball reaches the k' = C x k nearest samples of its own set",
                minimum=1)
_KEYS = ("precision-cover", "recall-cover")


def _compute(run) -> dict:
    """Whichever of the two are chosen, from one real x fake pass (each side's radii only where needed)."""
    o, chosen = run.options, set(run.chosen)
    r = run.once("pr-cover", lambda: pr_cover(run.xr, run.xf, k=o.prc_k, c=o.prc_c, shard=run.shard,
                                              precision=_KEYS[0] in chosen, recall=_KEYS[1] in chosen))
    run.result.details["pr_cover"] = {"k": r.k, "c": r.c}
    return {key: value for key, value in zip(_KEYS, (r.precision, r.recall)) if key in chosen}


_PAPER = "Cheema & Urner, Precision Recall Cover: A Method For Assessing Generative Models, AISTATS 2023"
_BALL = ("prc_c", "prc_k")   # the ball reaches the (c x k)-th nearest other sample of its own set
register(Metric(
    _KEYS[0], "share of fakes whose k'-NN ball among the fakes holds at least k reals (Cheema & Urner 2023)", _compute,
    "precision_cover", lower_is_better=False, needs={FEATURES}, settings=(PRC_K, PRC_C),
    check_sizes=needs_more_than_k("precision cover", _BALL, ("fake",)), order=46, paper=_PAPER,
    function=lambda sets, o: pr_cover(sets.real, sets.fake, k=o.prc_k, c=o.prc_c, recall=False).precision))
register(Metric(
    _KEYS[1], "share of reals whose k'-NN ball among the reals holds at least k fakes (Cheema & Urner 2023)", _compute,
    "recall_cover", lower_is_better=False, needs={FEATURES}, settings=("prc_k", "prc_c"),
    check_sizes=needs_more_than_k("recall cover", _BALL, ("real",)), order=47, paper=_PAPER,
    function=lambda sets, o: pr_cover(sets.real, sets.fake, k=o.prc_k, c=o.prc_c, precision=False).recall))
register_group("pr-cover", _KEYS)
