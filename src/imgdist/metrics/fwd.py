"""Fréchet Wavelet Distance: the mean over wavelet packets of per-packet Fréchet distances.

Paper: L. Veeramacheneni, M. Wolter, H. Kuehne, J. Gall, "Fréchet Wavelet Distance: A
Domain-Agnostic Metric for Image Generation", ICLR 2025.

Each image is split into ``P`` Haar wavelet packets (:mod:`imgdist.extraction.wavelets`); each
packet's coefficients of a set get a Gaussian ``N(mu_p, S_p)`` (:mod:`imgdist.extraction.packet_stats`),
and ::

    FWD = (1 / P) sum_p FD(N(mu_p, S_p), N(mu'_p, S'_p))

with ``FD`` the squared Fréchet distance of FID (:func:`imgdist.metrics.frechet_distance`), as
``pytorchfwd`` 1.0.1 computes it (``_compute_avg_frechet_distance``: a plain mean over packets).
pytorchfwd takes the trace term from ``scipy.linalg.sqrtm``; the eigenvalue route used here gives
the same value (within 1e-6 relative on the parity sets, tests/test_fwd.py) without sqrtm's
complex output or its jitter fallback on singular products.
"""

from __future__ import annotations

import numpy as np

from .frechet import frechet_distance
from .registry import Metric, Setting, register

__all__ = ["fwd", "packet_distances"]


def packet_distances(mu1, sigma1, mu2, sigma2) -> np.ndarray:
    """Per-packet Fréchet distances: ``mu`` ``P x D``; ``sigma`` ``P x D x D`` (an array, or any
    sequence of ``D x D`` arrays, read one packet at a time)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    if mu1.ndim != 2 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be P x D arrays of one shape, got {mu1.shape} and {mu2.shape}")
    if len(sigma1) != len(mu1) or len(sigma2) != len(mu2):
        raise ValueError(f"{len(mu1)} packets of means but {len(sigma1)} and {len(sigma2)} of covariances")
    return np.array([frechet_distance(mu1[p], sigma1[p], mu2[p], sigma2[p]) for p in range(len(mu1))])


def fwd(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet Wavelet Distance between two sets' packet Gaussians (see the module docstring)."""
    return float(np.mean(packet_distances(mu1, sigma1, mu2, sigma2)))


# ---------------------------------------------------------------- registration

#: FWD's feature space: the Haar packets of the image (no network)
FWD_SPACE = ("wavelets", None)


def _fwd(run) -> float:
    real, fake = run.real.extra["packets"], run.fake.extra["packets"]
    o = run.options
    run.result.details["fwd"] = {"wavelet": o.fwd_wavelet, "level": o.fwd_level, "resize": o.fwd_resize,
                                 "packets": real.packets, "coefficients_per_packet": real.dim}
    return real.fwd(fake)


FWD = register(Metric(
    "fwd", "the Fréchet Wavelet Distance: mean over Haar wavelet packets of their Fréchet distances, no network "
    "(Veeramacheneni et al. 2025)", _fwd, "FWD", "FWD", lower_is_better=True, covariance=True,
    outputs=("packets",), per_class=False, published_on=FWD_SPACE, space=FWD_SPACE, order=105,
    settings=(Setting("fwd_wavelet", "haar", "FWD: the wavelet (only Haar)", kind="choice", choices=("haar",)),
              Setting("fwd_level", 4, "FWD: packet levels (4^level packets)", minimum=1, in_label=True),
              Setting("fwd_resize", None, "FWD: resize every image to this side first (Pillow bilinear, as "
                      "pytorchfwd's --resize; default: the images' own size, which must be one)", kind="optional-int",
                      minimum=1, in_label=True)),
    function=lambda sets, o: fwd(*sets.packets["real"], *sets.packets["fake"]),
    paper="Veeramacheneni et al., Fréchet Wavelet Distance: A Domain-Agnostic Metric for Image Generation, "
          "ICLR 2025"))
