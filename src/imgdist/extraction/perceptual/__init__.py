"""Learned perceptual distances between two images of one size: LPIPS (:mod:`.lpips`) and DISTS
(:mod:`.dists`), on torchvision's networks rebuilt in plain torch
(:mod:`imgdist.extraction.backbones.torchvision_features`); batched evaluation (:mod:`.base`) and
the LPIPS diversity of a set (:mod:`.diversity`).
"""

from __future__ import annotations

from .names import DIVERSITY_BOOTSTRAP, DIVERSITY_PAIRS, KEYS, LPIPS_NETS  # noqa: F401 - re-exported


def load(key: str, *, net: str | None = None, weights=None, device: str = "cpu", progress: bool = True):
    """The network that computes ``key`` (``lpips`` on ``net``, or ``dists``), ready on ``device``."""
    if key == "lpips":
        from .lpips import load_lpips

        return load_lpips(net, weights, device=device, progress=progress)
    from .dists import load_dists

    return load_dists(weights, device=device, progress=progress)


def weights_files() -> list:
    """``(name, WeightsSpec)`` of every published file LPIPS and DISTS read (``imgdist weights``)."""
    from ..backbones.torchvision_features import WEIGHTS
    from .dists import WEIGHTS as DISTS_WEIGHTS
    from .lpips import HEADS

    return [("torchvision alexnet (lpips alex)", WEIGHTS["alexnet"]),
            ("torchvision vgg16 (lpips vgg, dists)", WEIGHTS["vgg16"]),
            ("torchvision squeezenet1_1 (lpips squeeze)", WEIGHTS["squeezenet1_1"]),
            *((f"lpips v0.1 {net} heads", spec) for net, spec in HEADS.items()),
            ("dists alpha/beta", DISTS_WEIGHTS)]
