"""Rarity score of generated samples: how rare (far from the bulk of the reals) each fake is.

Paper: J. Han, H. Choi, Y. Choi, J. Kim, J.-W. Ha, J. Choi, "Rarity Score: A New Metric to Evaluate
the Uncommonness of Synthesized Images", ICLR 2023; authors' code
hichoe95/Rarity-Score (``rarity_score.MANIFOLD.rarity``).

Definition, as the authors' code computes it (Euclidean distances):
- each real ``x`` has the radius ``r(x)``: the distance to its k-th nearest other real (the row of
  the sorted real x real distance matrix at index k, self-distance 0 at index 0; k = 3);
- a fake ``y`` lies inside ``x``'s ball when ``d(x, y) < r(x)`` (strict);
- the score of a fake inside at least one ball is the smallest radius among the balls containing
  it; fakes inside no ball have no score (the authors' code gives them 0 and leaves them out of its
  ranking; here they are NaN);
- the value is the mean score over the fakes inside at least one ball, and ``inside`` the share
  of fakes inside at least one ball (which equals improved precision with the same k).
Large radii sit where the reals are sparse: a higher score is a rarer fake, so neither
direction is "better"; the score is a lens on which fakes are uncommon.

Memory: two passes over float64 distance row blocks (:func:`.prdc.distance_blocks`, ~64 MiB a
block): real x real for the radii, fake x real for the scores (rows are fakes, so each fake's
smallest radius is found within one block). Extra memory is about two blocks plus O(N) vectors
and the float64 copies of the inputs, never N x M: with 10,000 reals and 50,000 fakes at d = 2048
the process peaked at 1.7 GiB, 1.4 GiB of it the features (float32, and their float64 copies).

Processes: ``shard`` splits both passes by blocks (:mod:`._shard`); every process gets the
single-process bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import option
from ._shard import ALONE, Shard
from .memorization import real_nn
from .prdc import _prepare, _radii, distance_blocks, given_radii
from .registry import FEATURES, Metric, Setting, needs_more_than_k, register

__all__ = ["Rarity", "rarity"]


@dataclass(frozen=True)
class Rarity:
    """Mean rarity score over the fakes inside some real ball, and what it is made of."""

    value: float          # mean score over the fakes inside (NaN if none is inside)
    inside: float         # share of fakes inside at least one real ball
    scores: np.ndarray    # per fake: smallest radius of a real ball containing it, NaN outside
    k: int


def rarity(real, fake, k: int = 3, chunk_size: int | None = None, *, shard: Shard = ALONE,
           real_radii=None) -> Rarity:
    """Rarity score (Han et al. 2023) of the fakes against the reals' k-NN balls.

    ``chunk_size``: rows per distance block (default: blocks of ~64 MiB). ``shard``: this
    process's share of the blocks; every process gets the whole result. ``real_radii``: the reals'
    k-NN radii when already computed (:func:`imgdist.metrics.memorization.real_neighbours`
    ``(real, k).radii``), to skip that pass.
    """
    x, y = _prepare(real, fake)
    radii = _radii(x, (k,), chunk_size, shard)[k] if real_radii is None else given_radii(real_radii, len(x))
    scores = np.zeros(len(y), dtype=np.float64)
    for start, d in distance_blocks(y, x, chunk_size, shard=shard):
        # a ball that does not contain the fake offers an infinite radius
        candidate = np.where(d < radii[None, :], radii[None, :], np.inf)
        scores[start:start + len(d)] = candidate.min(axis=1)
    scores = shard.total(scores)
    inside = np.isfinite(scores)
    scores[~inside] = np.nan
    value = float(scores[inside].mean()) if inside.any() else float("nan")
    return Rarity(value=value, inside=float(inside.mean()), scores=scores, k=k)


# ---------------------------------------------------------------- registration

RARITY_K = Setting("rarity_k", 3, "rarity: k nearest neighbours (each real's ball reaches its k-th nearest other real)",
                   minimum=1)


def rarity_pass(run) -> Rarity:
    """The one rarity pass of a run (the value and the per-image column share it)."""
    k = run.options.rarity_k
    # realism's real x real pass (run before this one) holds these radii when its k is the same
    radii = real_nn(run, k).radii if ("real_nn", k) in run.shared_keys() else None
    return run.once(("rarity", k), lambda: rarity(run.xr, run.xf, k=k, shard=run.shard, real_radii=radii))


def _compute(run) -> float:
    r = rarity_pass(run)
    run.result.details["rarity"] = {"k": r.k, "inside": r.inside}
    if r.inside == 0:
        run.result.warnings.append(f"rarity: no fake lies inside any real's k-NN ball ({option('rarity_k')} {r.k}): "
                                   "the rarity score is undefined")
    return r.value


def _note(result) -> str | None:
    r = result.details.get("rarity")
    if r is None:
        return None
    return (f"rarity: radius of the smallest real k-NN ball (k = {r['k']}) holding a fake, mean over the "
            f"{r['inside']:.1%} of fakes inside one; higher: rarer fakes (per fake in --per-image, nan outside)")


RARITY = register(Metric(
    "rarity", "rarity score: radius of the smallest real k-NN ball holding each fake, mean over the fakes inside "
    "one (Han et al. 2023)", _compute, "rarity", lower_is_better=None, needs={FEATURES}, settings=(RARITY_K,),
    check_sizes=needs_more_than_k("rarity", "rarity_k"), note=_note,
    per_image={"rarity": lambda run: rarity_pass(run).scores}, order=76,
    function=lambda sets, o: rarity(sets.real, sets.fake, k=o.rarity_k).value,
    paper="Han et al., Rarity Score: A New Metric to Evaluate the Uncommonness of Synthesized Images, ICLR 2023"))
