"""The data-copying test C_T (Meehan, Chaudhuri, Dasgupta, "A Non-Parametric Test to Detect
Data-Copying in Generative Models", AISTATS 2020).

Needs a held-out real set ``P_n`` (``test``) besides the training set ``T`` and the generated set
``Q_m``. As in the authors' code: cells = k-means on ``T`` (every point belongs to its nearest
centre); per cell ``pi``, each test and generated point's distance to its nearest *training point
of the same cell*; the Mann-Whitney statistic ``U`` = number of (generated, test) pairs whose
generated distance is the larger, ties counting 1/2; ``Z = (U - (m n / 2 - 1/2)) / sqrt(m n (m + n
+ 1) / 12)`` (``m``, ``n`` the cell's generated and test counts; the 1/2 is the authors' continuity
correction; no tie correction of the variance); ``C_T`` = average of ``Z`` over the cells holding
enough generated samples, weighted by the cell's share of the test set. The authors keep cells with
``Q_m(pi) > tau``, ``tau = 20 / m``, i.e. more than 20 generated samples: here ``min_fake_per_cell
= 21``. Cells without test samples have weight 0 and are left out too (the authors' code refuses
them). Reading: ``C_T << 0`` -- generated samples sit closer to the training set than fresh samples
do (copying); ``~ 0`` -- no difference; ``> 0`` -- farther (underfitting). Defaults: 20 cells (the
authors used 50 cells for 10,000 test samples; at a few thousand samples 50 cells leave most cells
under the 21-sample floor), k-means++ seeding and Lloyd iterations with a fixed seed
(:func:`kmeans`); no PCA beforehand (some evaluation suites project to 64 dimensions first; the
paper's MNIST runs used a 64-d autoencoder code).

Memory: the inputs in float64 (one copy each), one distance block at a time, and one cell's
training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import option
from ..errors import SetTooSmall
from ._arrays import as_features, nonempty, same_dim
from .prdc import distance_blocks
from .registry import FEATURES, REAL_TEST, Metric, Setting, register

__all__ = ["CT", "NoUsableCell", "ct_score", "kmeans"]


class NoUsableCell(SetTooSmall, ValueError):
    """C_T cannot be computed: no k-means cell holds enough generated samples and a test sample."""


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
    import scipy.sparse

    x = nonempty(x, "x")
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
    t = nonempty(train, "train")
    p = nonempty(test, "test")
    q = nonempty(fake, "fake")
    same_dim(train=t, test=p, fake=q)
    if min_fake_per_cell < 1:
        raise ValueError(f"min_fake_per_cell must be >= 1, got {min_fake_per_cell}")
    if centres is None:
        if not 1 <= n_cells <= len(t):
            raise ValueError(f"n_cells must be within 1..{len(t)} (the training samples), got {n_cells}")
        centres, t_labels = kmeans(t, n_cells, seed, chunk_size=chunk_size)
    else:
        centres = as_features(centres, "centres")
        same_dim(train=t, centres=centres)
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


def _ct(run) -> float:
    ct = ct_score(run.xr, run.real_test.features, run.xf, n_cells=run.options.ct_cells,
                  min_fake_per_cell=CT_MIN_FAKE_PER_CELL, seed=run.options.seed)
    run.result.counts["real_test"] = len(run.real_test.features)
    run.result.details["ct"] = {"cells": ct.n_cells, "cells_used": int(ct.used.sum()),
                                "fake_fraction_used": ct.fake_fraction_used, "z": ct.z, "weight": ct.weight,
                                "fake_count": ct.fake_count, "test_count": ct.test_count,
                                "min_fake_per_cell": ct.min_fake_per_cell}
    return ct.value


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


def _ct_note(result) -> str | None:
    ct = result.details.get("ct")
    if ct is None:
        return None
    return (f"C_T: {ct['cells_used']} of {ct['cells']} k-means cells used (>= {ct['min_fake_per_cell']} fakes "
            f"each), {ct['fake_fraction_used']:.0%} of the fakes; < 0 means copying, > 0 underfitting "
            "(Meehan et al. 2020)")


CT_TEST = register(Metric(
    "ct", "the data-copying test C_T (Meehan et al. 2020); < 0 copying, > 0 underfitting", _ct, "C_T",
    needs={FEATURES, REAL_TEST}, check_sizes=_need_ct_cells, note=_ct_note, order=81,
    function=lambda sets, o: ct_score(sets.real, sets.real_test, sets.fake, n_cells=o.ct_cells,
                                      min_fake_per_cell=CT_MIN_FAKE_PER_CELL, seed=o.seed).value,
    settings=(Setting("ct_cells", 20, "C_T: k-means cells on the real set", minimum=1), "seed"),
    paper="Meehan et al., A Non-Parametric Test to Detect Data-Copying in Generative Models, AISTATS 2020"))
