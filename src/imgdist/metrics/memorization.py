"""Is the generator copying its training set? Authenticity, the data-copying test C_T, and copies.

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

- **C_T** -- C. Meehan, K. Chaudhuri, S. Dasgupta, "A Non-Parametric Test to Detect Data-Copying in
  Generative Models", AISTATS 2020. Needs a held-out real set ``P_n`` (``test``) besides the
  training set ``T`` and the generated set ``Q_m``. As in the authors' code:
  cells = k-means on ``T`` (every point belongs to its nearest centre); per cell ``pi``, each test
  and generated point's distance to its nearest *training point of the same cell*; the
  Mann-Whitney statistic ``U`` = number of (generated, test) pairs whose generated distance is the
  larger, ties counting 1/2; ``Z = (U - (m n / 2 - 1/2)) / sqrt(m n (m + n + 1) / 12)`` (``m``, ``n``
  the cell's generated and test counts; the 1/2 is the authors' continuity correction; no tie
  correction of the variance); ``C_T`` = average of ``Z`` over the cells holding enough generated
  samples, weighted by the cell's share of the test set. The authors keep cells with
  ``Q_m(pi) > tau``, ``tau = 20 / m``, i.e. more than 20 generated samples: here
  ``min_fake_per_cell = 21``. Cells without test samples have weight 0 and are left out too (the
  authors' code refuses them). Reading: ``C_T << 0`` -- generated samples sit closer to the
  training set than fresh samples do (copying); ``~ 0`` -- no difference; ``> 0`` -- farther
  (underfitting). Defaults: 20 cells (the authors used 50 cells for 10,000 test samples; at a few
  thousand samples 50 cells leave most cells under the 21-sample floor), k-means++ seeding and
  Lloyd iterations with a fixed seed (:func:`kmeans`); no PCA beforehand (some evaluation suites
  project to 64 dimensions first; the paper's MNIST runs used a 64-d autoencoder code).

- **Copies** -- fakes whose distance to their nearest real is at most a threshold taken from the
  real set itself: the ``percentile``-th percentile (default 1st, numpy's linear interpolation)
  of each real's distance to its nearest other real. Inclusive (``<=``), so exact copies count
  even when the real set holds duplicates and the threshold is 0. Independent samples from the
  real distribution fall under it about ``percentile`` % of the time; a copying generator far
  more often.

Memory: the inputs are converted to float64 (one copy each, ``8 N d`` bytes, e.g. 0.8 GB for
50,000 x 2048) unless they already are; then one distance block of ``chunk_size`` rows
(default ~64 MiB) at a time, O(N) vectors, and in C_T one cell's training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ._arrays import as_features
from ..checks import option
from ..errors import SetTooSmall
from .prdc import distance_blocks
from .registry import FEATURES, REAL_TEST, Card, Metric, Section, Setting, register, register_group

__all__ = [
    "CT",
    "Authenticity",
    "Copies",
    "RealNeighbours",
    "authenticity",
    "copies",
    "ct_score",
    "kmeans",
    "nearest_real",
    "real_neighbours",
]


def _nonempty(x, name: str) -> np.ndarray:
    a = as_features(x, name)
    if len(a) == 0:
        raise ValueError(f"{name} holds no samples")
    return a


def _same_dim(**sets: np.ndarray) -> None:
    dims = {name: a.shape[1] for name, a in sets.items()}
    if len(set(dims.values())) > 1:
        raise ValueError("feature dimensions differ: " + ", ".join(f"{k} {v}" for k, v in dims.items()))


# ---------------------------------------------------------------- neighbour passes

class NoUsableCell(SetTooSmall, ValueError):
    """C_T cannot be computed: no k-means cell holds enough generated samples and a test sample."""


@dataclass(frozen=True)
class RealNeighbours:
    """Each real's neighbours within the real set (self excluded; a duplicate is a neighbour at 0)."""

    nn_index: np.ndarray     # nearest other real
    nn_distance: np.ndarray  # distance to it
    radii: np.ndarray        # distance to the k-th nearest other real (the k-NN radius of prdc)
    k: int


def real_neighbours(real, k: int = 3, chunk_size: int | None = None) -> RealNeighbours:
    """One chunked pass over the real set: nearest other real and k-NN radius of every real."""
    x = _nonempty(real, "real")
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
    x, y = _nonempty(real, "real"), _nonempty(fake, "fake")
    _same_dim(real=x, fake=y)
    index = np.empty(len(y), dtype=np.int64)
    dist = np.empty(len(y), dtype=np.float64)
    for start, d in distance_blocks(y, x, chunk_size):
        j = d.argmin(axis=1)
        index[start:start + len(d)] = j
        dist[start:start + len(d)] = d[np.arange(len(d)), j]
    return index, dist


def _given(real, fake, chunk_size, real_nn, fake_nearest):
    """The neighbour passes a metric needs, reusing those the caller already has."""
    x, y = _nonempty(real, "real"), _nonempty(fake, "fake")
    _same_dim(real=x, fake=y)
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


# ---------------------------------------------------------------- k-means

def _assign(x: np.ndarray, centres: np.ndarray, chunk_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each row (lowest index on ties) and the distance to it."""
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float64)
    for start, d in distance_blocks(x, centres, chunk_size):
        j = d.argmin(axis=1)
        labels[start:start + len(d)] = j
        dist[start:start + len(d)] = d[np.arange(len(d)), j]
    return labels, dist


def kmeans(x, k: int, seed: int = 0, max_iter: int = 100,
           chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k-means cells: ``(centres k x d, labels)``, every row labelled with its nearest centre.

    k-means++ seeding (D. Arthur, S. Vassilvitskii, SODA 2007: each next centre drawn with
    probability proportional to the squared distance to the nearest centre so far), then Lloyd
    iterations until no label changes or ``max_iter``. One seeded run (no restarts). A centre left
    without points moves to the point farthest from its own centre. Deterministic for a given
    ``seed``; distances in row blocks, never N x N.
    """
    x = _nonempty(x, "x")
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= {n} (the number of samples), got k = {k}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]), dtype=np.float64)
    centres[0] = x[rng.integers(n)]
    d2 = np.full(n, np.inf)
    for c in range(1, k + 1):
        _, d = _assign(x, centres[c - 1:c], chunk_size)
        np.minimum(d2, d * d, out=d2)
        if c == k:
            break
        total = d2.sum()
        # all remaining points coincide with chosen centres (duplicates): any point will do
        centres[c] = x[rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)]
    labels, dist = _assign(x, centres, chunk_size)
    for _ in range(max_iter):
        counts = np.bincount(labels, minlength=k)
        onehot = scipy.sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        sums = onehot @ x
        full = counts > 0
        centres[full] = sums[full] / counts[full, None]
        far = np.argsort(-dist, kind="stable")
        for c, i in zip(np.flatnonzero(~full), far):
            centres[c] = x[i]
        new, dist = _assign(x, centres, chunk_size)
        if np.array_equal(new, labels):
            break
        labels = new
    return centres, labels


# ---------------------------------------------------------------- C_T

@dataclass(frozen=True)
class CT:
    """The data-copying statistic C_T (Meehan et al. 2020) and its cells."""

    value: float             # weighted mean of z over the used cells
    z: np.ndarray            # per cell: Mann-Whitney Z (NaN where no generated or test sample)
    weight: np.ndarray       # per cell: share of the test set in it
    used: np.ndarray         # per cell: enters the average (>= min_fake_per_cell fakes, >= 1 test)
    fake_count: np.ndarray   # per cell
    test_count: np.ndarray
    train_count: np.ndarray
    min_fake_per_cell: int

    @property
    def n_cells(self) -> int:
        return len(self.z)

    @property
    def fake_fraction_used(self) -> float:
        """Share of the generated samples that fall in the used cells."""
        return float(self.fake_count[self.used].sum() / self.fake_count.sum())


def _mann_whitney_z(fake_dist: np.ndarray, test_dist: np.ndarray) -> float:
    """``Z`` of U = #(fake > test) + #(ties) / 2 under H0, with the authors' continuity correction."""
    m, n = len(fake_dist), len(test_dist)
    p = np.sort(test_dist)
    below = np.searchsorted(p, fake_dist, side="left")
    upto = np.searchsorted(p, fake_dist, side="right")
    u = below.sum() + 0.5 * (upto - below).sum()
    mean = m * n / 2.0 - 0.5
    return float((u - mean) / np.sqrt(m * n * (m + n + 1) / 12.0))


def ct_score(train, test, fake, n_cells: int = 20, min_fake_per_cell: int = 21, seed: int = 0,
             chunk_size: int | None = None, *, centres=None) -> CT:
    """C_T of Meehan et al. (AISTATS 2020): ``train`` = the generator's training set (the real set),
    ``test`` = held-out real samples it never saw, ``fake`` = generated samples.

    ``n_cells`` k-means cells fitted on ``train`` (:func:`kmeans` with ``seed``), or the cells of
    the given ``centres``. Raises ValueError when no cell holds ``min_fake_per_cell`` generated
    samples and a test sample.
    """
    t = _nonempty(train, "train")
    p = _nonempty(test, "test")
    q = _nonempty(fake, "fake")
    _same_dim(train=t, test=p, fake=q)
    if min_fake_per_cell < 1:
        raise ValueError(f"min_fake_per_cell must be >= 1, got {min_fake_per_cell}")
    if centres is None:
        if not 1 <= n_cells <= len(t):
            raise ValueError(f"n_cells must be within 1..{len(t)} (the training samples), got {n_cells}")
        centres, t_labels = kmeans(t, n_cells, seed, chunk_size=chunk_size)
    else:
        centres = as_features(centres, "centres")
        _same_dim(train=t, centres=centres)
        t_labels, _ = _assign(t, centres, chunk_size)
    k = len(centres)
    p_labels, _ = _assign(p, centres, chunk_size)
    q_labels, _ = _assign(q, centres, chunk_size)
    train_count = np.bincount(t_labels, minlength=k)
    test_count = np.bincount(p_labels, minlength=k)
    fake_count = np.bincount(q_labels, minlength=k)
    z = np.full(k, np.nan)
    for c in np.flatnonzero((train_count > 0) & (test_count > 0) & (fake_count > 0)):
        cell_train = t[t_labels == c]
        dists = []
        for rows in (q[q_labels == c], p[p_labels == c]):
            d = np.empty(len(rows))
            for start, block in distance_blocks(rows, cell_train, chunk_size):
                d[start:start + len(block)] = block.min(axis=1)
            dists.append(d)
        z[c] = _mann_whitney_z(*dists)
    weight = test_count / len(p)
    used = (fake_count >= min_fake_per_cell) & (test_count > 0)
    if not used.any():
        raise NoUsableCell(f"no cell holds {min_fake_per_cell} generated samples and a test sample "
                         f"({k} cells; generated per cell at most {fake_count.max()}): use fewer cells "
                         "or more samples")
    value = float(np.dot(weight[used], z[used]) / weight[used].sum())
    return CT(value=value, z=z, weight=weight, used=used, fake_count=fake_count, test_count=test_count,
              train_count=train_count, min_fake_per_cell=min_fake_per_cell)


# ---------------------------------------------------------------- registration

#: C_T uses only cells with more than 20 fakes (the authors' tau = 20 / m)
CT_MIN_FAKE_PER_CELL = 21


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


def _ct(run) -> float:
    ct = ct_score(run.xr, run.real_test.features, run.xf, n_cells=run.options.ct_cells,
                  min_fake_per_cell=CT_MIN_FAKE_PER_CELL, seed=run.options.seed)
    run.result.counts["real_test"] = len(run.real_test.features)
    run.result.details["ct"] = {"cells": ct.n_cells, "cells_used": int(ct.used.sum()),
                                "fake_fraction_used": ct.fake_fraction_used, "z": ct.z, "weight": ct.weight,
                                "fake_count": ct.fake_count, "test_count": ct.test_count,
                                "min_fake_per_cell": ct.min_fake_per_cell}
    return ct.value


def _need_nearest_real(options, counts, chosen) -> None:
    real = counts.get("real")
    if real is not None and real < 2:
        raise SetTooSmall("authenticity, copies and realism need at least 2 real images (each real's nearest "
                          "other real)")


def _need_ct_cells(options, counts, chosen) -> None:
    """What C_T (Meehan et al. 2020) needs of its sets, known from their sizes alone.

    A cell enters C_T only with ``CT_MIN_FAKE_PER_CELL`` (21) fakes: the authors' tau = 20 / m, the
    size from which the normal approximation of the cell's Mann-Whitney Z is trusted. Fewer fakes
    than that in all can fill no cell. The held-out images are the other sample of every cell's
    test, weighted by their share: fewer than the same 21 in all leave every cell's Z resting on a
    handful of images (one held-out image gave C_T 1.23), and fewer than ``ct_cells`` leave cells
    without any by construction. So: real >= ct_cells, held-out >= max(21, ct_cells), fakes >= 21.
    """
    real, fake, test = counts.get("real"), counts.get("fake"), counts.get("real_test")
    cells, floor = options.ct_cells, CT_MIN_FAKE_PER_CELL
    if real is not None and cells > real:
        raise SetTooSmall(f"ct: {option('ct_cells')} {cells} is more than the {real} real images")
    if fake is not None and fake < floor:
        raise SetTooSmall(f"ct: the fake set has {fake} images; C_T uses only k-means cells holding at least "
                          f"{floor} fakes, so it needs at least {floor}")
    if test is not None and test < max(floor, cells):
        raise SetTooSmall(f"ct: the held-out set (--real-test) has {test} image(s); C_T compares each cell's "
                          f"fakes with its held-out images and needs at least {max(floor, cells)} of them "
                          f"(at least {floor}, and one per cell on average: {option('ct_cells')} {cells})")


def _copies_note(result) -> str | None:
    from ..formatting import format_value as fv

    c = result.details.get("copies")
    if c is None:
        return None
    first = "; ".join(f"{p['fake']} ~ {p['real']} ({fv(p['distance'])})" for p in c["pairs"][:3])
    return (f"copies: {result.values.get('copies', 0)} of {result.counts.get('fake')} fakes ({c['fraction']:.2%}) "
            f"are nearer a real than {fv(c['threshold'])}, percentile {c['percentile']:g} of the reals' distances "
            "to their nearest other real" + (f"; closest: {first}" if first else ""))


def _ct_note(result) -> str | None:
    ct = result.details.get("ct")
    if ct is None:
        return None
    return (f"C_T: {ct['cells_used']} of {ct['cells']} k-means cells used (>= {ct['min_fake_per_cell']} fakes "
            f"each), {ct['fake_fraction_used']:.0%} of the fakes; < 0 means copying, > 0 underfitting "
            "(Meehan et al. 2020)")


def _report(ctx) -> Section:
    """Near-copies of real (training) images first: the finding a user most needs to see."""
    from ..formatting import format_value as fv

    nearest = (ctx.cross.fake_nn, ctx.cross.fake_nn_dist)
    found = copies(ctx.xr, ctx.xf, percentile=ctx.options.copies_percentile, real_nn=ctx.own, fake_nearest=nearest)
    authentic = authenticity(ctx.xr, ctx.xf, real_nn=ctx.own, fake_nearest=nearest)
    ct = ctx.result.details.get("ct")
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
CT_TEST = register(Metric(
    "ct", "the data-copying test C_T (Meehan et al. 2020); < 0 copying, > 0 underfitting", _ct, "C_T",
    needs={FEATURES, REAL_TEST}, check_sizes=_need_ct_cells, note=_ct_note, order=81,
    function=lambda sets, o: ct_score(sets.real, sets.real_test, sets.fake, n_cells=o.ct_cells,
                                      min_fake_per_cell=CT_MIN_FAKE_PER_CELL, seed=o.seed).value,
    settings=(Setting("ct_cells", 20, "C_T: k-means cells on the real set", minimum=1), "seed"),
    paper="Meehan et al., A Non-Parametric Test to Detect Data-Copying in Generative Models, AISTATS 2020"))
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
