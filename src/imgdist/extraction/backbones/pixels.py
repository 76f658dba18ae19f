"""The ``pixels`` backbone: the image itself as the feature vector.

Every set metric (FID, KID, precision/recall, ...) can then be computed in pixel space beside
feature space, which is the lecture's contrast for whole sets: a 1-pixel shift moves pixel-space
statistics far more than feature-space statistics. Values are scaled to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..preprocess import Preprocessing
from .registry import register
from .base import Backbone, BackboneSpec

PIXELS_SIZE = 32


class PixelBackbone(Backbone):
    def forward(self, x: torch.Tensor, outputs=("pool",)) -> dict:
        out = {}
        if "pool" in outputs:
            out["pool"] = x.flatten(1)
        if "spatial" in outputs:
            out["spatial"] = [x]
        return out


def build(weights_path: Path | None = None) -> PixelBackbone:
    model = PixelBackbone()
    model.spec = SPEC
    return model.eval()


SPEC = register(BackboneSpec(
    name="pixels",
    feature_dim=3 * PIXELS_SIZE * PIXELS_SIZE,
    input_size=PIXELS_SIZE,
    modes={
        "antialias": Preprocessing("antialias", PIXELS_SIZE, "antialias-bilinear", mean=0.0, std=255.0),
        # every image must share one size; d = 3 * H * W
        "native": Preprocessing("native", None, "none", mean=0.0, std=255.0),
    },
    default_mode="antialias",
    build=build,
    description=f"raw RGB values in [0, 1], resized to {PIXELS_SIZE}x{PIXELS_SIZE} (mode 'native': "
                "no resize), flattened",
))
