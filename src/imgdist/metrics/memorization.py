"""Is the generator copying its training set? Authenticity and copies (the data-copying test C_T
is :mod:`.ct`; the three form the group ``memorization``).

Here the *real* set is the generator's training set. Distances are Euclidean in feature space,
float64, computed in row blocks by :func:`imgdist.metrics.prdc.distance_blocks` (never N x N).

Papers and the choices made where they leave room:

- **Authenticity** -- A. M. Alaa, B. van Breugel, E. Saveliev, M. van der Schaar, "How Faithful is
  your Synthetic Data? Sample-level Metrics for Evaluating and Auditing Generative Models",
  ICML 2022. A fake is *unauthentic* (a likely copy) when it is at least as close to its nearest
  real ``x*`` as ``x*`` is to its own nearest other real; authenticity is the fraction of
  authentic fakes: ``d(fake, x*) > d(x*, NN_real(x*))``, strict, so a tie counts as unauthentic.
  With several reals at the same smallest distance, ``x*`` is the lowest index. This is the
  per-fake definition of the paper and of the ``AuthPct`` metric in later evaluation suites
  (there as a percentage). The paper's released code computes something else: it averages over
  *reals*, taking each real's nearest fake and then indexing the real-to-real distances with that
  fake's index -- its numbers are not comparable with these. Reading: even a fresh sample of the
  real distribution is not fully "authentic" (about 0.7 for 1,000 Fashion-MNIST test images
  against 1,000 training images, in efficientnet-lite0 features and in pixels), so compare with a
  held-out real set's value, not with 1; near copies score about 0.

- **Copies** -- fakes whose distance to their nearest real is at most a threshold taken from the
  real set itself: the ``percentile``-th percentile (default 1st, numpy's linear interpolation)
  of each real's distance to its nearest other real. Inclusive (``<=``), so exact copies count
  even when the real set holds duplicates and the threshold is 0. Independent samples from the
  real distribution fall under it about ``percentile`` % of the time; a copying generator far
  more often.

Memory: the inputs are converted to float64 (one copy each, ``8 N d`` bytes, e.g. 0.8 GB for
50,000 x 2048) unless they already are; then one distance block of ``chunk_size`` rows
(default ~64 MiB) at a time and O(N) vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arrays import nonempty, same_dim
from ..errors import SetTooSmall
from .prdc import distance_blocks
from .ct import CT_TEST
from .registry import FEATURES, Card, Metric, Section, Setting, register, register_group

__all__ = [
    "Authenticity",
    "Copies",
    "RealNeighbours",
    "authenticity",
    "copies",
    "nearest_real",
    "real_neighbours",
]


# ---------------------------------------------------------------- neighbour passes

@dataclass(frozen=True)
class RealNeighbours:
    """Each real's neighbours within the real set (self excluded; a duplicate is a neighbour at 0)."""

    nn_index: np.ndarray     # nearest other real
    nn_distance: np.ndarray  # distance to it
    radii: np.ndarray        # distance to the k-th nearest other real (the k-NN radius of prdc)
    k: int


def real_neighbours(real, k: int = 3, chunk_size: int | None = None) -> RealNeighbours:
    """One chunked pass over the real set: nearest other real and k-NN radius of every real."""
    x = nonempty(real, "real")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= len(x):
        raise ValueError(f"k = {k} needs more than {k} real samples, got {len(x)}")
    nn_index = np.empty(len(x), dtype=np.int64)
    nn_distance = np.empty(len(x), dtype=np.float64)
    radii = np.empty(len(x), dtype=np.float64)
    for start, d in distance_blocks(x, x, chunk_size, same=True):
        rows = np.arange(len(d))
        stop = start + len(d)
        d[rows, start + rows] = np.inf  # self excluded
        j = d.argmin(axis=1)
        nn_index[start:stop] = j
        nn_distance[start:stop] = d[rows, j]
        radii[start:stop] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return RealNeighbours(nn_index=nn_index, nn_distance=nn_distance, radii=radii, k=k)


def nearest_real(real, fake, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each fake's nearest real (lowest index on ties) and the distance to it."""
    x, y = nonempty(real, "real"), nonempty(fake, "fake")
    same_dim(real=x, fake=y)
    index = np.empty(len(y), dtype=np.int64)
    dist = np.empty(len(y), dtype=np.float64)
    for start, d in distance_blocks(y, x, chunk_size):
        j = d.argmin(axis=1)
        index[start:start + len(d)] = j
        dist[start:start + len(d)] = d[np.arange(len(d)), j]
    return index, dist


def _given(real, fake, chunk_size, real_nn, fake_nearest):
    """The neighbour passes a metric needs, reusing those the caller already has."""
    x, y = nonempty(real, "real"), nonempty(fake, "fake")
    same_dim(real=x, fake=y)
    if real_nn is None:
        if len(x) < 2:
            raise ValueError(f"real needs at least 2 samples (each real's nearest other real), got {len(x)}")
        real_nn = real_neighbours(x, 1, chunk_size)
    elif np.shape(real_nn.nn_distance) != (len(x),):
        raise ValueError(f"real_nn holds {np.shape(real_nn.nn_distance)} distances for {len(x)} real samples")
    if fake_nearest is None:
        fake_nearest = nearest_real(x, y, chunk_size)
    index, dist = (np.asarray(a) for a in fake_nearest)
    if index.shape != (len(y),) or dist.shape != (len(y),):
        raise ValueError(f"fake_nearest must hold one index and one distance per fake ({len(y)})")
    if len(index) and (index.min() < 0 or index.max() >= len(x)):
        raise ValueError("fake_nearest holds an index outside the real set")
    return real_nn, index.astype(np.int64), dist.astype(np.float64)


# ---------------------------------------------------------------- authenticity

@dataclass(frozen=True)
class Authenticity:
    """Authenticity (Alaa et al. 2022): the fraction of fakes farther from their nearest real than
    that real is from its own nearest other real."""

    value: float
    authentic: np.ndarray         # per fake
    nearest_real: np.ndarray      # per fake: index of its nearest real
    distance: np.ndarray          # per fake: distance to it
    real_nn_distance: np.ndarray  # per fake: that real's distance to its nearest other real


def authenticity(real, fake, chunk_size: int | None = None, *, real_nn: RealNeighbours | None = None,
                 fake_nearest: tuple[np.ndarray, np.ndarray] | None = None) -> Authenticity:
    """Authenticity of ``fake`` against the training set ``real`` (Alaa et al., ICML 2022).

    ``real_nn`` (from :func:`real_neighbours`) and ``fake_nearest`` (``(index, distance)`` per fake,
    from :func:`nearest_real` or :class:`imgdist.metrics.realism.Realism`) skip the passes already
    done elsewhere.
    """
    real_nn, index, dist = _given(real, fake, chunk_size, real_nn, fake_nearest)
    own = real_nn.nn_distance[index]
    authentic = dist > own
    return Authenticity(value=float(authentic.mean()), authentic=authentic, nearest_real=index,
                        distance=dist, real_nn_distance=own)


# ---------------------------------------------------------------- copies

@dataclass(frozen=True)
class Copies:
    """Fakes at most ``threshold`` from their nearest real, closest first."""

    threshold: float        # the percentile of the reals' nearest-other-real distances
    percentile: float
    fake_index: np.ndarray  # the copies, by increasing distance
    real_index: np.ndarray  # the real each one copies (its nearest)
    distance: np.ndarray
    n_fake: int

    @property
    def count(self) -> int:
        return len(self.fake_index)

    @property
    def fraction(self) -> float:
        return self.count / self.n_fake


def copies(real, fake, percentile: float = 1.0, chunk_size: int | None = None, *,
           real_nn: RealNeighbours | None = None,
           fake_nearest: tuple[np.ndarray, np.ndarray] | None = None) -> Copies:
    """Fakes whose nearest-real distance is at most the ``percentile``-th percentile of the reals'
    own nearest-other-real distances (default: the 1st). ``real_nn`` / ``fake_nearest`` as in
    :func:`authenticity`."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {percentile}")
    real_nn, index, dist = _given(real, fake, chunk_size, real_nn, fake_nearest)
    threshold = float(np.percentile(real_nn.nn_distance, percentile))
    hit = np.flatnonzero(dist <= threshold)
    hit = hit[np.argsort(dist[hit], kind="stable")]
    return Copies(threshold=threshold, percentile=float(percentile), fake_index=hit,
                  real_index=index[hit], distance=dist[hit], n_fake=len(dist))


# ---------------------------------------------------------------- registration

#: the shared-pass key of each fake's nearest real (realism's pass fills it too, see realism_pass)
NEAREST_KEY = "nearest-real"


def real_nn(run, k: int | None = None) -> RealNeighbours:
    """The real x real pass of one run at radius ``k``; None: any pass already made (authenticity
    and copies need only each real's nearest other real, which every pass holds), else k = 1, so
    that 2 reals suffice."""
    if k is None:
        k = next((key[1] for key in run.shared_keys() if isinstance(key, tuple) and key[0] == "real_nn"), 1)
    return run.once(("real_nn", k), lambda: real_neighbours(run.xr, k=k))


def fake_nearest(run) -> tuple[np.ndarray, np.ndarray]:
    """Each fake's nearest real and the distance, once per run (realism's pass fills it where it ran
    first: metrics run in table order, and realism's comes before these)."""
    return run.once(NEAREST_KEY, lambda: nearest_real(run.xr, run.xf))


def _authenticity(run) -> Authenticity:
    return run.once("authenticity", lambda: authenticity(run.xr, run.xf, real_nn=real_nn(run),
                                                         fake_nearest=fake_nearest(run)))


def _copies(run) -> Copies:
    return run.once("copies", lambda: copies(run.xr, run.xf, percentile=run.options.copies_percentile,
                                             real_nn=real_nn(run), fake_nearest=fake_nearest(run)))


def _copies_value(run) -> int:
    c = _copies(run)
    run.result.details["copies"] = {
        "threshold": c.threshold, "percentile": c.percentile, "fraction": c.fraction,
        # the closest first; the full list is in --per-image
        "pairs": [{"fake": run.name_of("fake", i), "real": run.name_of("real", j), "distance": float(d)}
                  for i, j, d in zip(c.fake_index[:100], c.real_index[:100], c.distance[:100])],
        "fake_index": c.fake_index.tolist(), "real_index": c.real_index.tolist(),
    }
    return c.count


def _is_copy(run) -> np.ndarray:
    flags = np.zeros(len(run.xf), dtype=bool)
    flags[_copies(run).fake_index] = True
    return flags


def _need_nearest_real(options, counts, chosen) -> None:
    real = counts.get("real")
    if real is not None and real < 2:
        raise SetTooSmall("authenticity, copies and realism need at least 2 real images (each real's nearest "
                          "other real)")


def _copies_note(result) -> str | None:
    from ..formatting import format_value as fv

    c = result.details.get("copies")
    if c is None:
        return None
    first = "; ".join(f"{p['fake']} ~ {p['real']} ({fv(p['distance'])})" for p in c["pairs"][:3])
    return (f"copies: {result.values.get('copies', 0)} of {result.counts.get('fake')} fakes ({c['fraction']:.2%}) "
            f"are nearer a real than {fv(c['threshold'])}, percentile {c['percentile']:g} of the reals' distances "
            "to their nearest other real" + (f"; closest: {first}" if first else ""))


def _report(ctx) -> Section:
    """Near-copies of real (training) images first: the finding a user most needs to see."""
    from ..formatting import format_value as fv

    nearest = (ctx.cross.fake_nn, ctx.cross.fake_nn_dist)
    found = copies(ctx.xr, ctx.xf, percentile=ctx.options.copies_percentile, real_nn=ctx.own, fake_nearest=nearest)
    authentic = authenticity(ctx.xr, ctx.xf, real_nn=ctx.own, fake_nearest=nearest)
    ct = ctx.result.details.get(CT_TEST.name)  # C_T's details, where it ran
    ct_note = (f" C_T (Meehan et al. 2020): {fv(ctx.result.values[CT_TEST.name])} over {ct['cells_used']} of "
               f"{ct['cells']} cells (strongly negative: copying; about 0: fine; positive: underfitting)."
               if ct and CT_TEST.name in ctx.result.values else "")
    note = (f"Fakes nearer a real image than {fv(found.threshold)}, percentile {found.percentile:g} of the reals' "
            f"distances to their nearest other real: {found.count} of {found.n_fake}, closest first. Authenticity "
            "(Alaa et al. 2022, the share of fakes farther from their nearest real than that real from its own "
            f"nearest real): {fv(authentic.value)}.{ct_note}")
    cards = tuple(Card((("fake", int(i)), ("real", int(j))), (("distance", d),))
                  for i, j, d in zip(found.fake_index[:ctx.per_section], found.real_index[:ctx.per_section],
                                     found.distance[:ctx.per_section]))
    return Section("copies", "Copies of real images", note, cards, placement="top")


_ALAA = ("Alaa et al., How Faithful is your Synthetic Data? Sample-level Metrics for Evaluating and Auditing "
         "Generative Models, ICML 2022")
AUTHENTICITY = register(Metric(
    "authenticity", "share of fakes farther from their nearest real than that real from its own (Alaa et al. 2022); "
    "low: copies", lambda run: _authenticity(run).value, "authenticity", lower_is_better=False, needs={FEATURES},
    check_sizes=_need_nearest_real, per_image={"authentic": lambda run: _authenticity(run).authentic},
    per_image_always=True, order=80, paper=_ALAA,
    function=lambda sets, o: authenticity(sets.real, sets.fake).value))
COPIES = register(Metric(
    "copies", "fakes nearer a real than a low percentile of the reals' nearest-neighbour distances", _copies_value,
    "copies", lower_is_better=True, needs={FEATURES}, check_sizes=_need_nearest_real, note=_copies_note,
    settings=(Setting("copies_percentile", 1.0, "copies: a fake nearer a real than this percentile of the reals' "
                      "nearest-neighbour distances counts as a copy", kind="number", minimum=0.0, maximum=100.0),),
    per_image={"copy": _is_copy}, per_image_always=True, report=_report, order=82,
    function=lambda sets, o: copies(sets.real, sets.fake, percentile=o.copies_percentile).count,
    paper="none: imgdist's own rule, a threshold from the real set itself (the reals' nearest-neighbour "
          "distances)"))
register_group("memorization", (AUTHENTICITY.name, CT_TEST.name, COPIES.name))
