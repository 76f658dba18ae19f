"""OpenCLIP encoders trained on LAION-2B (Cherti et al. 2023, "Reproducible scaling laws for
contrastive language-image learning"; Schuhmann et al. 2022, LAION-5B): ``openclip-vit-b32``,
``openclip-vit-h14`` and ``openclip-vit-bigg14``, each with an image and a text tower.

They are CLIP's architecture (:mod:`.clip`: the same tensor names, the same blocks) with these
differences, all configuration:

* exact GELU instead of QuickGELU in both towers;
* attention heads of 80 (H/14) and 104 (bigG/14) channels instead of 64, and bigG's FFN ratio
  4.9231 (a hidden width of ``int(1664 * 4.9231) = 8192``);
* the tokenizer's special-token strings are ``<start_of_text>`` / ``<end_of_text>`` (same ids).

The image feature is the projected image embedding (512, 1024 or 1280 numbers), like the CLIP
backbones'; it serves FD, KID, PRDC and CMMD, and with the text tower the CLIP score.
Preprocessing is OpenCLIP's for these models (``resize_mode='shortest'``): the shorter side to
224 with Pillow's bicubic, the centred 224 x 224 crop, OpenAI's mean and std -- the same steps as
OpenAI CLIP's own preprocess (mode ``openclip``); ``cmmd`` cuts the centred square first.

Weights: the files open_clip 3.3.0's pretrained table names (``ViT-B-32 laion2b_s34b_b79k``,
``ViT-H-14 laion2b_s32b_b79k``, ``ViT-bigG-14 laion2b_s39b_b160k``) in LAION's Hugging Face
repositories: ``open_clip_model.safetensors`` for B/32 and ``open_clip_pytorch_model.bin`` (a
``torch.save`` zip) for H/14 and bigG/14, read as tensors only (:mod:`.checkpoint`), in float32.
The SHA-256 and size pinned below are those that public manifests state for these files (the
SHA-256 is the Git LFS object id under which the hub stores each file); bigG's size is not stated
anywhere we could check, so that file is guarded by its SHA-256 alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ..preprocess import Preprocessing
from ..tokenizer import OPENCLIP_SPECIALS
from .base import BackboneSpec, WeightsSpec, build_loaded
from .clip import CLIP_MEAN, CLIP_STD, LAYOUT, CLIPText, CLIPVisual, TextConfig, build_text_tower
from .registry import register
from .vit import ViTConfig

HUB = "https://huggingface.co"


@dataclass(frozen=True)
class OpenCLIPVariant:
    name: str
    label: str             # open_clip's model name and pretrained tag
    width: int
    depth: int
    heads: int
    hidden: int            # the image FFN width
    patch: int
    resolution: int
    embed_dim: int
    text: TextConfig
    weights: WeightsSpec | None = None

    @property
    def config(self) -> ViTConfig:
        return ViTConfig(width=self.width, depth=self.depth, heads=self.heads, hidden=self.hidden, patch=self.patch,
                         grid=self.resolution // self.patch, act="gelu", eps=1e-5, layout=LAYOUT)


def _text(width: int, depth: int, heads: int, embed_dim: int) -> TextConfig:
    return TextConfig(width=width, depth=depth, heads=heads, embed_dim=embed_dim, act="gelu",
                      specials=OPENCLIP_SPECIALS)


def _weights(filename: str, repo: str, revision: str, file: str, sha256: str, size: int | None) -> WeightsSpec:
    return WeightsSpec(filename=filename, url=f"{HUB}/laion/{repo}/resolve/{revision}/{file}", sha256=sha256,
                       size=size, license="MIT (LAION OpenCLIP weights)")


VARIANTS = (
    OpenCLIPVariant("openclip-vit-b32", "ViT-B-32 laion2b_s34b_b79k", 768, 12, 12, 3072, 32, 224, 512,
                    _text(512, 12, 8, 512),
                    _weights("openclip-ViT-B-32-laion2b_s34b_b79k.safetensors", "CLIP-ViT-B-32-laion2B-s34B-b79K",
                             "1a25a446712ba5ee05982a381eed697ef9b435cf", "open_clip_model.safetensors",
                             "ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6", 605_143_316)),
    OpenCLIPVariant("openclip-vit-h14", "ViT-H-14 laion2b_s32b_b79k", 1280, 32, 16, 5120, 14, 224, 1024,
                    _text(1024, 24, 16, 1024),
                    _weights("openclip-ViT-H-14-laion2b_s32b_b79k.bin", "CLIP-ViT-H-14-laion2B-s32B-b79K",
                             "1c2b8495b28150b8a4922ee1c8edee224c284c0c", "open_clip_pytorch_model.bin",
                             "9a78ef8e8c73fd0df621682e7a8e8eb36c6916cb3c16b291a082ecd52ab79cc4", 3_944_692_325)),
    OpenCLIPVariant("openclip-vit-bigg14", "ViT-bigG-14 laion2b_s39b_b160k", 1664, 48, 16, 8192, 14, 224, 1280,
                    _text(1280, 32, 20, 1280),
                    _weights("openclip-ViT-bigG-14-laion2b_s39b_b160k.bin", "CLIP-ViT-bigG-14-laion2B-39B-b160k",
                             "main", "open_clip_pytorch_model.bin",
                             "0d5318839ad03607c48055c45897c655a14c0276a79f6b867934ddd073760e39", None)),
)
_VARIANTS = {v.name: v for v in VARIANTS}


def build_image_tower(v: OpenCLIPVariant, weights_path: Path | str | None) -> CLIPVisual:
    """The image tower of any OpenCLIP ViT configuration (the registered ones, or a small one in tests)."""
    return build_loaded(lambda: CLIPVisual(v.config, v.embed_dim), weights_path,
                        f"OpenCLIP {v.label} image encoder ({v.name})", only="visual.")


def build(weights_path: Path | str | None = None, variant: str = "openclip-vit-b32") -> CLIPVisual:
    """The image encoder in eval mode with ``.spec`` set; ``weights_path`` None keeps random weights."""
    model = build_image_tower(_VARIANTS[variant], weights_path)
    model.spec = SPECS[variant]
    return model


def build_text(weights_path: Path | str | None = None, variant: str = "openclip-vit-b32") -> CLIPText:
    """The text tower of ``variant`` from the same file as its image tower."""
    v = _VARIANTS[variant]
    return build_text_tower(v.text, weights_path, f"OpenCLIP {v.label} text encoder ({variant})")


def _modes(size: int) -> dict[str, Preprocessing]:
    return {
        # open_clip's image_transform(resize_mode='shortest'): torchvision Resize(size, BICUBIC) of
        # the shorter side on the PIL image, CenterCrop(size), ToTensor, Normalize(OpenAI mean/std)
        "openclip": Preprocessing("openclip", size, "pil-bicubic-rgb", CLIP_MEAN, CLIP_STD, post_scale=1 / 255,
                                  crop="resize-center"),
        # CMMD's recipe on these encoders: largest centred square, PIL bicubic to size, / 255
        "cmmd": Preprocessing("cmmd", size, "pil-bicubic-rgb", CLIP_MEAN, CLIP_STD, post_scale=1 / 255,
                              crop="center"),
    }


def _spec(v: OpenCLIPVariant) -> BackboneSpec:
    return BackboneSpec(
        name=v.name,
        feature_dim=v.embed_dim,
        input_size=v.resolution,
        modes=_modes(v.resolution),
        default_mode="openclip",
        build=functools.partial(build, variant=v.name),
        text=functools.partial(build_text, variant=v.name),
        weights=v.weights,
        description=f"OpenCLIP {v.label} (LAION-2B) image encoder: projected image embedding; with a text tower",
    )


SPECS: dict[str, BackboneSpec] = {v.name: register(_spec(v)) for v in VARIANTS}

__all__ = ["OpenCLIPVariant", "VARIANTS", "SPECS", "build", "build_text", "build_image_tower"]
