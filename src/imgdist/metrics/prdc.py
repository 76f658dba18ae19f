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
    k: int


def _chunk(chunk_size: int | None, n_cols: int) -> int:
    if chunk_size is None:
        chunk_size = DEFAULT_BLOCK_BYTES // (8 * max(n_cols, 1))
    return max(1, int(chunk_size))


def distance_blocks(a: np.ndarray, b: np.ndarray, chunk_size: int | None = None, *, same: bool = False):
    """Yield ``(start, D)``: float64 distances from rows ``a[start:start+len(D)]`` to every row of ``b``.

    ``same=True`` (``a`` is ``b``) sets each row's self-distance to exactly 0.
    """
    sq_a = np.einsum("ij,ij->i", a, a)
    sq_b = sq_a if same else np.einsum("ij,ij->i", b, b)
    c = _chunk(chunk_size, len(b))
    for start in range(0, len(a), c):
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
        yield start, np.sqrt(d2, out=d2)


def _check_k(k: int, n: int, name: str) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        raise ValueError(f"k = {k} needs more than {k} {name + ' ' if name else ''}samples, got {n}")


def knn_radii(x: np.ndarray, k: int, chunk_size: int | None = None) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row (``prdc``'s radii)."""
    x = as_features(x, "x")
    _check_k(k, len(x), "")
    radii = np.empty(len(x), dtype=np.float64)
    for start, d in distance_blocks(x, x, chunk_size, same=True):
        # the (k+1)-th smallest value of the row, self-distance 0 included
        radii[start : start + len(d)] = np.partition(d, k, axis=1)[:, k]
    return radii


def _prepare(real, fake):
    x = as_features(real, "real")
    y = as_features(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    return x, y


def _scan(x, y, r_real, r_fake, chunk_size):
    """One chunked pass over real-to-fake distances collecting all four statistics' counts."""
    fake_hits = np.zeros(len(y), dtype=np.int64)  # reals whose ball holds each fake
    recalled = np.zeros(len(x), dtype=bool)
    covered = np.zeros(len(x), dtype=bool)
    for start, d in distance_blocks(x, y, chunk_size):
        stop = start + len(d)
        inside = d < r_real[start:stop, None]
        fake_hits += inside.sum(axis=0)
        covered[start:stop] = inside.any(axis=1)  # nearest fake closer than r(x)
        if r_fake is not None:
            recalled[start:stop] = (d < r_fake[None, :]).any(axis=1)
    return fake_hits, recalled, covered


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, chunk_size: int | None = None
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) as ``(precision, recall)``."""
    x, y = _prepare(real, fake)
    r_real = knn_radii(x, k, chunk_size)
    r_fake = knn_radii(y, k, chunk_size)
    fake_hits, recalled, _ = _scan(x, y, r_real, r_fake, chunk_size)
    return float((fake_hits > 0).mean()), float(recalled.mean())


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, chunk_size: int | None = None
) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) as ``(density, coverage)``; needs real radii only."""
    x, y = _prepare(real, fake)
    r_real = knn_radii(x, k, chunk_size)
    fake_hits, _, covered = _scan(x, y, r_real, None, chunk_size)
    return float((1.0 / k) * fake_hits.mean()), float(covered.mean())


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk_size: int | None = None) -> PRDC:
    """All four metrics with one ``k`` (like ``prdc.compute_prdc(real, fake, nearest_k=k)``).

    ``chunk_size`` is the number of rows per distance block (default: blocks of ~64 MiB).
    """
    x, y = _prepare(real, fake)
    r_real = knn_radii(x, k, chunk_size)
    r_fake = knn_radii(y, k, chunk_size)
    fake_hits, recalled, covered = _scan(x, y, r_real, r_fake, chunk_size)
    return PRDC(
        precision=float((fake_hits > 0).mean()),
        recall=float(recalled.mean()),
        density=float((1.0 / k) * fake_hits.mean()),
        coverage=float(covered.mean()),
        k=k,
    )
