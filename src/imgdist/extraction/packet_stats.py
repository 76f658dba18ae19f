"""Streaming block-diagonal Gaussian statistics: one Gaussian per wavelet packet (FWD).

The Fréchet Wavelet Distance fits a Gaussian to each of ``P`` packets of ``D`` coefficients and
ignores correlations between packets, so its statistics are ``P`` means and ``P`` covariances of
``D x D``: ``P x D x D x 8`` bytes in float64, whatever the number of images. At level 4 that is
``256 x (3 x H/16 x W/16)^2 x 8`` bytes: 2.4 MB at 64 px, 151 MB at 128 px, 1.21 GB at 256 px
(``D = 768``), 19.3 GB at 512 px. pytorchfwd instead keeps every image's packets until the end
(63 GB for 10,000 images at 512 px). :func:`check_memory` refuses a layout over ``max_bytes``
before any image is read (``IMGDIST_FWD_MAX_BYTES`` overrides the default of 4 GiB per set).

The state is the count, the float64 means and the centred scatter matrices, kept as torch tensors
on the device where the coefficients are computed (MPS, which has no float64, keeps them on the
host), updated in place by Chan et al.'s pairwise formula (see :mod:`.stats`) for all packets at
once: a batch adds its own centred scatter with one batched product and the rank-one correction
``w w^T``, so no second ``P x D x D`` array is ever allocated. Two states merge by the same
formula. Covariances use the divisor ``n - 1``, like ``torch.cov`` in pytorchfwd.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..environment import env_positive_int
from ..errors import ImgdistError
from .devices import NO_FLOAT64

__all__ = ["DEFAULT_MAX_BYTES", "Covariances", "PacketStats", "check_memory", "max_bytes", "stats_bytes"]

#: default bound on one set's packet statistics (the scatter matrices)
DEFAULT_MAX_BYTES = 4 * 2**30


def max_bytes() -> int:
    """The bound now: ``IMGDIST_FWD_MAX_BYTES`` or :data:`DEFAULT_MAX_BYTES`."""
    return env_positive_int("IMGDIST_FWD_MAX_BYTES", DEFAULT_MAX_BYTES)


def stats_bytes(packets: int, dim: int) -> int:
    """Bytes of one set's statistics: the float64 ``P x D x D`` scatter and ``P x D`` mean."""
    return 8 * packets * dim * (dim + 1)


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"


def check_memory(packets: int, dim: int, limit: int | None = None) -> int:
    """The bytes one set's statistics take, or a one-line error when over ``limit`` (default
    :func:`max_bytes`)."""
    limit = max_bytes() if limit is None else int(limit)
    need = stats_bytes(packets, dim)
    if need > limit:
        raise ImgdistError(f"fwd: the wavelet packet statistics need {packets} packets x {dim}^2 float64 = "
                           f"{_size(need)} per set, over the limit of {_size(limit)}; resize the images "
                           "smaller (fwd_resize), raise fwd_level (each level divides the size by 4), or "
                           "set IMGDIST_FWD_MAX_BYTES")
    return need


def _home(device) -> torch.device:
    device = torch.device(device if device is not None else "cpu")
    return torch.device("cpu") if device.type in NO_FLOAT64 else device


class PacketStats:
    """One Gaussian per packet, streamed: ``update`` with ``N x P x D`` coefficients, ``merge``
    another state, read ``mu`` (``P x D``) and ``sigma`` (``P x D x D``) as float64 numpy."""

    def __init__(self, packets: int, dim: int, device=None, limit: int | None = None):
        check_memory(packets, dim, limit)
        self.packets, self.dim = int(packets), int(dim)
        self.device = _home(device)
        self.n = 0
        self.mean = torch.zeros(self.packets, self.dim, dtype=torch.float64, device=self.device)
        self.scatter = torch.zeros(self.packets, self.dim, self.dim, dtype=torch.float64, device=self.device)

    @property
    def nbytes(self) -> int:
        return stats_bytes(self.packets, self.dim)

    def _check_layout(self, packets: int, dim: int, what: str) -> None:
        if (packets, dim) != (self.packets, self.dim):
            raise ImgdistError(f"fwd: {what} has {packets} packets of {dim} coefficients, these statistics "
                               f"{self.packets} of {self.dim} (images of another size or level: set "
                               "fwd_resize so that both sets share one size)")

    @torch.no_grad()
    def update(self, coefficients: torch.Tensor) -> "PacketStats":
        """Add a batch of ``N x P x D`` packet coefficients (any device; accumulated on this
        state's device in float64)."""
        if coefficients.ndim != 3:
            raise ValueError(f"coefficients must be N x P x D, got shape {tuple(coefficients.shape)}")
        self._check_layout(coefficients.shape[1], coefficients.shape[2], "this batch")
        n_b = coefficients.shape[0]
        if not n_b:
            return self
        x = coefficients.to(self.device, torch.float64)
        mean_b = x.mean(dim=0)                              # P x D
        centred = (x - mean_b).transpose(0, 1)              # P x N x D
        self._combine(n_b, mean_b, lambda s: s.baddbmm_(centred.transpose(1, 2), centred))
        return self

    @torch.no_grad()
    def merge(self, other: "PacketStats") -> "PacketStats":
        """Add ``other`` (e.g. another process's share) into this state."""
        self._check_layout(other.packets, other.dim, "the other state")
        if other.n:
            scatter_b = other.scatter.to(self.device)
            self._combine(other.n, other.mean.to(self.device), lambda s: s.add_(scatter_b))
        return self

    def _combine(self, n_b: int, mean_b: torch.Tensor, add_scatter) -> None:
        """Chan et al.'s pairwise update in place; ``add_scatter(S)`` adds the part's own scatter."""
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean.add_(delta, alpha=n_b / n)
        add_scatter(self.scatter)
        if n_a:
            w = delta * math.sqrt(n_a * n_b / n)
            self.scatter.baddbmm_(w.unsqueeze(2), w.unsqueeze(1))  # w w^T per packet
        self.n = n

    @property
    def state(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(n, mean, scatter)``: what :meth:`from_state` rebuilds (e.g. after a gather)."""
        return self.n, self.mean.clone(), self.scatter.clone()

    @classmethod
    def from_state(cls, n: int, mean, scatter, device=None, limit: int | None = None) -> "PacketStats":
        mean = torch.as_tensor(mean, dtype=torch.float64)
        scatter = torch.as_tensor(scatter, dtype=torch.float64)
        if mean.ndim != 2 or scatter.shape != (*mean.shape, mean.shape[1]):
            raise ValueError(f"mean must be P x D and scatter P x D x D, got {tuple(mean.shape)} and "
                             f"{tuple(scatter.shape)}")
        stats = cls(mean.shape[0], mean.shape[1], device, limit)
        stats.n = int(n)
        stats.mean.copy_(mean)
        stats.scatter.copy_(scatter)
        return stats

    @property
    def mu(self) -> np.ndarray:
        if not self.n:
            raise ImgdistError("fwd: no images: the packet statistics are empty")
        return self.mean.cpu().numpy()

    @property
    def sigma(self) -> "Covariances":
        """The ``P x D x D`` covariances (divisor ``n - 1``), made one packet at a time when
        indexed (``sigma[p]``: a float64 ``D x D`` numpy array), so reading them never holds a
        second copy of the scatter; ``np.asarray(sigma)`` gives them all."""
        if self.n < 2:
            raise ImgdistError(f"fwd: {self.n} image(s): a covariance needs at least 2 images")
        return Covariances(self.scatter, self.n)

    def fwd(self, other: "PacketStats") -> float:
        """The Fréchet Wavelet Distance between these statistics and ``other``'s."""
        from ..metrics.fwd import fwd

        self._check_layout(other.packets, other.dim, "the other set")
        return fwd(self.mu, self.sigma, other.mu, other.sigma)

    def __repr__(self) -> str:
        return (f"PacketStats(n={self.n}, packets={self.packets}, dim={self.dim}, {_size(self.nbytes)} on "
                f"{self.device})")


class Covariances:
    """``P`` covariance matrices read one at a time from a scatter tensor (see ``PacketStats.sigma``)."""

    def __init__(self, scatter: torch.Tensor, n: int):
        self._scatter, self._n = scatter, n

    def __len__(self) -> int:
        return self._scatter.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self._scatter.shape)

    def __getitem__(self, packet: int) -> np.ndarray:
        return (self._scatter[packet] / (self._n - 1)).cpu().numpy()

    def __array__(self, dtype=None, copy=None):
        out = (self._scatter / (self._n - 1)).cpu().numpy()
        return out if dtype is None else out.astype(dtype)
