"""The ``custom`` backbone: a user's network (a ``torch.nn.Module`` or a TorchScript file).

The network receives normalised ``N x 3 x S x S`` batches and may return a tensor (``N x d``, or a
feature map ``N x C x H x W`` that is average-pooled to ``N x C``) or a dict with a ``"pool"``
entry (plus optional ``"logits"`` / ``"spatial"``).
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from ...errors import WeightsError
from ..preprocess import Preprocessing
from .base import Backbone, BackboneSpec

#: ImageNet normalisation on the 0..1 scale (torchvision's convention)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CustomBackbone(Backbone):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, outputs=("pool",)) -> dict:
        result = self.module(x)
        if isinstance(result, dict):
            return {k: v for k, v in result.items() if k in outputs}
        if isinstance(result, (tuple, list)):
            result = result[0]
        if result.ndim == 4:
            spatial = result
            result = result.mean(dim=(2, 3))
        else:
            spatial = None
        out = {"pool": result.flatten(1)}
        if "spatial" in outputs and spatial is not None:
            out["spatial"] = [spatial]
        return out


def custom_backbone(model: nn.Module | str | os.PathLike, *, input_size: int = 224,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, resize: str = "antialias-bilinear",
                    name: str = "custom", feature_dim: int | None = None) -> CustomBackbone:
    """Wrap a module or TorchScript file as a backbone. ``mean``/``std`` are on the 0..1 scale."""
    source = "in-memory module"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            module = torch.jit.load(path, map_location="cpu")
        except (RuntimeError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a loadable TorchScript file ({' '.join(str(exc).split()[:12])})") from None
        source = path
    else:
        module = model
    backbone = CustomBackbone(module).eval()
    scale = lambda v: tuple(float(c) * 255.0 for c in v) if isinstance(v, (tuple, list)) else float(v) * 255.0  # noqa: E731
    prep = Preprocessing("custom", input_size, resize, mean=scale(mean), std=scale(std))
    if feature_dim is None:
        with torch.inference_mode():
            feature_dim = backbone(torch.zeros(1, 3, input_size, input_size))["pool"].shape[1]
    backbone.spec = BackboneSpec(name=name, feature_dim=feature_dim, input_size=input_size,
                                 modes={"custom": prep}, default_mode="custom",
                                 build=lambda _path=None: backbone, description=f"custom: {source}")
    backbone.weights_id = _module_fingerprint(backbone)
    return backbone


def _module_fingerprint(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
