"""``wavelets``: the feature space of the Fréchet Wavelet Distance, registered beside the networks.

No network: Haar wavelet packets of the image (:mod:`imgdist.extraction.wavelets`), whose
statistics are one Gaussian per packet (:mod:`imgdist.extraction.packet_stats`). The spec names
its one output, ``packets``, so that ``fwd`` can be planned like any metric that reads a backbone
output; :mod:`imgdist.extraction.wavelet_space` runs it in the extraction engine.
"""

from __future__ import annotations

from ...errors import ImgdistError
from ..wavelets import fwd_preprocessing
from .base import BackboneSpec
from .registry import register

NAME = "wavelets"


def _build(weights_path=None):
    raise ImgdistError("the wavelet space is not a network: it runs through imgdist.extraction.wavelet_space")


SPEC = register(BackboneSpec(
    name=NAME, feature_dim=0, input_size=None, modes={"native": fwd_preprocessing(None)}, default_mode="native",
    build=_build, extra_outputs={"packets": 0},
    description="Haar wavelet packets of the image, one Gaussian per packet: the Fréchet Wavelet Distance's space "
                "(no network, no weights)"))
