"""Nearest neighbours and k-NN radii for the report: pure functions on arrays, in chunks.

Distances are Euclidean, computed in float64 as ``sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0))`` in row
blocks of ``chunk_size`` samples against a whole set (the same expansion as
:mod:`imgdist.metrics.prdc`), so the extra memory is O(chunk_size x N), never N x N. The default
block size keeps one float64 block under ``DEFAULT_BLOCK_BYTES`` (64 MiB).

k-NN radius ``r(x)`` (Kynkäänniemi et al. 2019; Naeem et al. 2020): the distance from ``x`` to its
k-th nearest other sample of its own set, as in :func:`imgdist.metrics.prdc.knn_radii`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics._arrays import as_features
from ..metrics.prdc import distance_blocks

__all__ = ["CrossNeighbours", "cross_neighbours", "distance_blocks"]


def _as_features(x, name: str) -> np.ndarray:
    a = as_features(x, name)
    if len(a) == 0:
        raise ValueError(f"{name} holds no samples")
    return a


@dataclass(frozen=True)
class CrossNeighbours:
    """Neighbours between a real and a fake set (from one chunked pass over fake x real)."""

    fake_nn: np.ndarray         # each fake's nearest real
    fake_nn_dist: np.ndarray    # distance to it
    fake_ratio: np.ndarray      # min over reals x of d(fake, x) / r(x): >= 1 means outside every real ball
    fake_ratio_real: np.ndarray  # the real attaining that minimum
    real_nn: np.ndarray         # each real's nearest fake
    real_nn_dist: np.ndarray    # distance to it
    real_covered: np.ndarray    # bool: nearest fake strictly inside the real's k-NN ball (coverage)


def _ratio(d: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``d / r`` with a zero radius (duplicates) giving 0 for d = 0 and infinity otherwise."""
    out = np.full(np.broadcast_shapes(d.shape, r.shape), np.inf)
    np.divide(d, r, out=out, where=np.broadcast_to(r > 0, out.shape))
    out[np.broadcast_to(r == 0, out.shape) & (d == 0)] = 0.0
    return out


def cross_neighbours(real, fake, real_radii, chunk_size: int | None = None, *,
                     coverage_radii=None) -> CrossNeighbours:
    """Fake-to-real and real-to-fake nearest neighbours, and each fake's distance in real k-NN radii.

    ``real_radii``: the reals' k-NN radii (:func:`imgdist.metrics.real_neighbours`) with precision's k: a fake counts for
    precision (Kynkäänniemi et al. 2019) exactly when ``fake_ratio < 1``. ``coverage_radii``: the
    radii with coverage's k, if it differs (default: ``real_radii``): a real is *covered* (Naeem et
    al. 2020) when its nearest fake is strictly closer than its radius.
    """
    x, y = _as_features(real, "real"), _as_features(fake, "fake")
    _same_dim(x, y)
    r = np.asarray(real_radii, dtype=np.float64)
    rc = r if coverage_radii is None else np.asarray(coverage_radii, dtype=np.float64)
    for name, radii in (("real_radii", r), ("coverage_radii", rc)):
        if radii.shape != (len(x),):
            raise ValueError(f"{name} must hold one radius per real sample ({len(x)}), got shape {radii.shape}")
    fake_nn = np.empty(len(y), dtype=np.int64)
    fake_nn_dist = np.empty(len(y), dtype=np.float64)
    fake_ratio = np.empty(len(y), dtype=np.float64)
    fake_ratio_real = np.empty(len(y), dtype=np.int64)
    real_nn = np.zeros(len(x), dtype=np.int64)
    real_nn_dist = np.full(len(x), np.inf)
    for start, d in distance_blocks(y, x, chunk_size):
        rows = np.arange(len(d))
        stop = start + len(d)
        j = d.argmin(axis=1)
        fake_nn[start:stop] = j
        fake_nn_dist[start:stop] = d[rows, j]
        ratio = _ratio(d, r[None, :])
        j = ratio.argmin(axis=1)
        fake_ratio_real[start:stop] = j
        fake_ratio[start:stop] = ratio[rows, j]
        i = d.argmin(axis=0)  # per real: nearest fake within this block
        best = d[i, np.arange(len(x))]
        better = best < real_nn_dist  # strict: the first fake wins ties, as argmin over all fakes
        real_nn[better] = start + i[better]
        real_nn_dist[better] = best[better]
    return CrossNeighbours(fake_nn=fake_nn, fake_nn_dist=fake_nn_dist, fake_ratio=fake_ratio,
                           fake_ratio_real=fake_ratio_real, real_nn=real_nn, real_nn_dist=real_nn_dist,
                           real_covered=real_nn_dist < rc)


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
