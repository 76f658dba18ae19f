"""Streaming Gaussian statistics of features, exactly mergeable across shards and processes.

The state is the count ``n``, the float64 mean and the float64 centred scatter matrix
``sum (x - mean)(x - mean)^T``. Each batch contributes its own mean and centred scatter, and two
states combine by the pairwise update of T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating
formulae and a pairwise algorithm for computing sample variances" (Stanford CS report, 1979)::

    n = na + nb,  delta = mean_b - mean_a,  mean = mean_a + delta nb / n,
    scatter = scatter_a + scatter_b + delta delta^T na nb / n

Nothing is ever subtracted from a sum of squares, so a common offset in the features (1e6, say)
costs no digits, unlike the one-pass ``sum x x^T - n mu mu^T``. Memory is O(d^2) whatever the number
of images, and merged halves equal the whole to rounding.

Files are ``.npz`` with ``mu`` and ``sigma`` like pytorch-fid's and clean-fid's, so each tool reads
the others' files, plus ``n`` and the provenance fields. A file is untrusted input: ``load`` checks
it (see ``_checked_moments``) and refuses anything that is not a covariance with a one-line
:class:`SourceError` naming the file.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import ImgdistError, SourceError
from ..files import atomic_write
from ..metrics._arrays import PSD_RTOL, covariance_defect  # noqa: F401 - PSD_RTOL: part of this API
from .arrayfiles import npz_names, read_npz
from .devices import NO_FLOAT64
from .provenance import Provenance


#: Largest image count a statistics file may claim. The largest public image collections hold about
#: 6e9 images (LAION-5B: 5.85e9); 2**40 (1.1e12) is 190 times that, and embedding that many at a
#: generous 10,000 images a second would take 3.5 years. A larger n is no count but a corrupted or
#: forged one, and it would make the file outweigh any real set when statistics are merged.
MAX_IMAGES = 2**40

#: ``sqrt(tr Sigma) <= SPREAD_RTOL * |mu|`` counts as one point: two float32 ulps of the features'
#: size. Features of one image differ between batches only by rounding (a few ulps in some entries:
#: another batch size picks another kernel), which stays below that; any real spread is far above
#: it, even on top of a large common offset (features 1e6 +- 4 are 1.1e-6 of their size, 5 times
#: the bound), so the bound is tied to float32's resolution and to nothing looser.
SPREAD_RTOL = 2 * float(np.finfo(np.float32).eps)


class GaussianStats:
    def __init__(self, dim: int | None = None, provenance: Provenance | None = None):
        self.provenance = provenance or Provenance()
        self.n = 0
        self._mean = None if dim is None else np.zeros(dim, np.float64)
        self._scatter = None if dim is None else np.zeros((dim, dim), np.float64)
        self._moments = None  # (mu, sigma) for loaded files that carry no sample count

    @property
    def dim(self) -> int | None:
        if self._moments is not None:
            return len(self._moments[0])
        return None if self._mean is None else len(self._mean)

    def update(self, features) -> "GaussianStats":
        """Add a batch of features (N x d; numpy or torch)."""
        if self._moments is not None:
            raise ImgdistError("statistics loaded without a sample count cannot be updated")
        if hasattr(features, "detach"):
            features = features.detach().cpu().numpy()
        x = np.array(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be N x d, got shape {x.shape}")
        if not len(x):
            return self
        if self._mean is not None and x.shape[1] != len(self._mean):
            raise ValueError(f"features have {x.shape[1]} dimensions, the statistics {len(self._mean)}")
        mean = x.mean(axis=0)
        x -= mean  # x is our own float64 copy
        self._combine(len(x), mean, x.T @ x)
        return self

    def _combine(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        """Chan et al.'s pairwise update with a part of ``n_b`` samples (arrays are not kept)."""
        if not self.n:
            self.n, self._mean, self._scatter = n_b, mean_b.copy(), scatter_b.copy()
            return
        self.n = _pairwise_update(self.n, self._mean, self._scatter, n_b, mean_b, scatter_b)

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        """Add ``other`` into these statistics (same provenance required)."""
        self.provenance.check_compatible(other.provenance, "merge")
        if other.n == 0:
            return self
        if other._moments is not None or self._moments is not None:
            raise ImgdistError("only statistics with a sample count (imgdist's own) can be merged")
        if self.dim is not None and self.dim != other.dim:
            raise ImgdistError(f"feature dimensions differ: {self.dim} vs {other.dim}")
        self._combine(other.n, other._mean, other._scatter)
        if not self.provenance.known:
            self.provenance = other.provenance
        return self

    @property
    def state(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n, mean, scatter)``: what :meth:`from_state` rebuilds and what processes exchange."""
        if self._moments is not None:
            raise ImgdistError("statistics loaded without a sample count have no mergeable state")
        if self._mean is None:
            raise ImgdistError("no images: the statistics are empty")
        return self.n, self._mean.copy(), self._scatter.copy()

    @classmethod
    def from_state(cls, n: int, mean, scatter, provenance: Provenance | None = None) -> "GaussianStats":
        """Statistics from a count, a mean and a centred scatter matrix (the exact, mergeable state)."""
        stats = cls(provenance=provenance)
        stats.n = int(n)
        stats._mean = np.array(mean, dtype=np.float64)
        stats._scatter = np.array(scatter, dtype=np.float64)
        return stats

    @classmethod
    def count_and_mean(cls, n: int, mean, provenance: Provenance | None = None) -> "GaussianStats":
        """A set's count and mean, without a covariance (a space whose statistics are not one
        Gaussian, FWD's packets). ``sigma`` raises; such statistics cannot be merged or saved."""
        stats = cls(provenance=provenance)
        stats.n, stats._mean = int(n), np.asarray(mean, dtype=np.float64)
        return stats

    @classmethod
    def without_covariance(cls, features, provenance: Provenance | None = None) -> "GaussianStats":
        """The count, dimension and mean of a set, without its d x d scatter: for sets no chosen
        metric reads a Gaussian of (the scatter of one class cost 50 ms at d = 2048 in --per-class).
        ``sigma`` raises; such statistics cannot be merged or saved."""
        x = np.asarray(features)
        stats = cls(provenance=provenance)
        stats.n, stats._mean = len(x), x.mean(axis=0, dtype=np.float64)
        return stats

    @property
    def mu(self) -> np.ndarray:
        if self._moments is not None:
            return self._moments[0]
        if not self.n:
            raise ImgdistError("no images: the statistics are empty")
        return self._mean.copy()

    @property
    def sigma(self) -> np.ndarray:
        """Sample covariance (divisor n - 1, like numpy.cov and pytorch-fid)."""
        if self._moments is not None:
            return self._moments[1]
        if self.n < 2:
            raise ImgdistError(f"{self.n} image(s): a covariance needs at least 2 images")
        if self._scatter is None:
            raise ImgdistError("these statistics were made without a covariance (count and mean only)")
        return self._scatter / (self.n - 1)

    def frechet_distance(self, other: "GaussianStats", force: bool = False) -> float:
        """Fréchet distance between the two Gaussians (FID when the features are Inception's)."""
        from ..metrics.frechet import frechet_distance

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
        count = {"n": np.int64(self.n)} if self.n else {}  # no count known: no 'n', like pytorch-fid
        with atomic_write(path, "wb") as fh:  # never a half-written statistics file
            np.savez(fh, mu=self.mu, sigma=self.sigma, **count, **meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GaussianStats":
        """Statistics from an ``.npz`` file (imgdist's, pytorch-fid's or clean-fid's), checked.

        Anything that is not a readable archive with a finite mean, a symmetric positive
        semi-definite covariance of matching size, an optional integer count >= 2 and string
        provenance fields is refused with a one-line :class:`SourceError` naming the file.
        """
        path = os.fspath(path)
        arrays = _read_npz(path)
        if "mu" not in arrays or "sigma" not in arrays:
            raise SourceError(f"{path}: not a statistics file (needs arrays 'mu' and 'sigma', "
                              f"has {', '.join(sorted(arrays)) or 'none'})")
        mu, sigma, n = _checked_moments(arrays["mu"], arrays["sigma"], arrays.get("n"), path, SourceError)
        provenance = stored_provenance(arrays, path) or Provenance(imgdist_version=None)
        return cls._from_checked(mu, sigma, n, provenance)

    @classmethod
    def from_moments(cls, mu, sigma, n: int = 0, provenance: Provenance | None = None) -> "GaussianStats":
        """Statistics from a mean and covariance, checked like a file; with ``n`` (>= 2) they merge
        like any others (``n = 0``: count unknown)."""
        checked = _checked_moments(np.asarray(mu), np.asarray(sigma), np.asarray(n), "from_moments",
                                   ImgdistError)
        return cls._from_checked(*checked, provenance)

    @classmethod
    def _from_checked(cls, mu, sigma, n, provenance) -> "GaussianStats":
        if n:
            return cls.from_state(n, mu, sigma * (n - 1), provenance)
        stats = cls(provenance=provenance)
        stats._moments = (mu, sigma)
        return stats

    def __repr__(self) -> str:
        return f"GaussianStats(n={self.n}, dim={self.dim}, {self.provenance.summary()})"


def statistics_home(device_type: str) -> str | None:
    """None where the statistics of a device's features accumulate on that device; else the note
    that says where they do (for the result and the ``stats`` summary)."""
    if device_type in NO_FLOAT64:
        return f"statistics in float64 on the host: {device_type} has no float64"
    return None


class DeviceStats:
    """The streaming state of :class:`GaussianStats` (count, float64 mean, centred scatter) kept as
    torch tensors on the device that computes the features, updated by the same pairwise formula:
    no per-batch copy to the host and no host-side float64 products (3.3 s of 6.5 s for 10,000
    images on an H200, issue 16). :meth:`to_host` copies it once at the end. On a device without
    float64 (:data:`NO_FLOAT64`) the state lives on the host (issue 23)."""

    def __init__(self):
        self.n = 0
        self.mean = self.scatter = None

    def update(self, features) -> "DeviceStats":
        """Add a batch (an N x d torch tensor, on any device)."""
        import torch

        x = features.to("cpu") if features.device.type in NO_FLOAT64 else features
        x = x.to(torch.float64)
        if not len(x):
            return self
        mean = x.mean(dim=0)
        x = x - mean
        self._combine(len(x), mean, x.T @ x)
        return self

    def _combine(self, n_b: int, mean_b, scatter_b) -> None:
        if not self.n:
            self.n, self.mean, self.scatter = n_b, mean_b, scatter_b
            return
        self.n = _pairwise_update(self.n, self.mean, self.scatter, n_b, mean_b, scatter_b)

    def to_host(self, provenance: Provenance | None = None) -> GaussianStats:
        """The state as :class:`GaussianStats` (one copy to the host)."""
        if not self.n:
            return GaussianStats(provenance=provenance)
        return GaussianStats.from_state(self.n, self.mean.cpu().numpy(), self.scatter.cpu().numpy(), provenance)


def _pairwise_update(n_a: int, mean_a, scatter_a, n_b: int, mean_b, scatter_b) -> int:
    """Chan et al.'s pairwise update (see the module docstring), in place on ``mean_a`` and
    ``scatter_a``, for numpy arrays and torch tensors alike (host and device statistics share it);
    returns the new count."""
    n = n_a + n_b
    delta = mean_b - mean_a
    mean_a += delta * (n_b / n)
    scatter_a += scatter_b
    w = delta * float(np.sqrt(n_a * n_b / n))
    scatter_a += w[:, None] * w[None, :]  # w w^T: exactly symmetric, like the products above
    return n


def stored_provenance(arrays: dict[str, np.ndarray], path: str) -> Provenance | None:
    """The ``provenance_*`` fields of a file's arrays (a statistics file's, an ADM batch's), each a
    string, else a one-line SourceError; None where the file has none."""
    meta = {}
    for key in sorted(k for k in arrays if k.startswith("provenance_")):
        value = arrays[key]
        if value.ndim != 0 or value.dtype.kind != "U":
            raise SourceError(f"{path}: {key} must be a string, got {_describe(value)}")
        meta[key[len("provenance_"):]] = str(value) or None
    return Provenance.from_dict(meta) if meta else None


def _describe(value: np.ndarray) -> str:
    if value.ndim == 0 and value.dtype.kind in "biufU":
        return f"{value.dtype} {value.item()!r}"
    return f"{value.dtype} array of shape {value.shape}"


def _checked_moments(mu: np.ndarray, sigma: np.ndarray, n: np.ndarray | None, where: str,
                     error: type[ImgdistError]) -> tuple[np.ndarray, np.ndarray, int]:
    """The one gate for statistics from outside: ``(mu, sigma, n)`` as float64 / int, or ``error``
    with a one-line message starting with ``where`` (the file name)."""
    if mu.ndim != 1 or not len(mu) or mu.dtype.kind not in "iuf":
        raise error(f"{where}: mu must be a non-empty vector of real numbers, got {_describe(mu)}")
    d = len(mu)
    if sigma.dtype.kind not in "iuf":
        raise error(f"{where}: sigma must be a matrix of real numbers, got {_describe(sigma)}")
    if sigma.shape != (d, d):
        raise error(f"{where}: sigma has shape {sigma.shape}, expected ({d}, {d}) to match mu")
    count = 0
    if n is not None:
        if n.ndim != 0 or n.dtype.kind not in "iu" or (int(n) < 2 and int(n) != 0) or int(n) > MAX_IMAGES:
            huge = n.ndim == 0 and n.dtype.kind in "iu" and int(n) > MAX_IMAGES
            raise error(f"{where}: n must be the number of images, an integer >= 2, got {_describe(n)}"
                        + (" (no image set holds more than 2**40)" if huge else ""))
        count = int(n)  # 0: written by imgdist for statistics whose count was unknown
    mu, sigma = mu.astype(np.float64, copy=False), sigma.astype(np.float64, copy=False)
    for name, value in (("mu", mu), ("sigma", sigma)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            entries = "entry" if bad == 1 else "entries"
            raise error(f"{where}: {name} has {bad} non-finite {entries} (NaN or infinity)")
    defect = covariance_defect(sigma, "sigma")
    if defect:
        raise error(f"{where}: sigma {defect}")
    return mu, 0.5 * (sigma + sigma.T), count


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, or a one-line SourceError naming the file."""
    if os.path.isdir(path):
        raise SourceError(f"{path}: is a directory, not a statistics file")
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise SourceError(f"{path}: not a regular file")  # a FIFO would block the reader forever
    return read_npz(path)


#: arrays that make an ``.npz`` a set of images, not statistics: ``arr_0`` (an ADM batch, whose
#: stored ``mu``/``sigma`` ride along) and ``images`` (imgdist's own array files)
IMAGE_KEYS = ("arr_0", "images")


def npz_keys(path) -> frozenset | None:
    """The array names of ``path`` where it is an existing regular ``.npz`` file, else None (the
    image sources report those); a ``.npz`` file that cannot be read as an archive raises a
    one-line SourceError naming it."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).lower().endswith(".npz"):
        return None
    path = os.fspath(path)
    return frozenset(npz_names(path)) if os.path.isfile(path) else None


def is_stats_file(path) -> bool:
    """A ``.npz`` holding ``mu`` and ``sigma`` (ours, pytorch-fid's or clean-fid's) and no images.

    An ADM batch (``arr_0`` images, perhaps with stored ``mu``/``sigma``) is a set of images, not
    statistics: read as statistics only, its images would be ignored and its FD would be another
    network's (``imgdist.evaluation.adm`` reads it whole).

    False for anything that is not an existing regular ``.npz`` file (the image sources report
    those); a ``.npz`` file that cannot be read as an archive raises a one-line SourceError naming
    it, whichever way it was meant.
    """
    keys = npz_keys(path)
    return keys is not None and {"mu", "sigma"} <= keys and not keys & set(IMAGE_KEYS)
