"""LPIPS and DISTS beside the pixel and feature distances of a pair (``compare``, ``robustness``,
the demo): the options, checked before any image is read, and one image against many in batches."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ImgdistError

#: what the one-line meaning of each value says (``imgdist compare``'s table)
NOTES = {
    "lpips": "LPIPS v0.1 (Zhang et al. 2018): learned weights on deep features, 0 = same",
    "dists": "DISTS (Ding et al. 2020): structure and texture similarity of deep features, 0 = same",
}


def load_models(lpips: str | None = None, lpips_weights=None, dists: bool = False, dists_weights=None, *,
                device: str = "cpu", progress: bool = True) -> list:
    """The networks the options ask for (LPIPS first), ready on ``device``; refused in one line
    when weights are given for a distance that is not asked for."""
    from ..extraction.perceptual import load
    from ..extraction.perceptual.lpips import check_net

    if lpips_weights is not None and lpips is None:
        raise ImgdistError(f"lpips_weights (--lpips-weights) {os.fspath(lpips_weights)}: name its network with "
                           "lpips (--lpips alex|vgg|squeeze)")
    if dists_weights is not None and not dists:
        raise ImgdistError(f"dists_weights (--dists-weights) {os.fspath(dists_weights)}: these weights would be "
                           "unused; add dists (--dists)")
    models = []
    if lpips is not None:
        models.append(load("lpips", net=check_net(lpips), weights=lpips_weights, device=device, progress=progress))
    if dists:
        models.append(load("dists", weights=dists_weights, device=device, progress=progress))
    return models


def check_sizes(models: list, image: np.ndarray, name: str) -> None:
    for model in models:
        model.check_size(image.shape[0], image.shape[1], os.path.basename(str(name)))


def anchors(models: list, image: np.ndarray) -> list:
    """``image`` against each model (:class:`~imgdist.extraction.perceptual.base.Anchor`), for
    :func:`values_to`: run through each network once however many batches of others follow."""
    from ..extraction.perceptual.base import Anchor

    return [Anchor(model, image, next(model.parameters()).device) for model in models]


def values_to(anchored: list, others: list[np.ndarray]) -> list[dict[str, float]]:
    """Each model's distance from the anchored image to each of ``others`` (all its size), per
    other image; ``anchored`` from :func:`anchors`."""
    out = [{} for _ in others]
    for anchor in anchored:
        for row, value in zip(out, anchor.distances(others)):
            row[anchor.model.key] = float(value)
    return out


def labels(models: list) -> dict[str, str]:
    """Each value's printed name, e.g. ``{"lpips": "LPIPS[alex]"}``."""
    return {model.key: model.label for model in models}
