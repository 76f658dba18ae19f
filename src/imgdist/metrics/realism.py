"""Per-image realism score of generated samples against the real k-NN manifold.

Paper: T. Kynkäänniemi, T. Karras, S. Laine, J. Lehtinen, T. Aila, "Improved Precision and Recall
Metric for Assessing Generative Models", NeurIPS 2019, section 5 and eq. 3:

    R(fake) = max over reals x of  r_k(x) / d(fake, x)

with ``r_k(x)`` the distance from ``x`` to its k-th nearest other real (k = 3 in the paper, the
radius precision/recall use; :func:`imgdist.metrics.prdc.knn_radii`). The paper notes that a few
reals with very large radii (outliers) would make the score meaningless, and prunes them: only
reals whose radius is at most the ``prune_percentile``-th percentile of the radii (the median,
50, as in the authors' code) enter the maximum. ``R >= 1`` means the fake lies inside the ball of a
kept real; larger is more "typical".

Differences from the authors' code (kept out on purpose, documented here): it computes the score
from *squared* distances, ``r^2 / (d^2 + 1e-5)``, i.e. (ignoring the epsilon) the square of eq. 3;
the ordering of fakes and the threshold at 1 are the same. Here eq. 3 is used as printed, with
``d = 0`` (a fake identical to a kept real of positive radius) giving ``inf``; a real of radius 0
(it has k duplicates) contributes 0.

Per fake this module also returns its nearest real (lowest index on ties), the distance to it,
and ``inside``: the precision test with the same ``k`` over *all* reals (strictly inside some real
k-NN ball, as :func:`imgdist.metrics.prdc.precision_recall` counts it; the mean of ``inside`` is
the precision). Because of the pruning, ``inside`` and ``realism >= 1`` are not the same test.

Memory: one chunked pass over fake x real distances (:func:`imgdist.metrics.prdc.distance_blocks`,
two float64 blocks at a time) plus the k-NN radii pass over the reals unless ``real_radii`` is
given; the inputs are converted to float64 (one copy each unless they already are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arrays import as_features
from .memorization import NEAREST_KEY, _need_nearest_real, real_nn
from .prdc import distance_blocks, given_radii, knn_radii
from .registry import FEATURES, Metric, needs_more_than_k, register

__all__ = ["Realism", "realism"]


@dataclass(frozen=True)
class Realism:
    """Per-fake realism (Kynkäänniemi et al. 2019, eq. 3) and nearest-real facts."""

    realism: np.ndarray       # per fake: max over kept reals of r_k(x) / d(fake, x)
    nearest_real: np.ndarray  # per fake: index of its nearest real
    distance: np.ndarray      # per fake: distance to it
    inside: np.ndarray        # per fake: strictly inside some real's k-NN ball (precision's test)
    k: int
    prune_percentile: float
    radius_threshold: float   # reals with a larger radius do not enter ``realism``


def realism(real, fake, k: int = 3, prune_percentile: float = 50.0, chunk_size: int | None = None, *,
            real_radii=None) -> Realism:
    """Realism score of every fake (Kynkäänniemi et al. 2019, eq. 3), chunked, never N x N.

    ``real_radii``: the reals' k-NN radii when already computed (e.g.
    :func:`imgdist.metrics.memorization.real_neighbours` ``(real, k).radii``), to skip that pass.
    """
    x = as_features(real, "real")
    y = as_features(fake, "fake")
    if len(y) == 0:
        raise ValueError("fake holds no samples")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: real {x.shape[1]}, fake {y.shape[1]}")
    if not 0.0 <= prune_percentile <= 100.0:
        raise ValueError(f"prune_percentile must be within [0, 100], got {prune_percentile}")
    r = knn_radii(x, k, chunk_size) if real_radii is None else given_radii(real_radii, len(x))
    threshold = float(np.percentile(r, prune_percentile))
    r_kept = np.where(r <= threshold, r, 0.0)[None, :]

    score = np.empty(len(y), dtype=np.float64)
    nearest = np.empty(len(y), dtype=np.int64)
    dist = np.empty(len(y), dtype=np.float64)
    inside = np.empty(len(y), dtype=bool)
    for start, d in distance_blocks(y, x, chunk_size):
        stop = start + len(d)
        rows = np.arange(len(d))
        j = d.argmin(axis=1)
        nearest[start:stop] = j
        dist[start:stop] = d[rows, j]
        inside[start:stop] = (d < r[None, :]).any(axis=1)
        zero = d == 0
        ratio = np.divide(r_kept, d, out=np.zeros_like(d), where=~zero)
        ratio[zero & (r_kept > 0)] = np.inf
        score[start:stop] = ratio.max(axis=1)
    return Realism(realism=score, nearest_real=nearest, distance=dist, inside=inside, k=k,
                   prune_percentile=float(prune_percentile), radius_threshold=threshold)


# ---------------------------------------------------------------- registration

#: reals with a radius above this percentile of the radii are left out (Kynkäänniemi et al.: the median)
PRUNE_PERCENTILE = 50.0


def realism_pass(run) -> Realism:
    """The fake x real pass of one run at precision's ``pr_k`` (shared with the per-image table and
    with memorization's nearest reals)."""
    k = run.options.pr_k
    r = run.once("realism", lambda: realism(run.xr, run.xf, k=k, prune_percentile=PRUNE_PERCENTILE,
                                            real_radii=real_nn(run, k).radii))
    run.once(NEAREST_KEY, lambda: (r.nearest_real, r.distance))  # memorization's metrics need no new pass
    return r


def _realism(run) -> float:
    r = realism_pass(run)
    run.result.details["realism"] = {"k": r.k, "prune_percentile": r.prune_percentile,
                                     "share_at_least_1": float(np.mean(r.realism >= 1.0))}
    return float(np.median(r.realism))


_NEED_PR_K = needs_more_than_k("realism", "pr_k", per_set=True)


def _need_k(options, counts, chosen) -> None:
    _need_nearest_real(options, counts, chosen)
    _NEED_PR_K(options, counts, chosen)


def _note(result) -> str | None:
    r = result.details.get("realism")
    if r is None:
        return None
    return (f"realism: median over fakes, k = {r['k']}, reals with a radius above percentile "
            f"{r['prune_percentile']:g} left out; {r['share_at_least_1']:.1%} of fakes score >= 1")


REALISM = register(Metric(
    "realism", "median realism score of the fakes (Kynkäänniemi et al. 2019, eq. 3)", _realism, "realism_median",
    lower_is_better=False, needs={FEATURES}, settings=("pr_k",), check_sizes=_need_k, note=_note, order=75,
    per_image={"realism": lambda run: realism_pass(run).realism,
               "nearest_real": lambda run: [run.name_of("real", j) for j in realism_pass(run).nearest_real],
               "distance": lambda run: realism_pass(run).distance,
               "inside_real_manifold": lambda run: realism_pass(run).inside},
    per_image_always=True,
    function=lambda sets, o: float(np.median(realism(sets.real, sets.fake, k=o.pr_k,
                                                     prune_percentile=PRUNE_PERCENTILE).realism)),
    paper="Kynkäänniemi et al., Improved Precision and Recall Metric for Assessing Generative Models, NeurIPS 2019"))
