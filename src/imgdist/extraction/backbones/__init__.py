"""Registry of backbones by name; each module registers its spec on import.

``load_backbone(name)`` resolves the weights (see :mod:`imgdist.extraction.weights`) and returns the network
in eval mode with ``.spec`` (configuration) and ``.weights_id`` (SHA-256 of the weights file, for
provenance) set.
"""

from __future__ import annotations

import os

from ...errors import ImgdistError
from .base import Backbone, BackboneSpec, WeightsSpec
from .registry import REGISTRY as _REGISTRY
from .registry import register


def get_spec(name: str) -> BackboneSpec:
    _load_builtin()
    if name not in _REGISTRY:
        raise ImgdistError(f"unknown backbone {name!r}; choose from {', '.join(sorted(_REGISTRY))}, "
                           "or pass a torch.nn.Module / TorchScript file as a custom backbone")
    return _REGISTRY[name]


def list_specs() -> list[BackboneSpec]:
    _load_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def load_backbone(backbone: str | Backbone, weights: str | os.PathLike | None = None,
                  *, progress: bool = True) -> Backbone:
    """A ready network: a registered name (weights resolved) or an already-built backbone."""
    # weights that would not be used are refused: a result must not look as if they had been
    if isinstance(backbone, Backbone):
        if weights is not None:
            raise ImgdistError(f"weights (--weights) {os.fspath(weights)}: the backbone {backbone.spec.name} is "
                               "already built and carries its own weights")
        return backbone
    spec = get_spec(backbone)
    if spec.weights is None:
        if weights is not None:
            raise ImgdistError(f"weights (--weights) {os.fspath(weights)}: the {spec.name} backbone has no "
                               "weights to load")
        model = spec.build(None)
        model.weights_id = None
        return model
    return _from_weights(spec, spec.build, weights, progress)


def load_text_tower(backbone: str, weights: str | os.PathLike | None = None, *, progress: bool = True,
                    weights_id: str | None = None):
    """The text tower of a registered CLIP / OpenCLIP backbone, read from the same weights file as
    its image tower (resolved the same way), in eval mode with ``.weights_id`` set. It offers
    ``encode_text(ids)`` and ``encode_prompts(prompts)`` (:class:`.clip.CLIPText`).

    ``weights_id``: the SHA-256 of that file where the caller already has it (the image tower's,
    loaded from the same ``weights``), so that a large file is not read once more to hash it."""
    spec = get_spec(backbone)
    if spec.text is None:
        with_text = sorted(s.name for s in list_specs() if s.text is not None)
        raise ImgdistError(f"backbone {spec.name!r} has no text tower; choose from {', '.join(with_text)}")
    return _from_weights(spec, spec.text, weights, progress, weights_id)


def _from_weights(spec: BackboneSpec, build, weights, progress: bool, weights_id: str | None = None):
    """``build`` of the resolved weights file, with ``.weights_id`` set for provenance."""
    from ..weights import resolve_weights, sha256_file_cached

    path = resolve_weights(spec.weights, weights, backbone=spec.name, progress=progress)
    model = build(path)
    model.weights_id = weights_id if weights_id is not None else sha256_file_cached(path)
    return model


def _load_builtin() -> None:
    # imported lazily so that `import imgdist` stays cheap
    from . import clip, dinov2, efficientnet, inception, openclip, pixels, wavelets  # noqa: F401


__all__ = ["Backbone", "BackboneSpec", "WeightsSpec", "register", "get_spec", "list_specs", "load_backbone",
           "load_text_tower"]
