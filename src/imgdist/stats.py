"""Streaming Gaussian statistics of features, exactly mergeable across shards and processes.

Only the count, the float64 sum and the float64 sum of outer products are kept: memory is
O(d^2) whatever the number of images, and two halves merge into exactly the statistics of the
whole (addition is all it takes).

Files are ``.npz`` with ``mu`` and ``sigma`` like pytorch-fid's and clean-fid's, so each tool reads
the others' files, plus ``n`` and the provenance fields.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .errors import ImgdistError, SourceError
from .provenance import Provenance


class GaussianStats:
    def __init__(self, dim: int | None = None, provenance: Provenance | None = None):
        self.provenance = provenance or Provenance()
        self.n = 0
        self._sum = None if dim is None else np.zeros(dim, np.float64)
        self._outer = None if dim is None else np.zeros((dim, dim), np.float64)
        self._moments = None  # (mu, sigma) for loaded files that carry no sums

    @property
    def dim(self) -> int | None:
        if self._moments is not None:
            return len(self._moments[0])
        return None if self._sum is None else len(self._sum)

    def update(self, features) -> "GaussianStats":
        """Add a batch of features (N x d; numpy or torch)."""
        if self._moments is not None and self._sum is None:
            raise ImgdistError("statistics loaded without a sample count cannot be updated")
        x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be N x d, got shape {x.shape}")
        if not len(x):
            return self
        if self._sum is None:
            self._sum = np.zeros(x.shape[1], np.float64)
            self._outer = np.zeros((x.shape[1], x.shape[1]), np.float64)
        if x.shape[1] != len(self._sum):
            raise ValueError(f"features have {x.shape[1]} dimensions, the statistics {len(self._sum)}")
        self.n += len(x)
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x
        return self

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        """Add ``other`` into these statistics (same provenance required)."""
        self.provenance.check_compatible(other.provenance, "merge")
        if other.n == 0:
            return self
        if other._sum is None or (self._sum is None and self.n) or self._moments is not None:
            raise ImgdistError("only statistics with a sample count (imgdist's own) can be merged")
        if self._sum is None:
            self._sum, self._outer = other._sum.copy(), other._outer.copy()
        else:
            self._sum += other._sum
            self._outer += other._outer
        self.n += other.n
        if not self.provenance.known:
            self.provenance = other.provenance
        return self

    @property
    def mu(self) -> np.ndarray:
        if self._moments is not None:
            return self._moments[0]
        if not self.n:
            raise ImgdistError("no images: the statistics are empty")
        return self._sum / self.n

    @property
    def sigma(self) -> np.ndarray:
        """Sample covariance (divisor n - 1, like numpy.cov and pytorch-fid)."""
        if self._moments is not None:
            return self._moments[1]
        if self.n < 2:
            raise ImgdistError(f"{self.n} image(s): a covariance needs at least 2 images")
        mu = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return (sigma + sigma.T) / 2

    def frechet_distance(self, other: "GaussianStats", force: bool = False) -> float:
        """Fréchet distance between the two Gaussians (FID when the features are Inception's)."""
        from .metrics.frechet import frechet_distance

        self.check_comparable(other, force)
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)

    def check_comparable(self, other: "GaussianStats", force: bool = False) -> None:
        """Raise on different provenance or dimensions; warn where the distance will be biased."""
        for warning in self.provenance.check_compatible(other.provenance, "FID", force):
            warnings.warn(warning, stacklevel=2)
        if self.dim != other.dim:
            raise ImgdistError(f"feature dimensions differ: {self.dim} vs {other.dim}")
        for stats in (self, other):
            if stats.n and stats.dim and stats.n <= stats.dim:
                warnings.warn(f"{stats.n} images for {stats.dim} feature dimensions: the covariance is "
                              "singular and the Fréchet distance is biased upwards; use more images than "
                              "dimensions for a number comparable with published ones", stacklevel=3)

    # ------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        meta = {f"provenance_{k}": ("" if v is None else v) for k, v in self.provenance.to_dict().items()}
        tmp = path + ".part.npz"
        np.savez(tmp, mu=self.mu, sigma=self.sigma, n=np.int64(self.n), **meta)
        os.replace(tmp, path)  # never a half-written statistics file

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GaussianStats":
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if "mu" not in data or "sigma" not in data:
                    raise SourceError(f"{path}: not a statistics file (needs arrays 'mu' and 'sigma', "
                                      f"has {', '.join(data.keys())})")
                mu = np.asarray(data["mu"], np.float64)
                sigma = np.asarray(data["sigma"], np.float64)
                n = int(data["n"]) if "n" in data else 0
                meta = {k[len("provenance_"):]: (str(data[k]) or None) for k in data.keys()
                        if k.startswith("provenance_")}
        except (OSError, ValueError, EOFError) as exc:
            raise SourceError(f"{path}: cannot read statistics ({' '.join(str(exc).split())})") from None
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise SourceError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
        return cls.from_moments(mu, sigma, n, Provenance.from_dict(meta) if meta else Provenance(imgdist_version=None))

    @classmethod
    def from_moments(cls, mu, sigma, n: int = 0, provenance: Provenance | None = None) -> "GaussianStats":
        """Statistics from a mean and covariance; with ``n`` the sums are rebuilt, so they merge."""
        stats = cls(provenance=provenance)
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        if n >= 2:
            stats.n = n
            stats._sum = n * mu
            stats._outer = (n - 1) * sigma + n * np.outer(mu, mu)
        else:
            stats._moments = (mu, sigma)
        return stats

    def __repr__(self) -> str:
        return f"GaussianStats(n={self.n}, dim={self.dim}, {self.provenance.summary()})"


def is_stats_file(path) -> bool:
    """A ``.npz`` holding ``mu`` and ``sigma`` (ours, pytorch-fid's or clean-fid's)."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).lower().endswith(".npz"):
        return False
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            return "mu" in data and "sigma" in data
    except (OSError, ValueError):
        return False
