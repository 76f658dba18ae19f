"""DINOv2 image encoders (Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without
Supervision"): ``dinov2-vit-s14``, ``-b14``, ``-l14``, ``-g14``.

The feature is the final-norm CLS token (384, 768, 1024 or 1536 numbers). The Fréchet distance in
``dinov2-vit-l14`` space is FD_DINOv2 (Stein et al. 2023, "Exposing flaws of generative model
evaluation metrics"; EDM2, Karras et al. 2024, reports it beside FID).

The network is the authors' ``DinoVisionTransformer`` as torch hub builds it for the released
checkpoints (``img_size=518, patch_size=14, init_values=1.0, block_chunks=0``, no register
tokens), in the shared :mod:`.vit` trunk:

* LayerNorm ``eps = 1e-6`` everywhere; LayerScale (``ls1.gamma``, ``ls2.gamma``) on both branches;
* exact GELU MLP with hidden width 4 x width for S, B and L; ViT-g/14 uses a SwiGLU FFN
  (``mlp.w12`` -> ``silu(a) * b`` -> ``mlp.w3``) with hidden width
  ``(int(4 * 1536 * 2 / 3) + 7) // 8 * 8 = 4096``;
* the position embeddings are trained on a 37 x 37 grid (518 px); at 224 px the 16 x 16 grid is
  resampled as the official ``interpolate_pos_encoding`` does (:func:`.vit.interpolate_pos_embed`:
  bicubic, no antialiasing, scale factor ``(16 + 0.1) / 37``);
* the checkpoint's ``mask_token`` (used only in training) is loaded and not used.

Weights: the official ``dinov2_vit*14_pretrain.pth`` files, loaded strictly under their own key
names. Meta publishes no checksums for them; the pinned sizes and SHA-256 digests below are the
values several independent public projects recorded for the files from the official URLs (they
agree with each other), and a file of any other size or digest is refused.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess import Preprocessing
from .registry import register
from .base import BackboneSpec, WeightsSpec, build_loaded
from .vit import BlockLayout, ViTConfig, VisionTransformer, interpolate_pos_embed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224           # what every FD_DINOv2 protocol feeds the network
PATCH = 14
POS_GRID = 37              # 518 / 14: the grid the position embeddings were trained on
POS_OFFSET = 0.1           # interpolate_offset of the official code

MLP_LAYOUT = BlockLayout(norm1="norm1", qkv_weight="attn.qkv.weight", qkv_bias="attn.qkv.bias",
                         out="attn.proj", norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2",
                         ls1="ls1.gamma", ls2="ls2.gamma")
SWIGLU_LAYOUT = BlockLayout(norm1="norm1", qkv_weight="attn.qkv.weight", qkv_bias="attn.qkv.bias",
                            out="attn.proj", norm2="norm2", fc1="mlp.w12", fc2="mlp.w3",
                            ls1="ls1.gamma", ls2="ls2.gamma")

URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{s}14/dinov2_vit{s}14_pretrain.pth"


def swiglu_hidden(width: int, mlp_ratio: float = 4.0) -> int:
    """The official SwiGLUFFNFused width: two thirds of the MLP width, rounded up to a multiple of 8."""
    return (int(width * mlp_ratio * 2 / 3) + 7) // 8 * 8


@dataclass(frozen=True)
class DinoV2Variant:
    name: str
    letter: str            # s, b, l, g in the file names
    width: int
    depth: int
    heads: int
    ffn: str               # "gelu" (MLP) or "swiglu"
    size: int              # bytes of the official checkpoint
    sha256: str

    @property
    def config(self) -> ViTConfig:
        swiglu = self.ffn == "swiglu"
        return ViTConfig(width=self.width, depth=self.depth, heads=self.heads,
                         hidden=swiglu_hidden(self.width) if swiglu else 4 * self.width,
                         patch=PATCH, grid=POS_GRID, act=self.ffn, eps=1e-6,
                         layout=SWIGLU_LAYOUT if swiglu else MLP_LAYOUT)

    @property
    def filename(self) -> str:
        return f"dinov2_vit{self.letter}14_pretrain.pth"


VARIANTS = (
    DinoV2Variant("dinov2-vit-s14", "s", 384, 12, 6, "gelu", 88_283_115,
                  "b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9"),
    DinoV2Variant("dinov2-vit-b14", "b", 768, 12, 12, "gelu", 346_378_731,
                  "0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73"),
    DinoV2Variant("dinov2-vit-l14", "l", 1024, 24, 16, "gelu", 1_217_586_395,
                  "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428"),
    DinoV2Variant("dinov2-vit-g14", "g", 1536, 40, 24, "swiglu", 4_546_108_579,
                  "baf8467e50af277596bbbafa06887c177ee899ab46033649c383577d7e9309d3"),
)
_VARIANTS = {v.name: v for v in VARIANTS}


class DinoV2(VisionTransformer):
    """The DINOv2 backbone with the official checkpoint's parameter names."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid + 1, w))
        self.mask_token = nn.Parameter(torch.zeros(1, w))  # training only; part of the checkpoint
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, w, cfg.patch, stride=cfg.patch)
        self._make_blocks("blocks")
        self.norm = nn.LayerNorm(w, eps=cfg.eps)
        # build(None) only: values of the size real checkpoints have, so random features vary
        nn.init.normal_(self.pos_embed, std=0.5)
        nn.init.normal_(self.cls_token, std=1.0)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        grid = x.shape[-1] // self.cfg.patch
        h = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        h = torch.cat((self.cls_token.expand(h.shape[0], -1, -1), h), dim=1)
        pos = torch.cat((self.pos_embed[:, :1],
                         interpolate_pos_embed(self.pos_embed[:, 1:], grid, POS_OFFSET)), dim=1)
        return h + pos.to(h.dtype)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h[:, 0], (self.cfg.width,), self.norm.weight, self.norm.bias, self.cfg.eps)


def build(weights_path: Path | str | None = None, variant: str = "dinov2-vit-s14") -> DinoV2:
    """The network in eval mode with ``.spec`` set; ``weights_path`` None keeps random weights."""
    v = _VARIANTS[variant]
    model = build_loaded(lambda: DinoV2(v.config), weights_path, f"DINOv2 ViT-{v.letter.upper()}/14 ({variant})")
    model.spec = SPECS[variant]
    return model


def _modes() -> dict[str, Preprocessing]:
    mean255 = tuple(255 * m for m in IMAGENET_MEAN)
    std255 = tuple(255 * s for s in IMAGENET_STD)
    return {
        # dgm-eval (Stein et al. 2023): torchvision Resize((224, 224), BICUBIC) on the PIL image,
        # ToTensor, Normalize(ImageNet); EDM2's resize_mode='pil' is the same
        "dgm-eval": Preprocessing("dgm-eval", INPUT_SIZE, "pil-bicubic-rgb", IMAGENET_MEAN, IMAGENET_STD,
                                  post_scale=1 / 255),
        # EDM2 calculate_metrics.py (Karras et al. 2024), its default resize_mode='torch'
        "edm2": Preprocessing("edm2", INPUT_SIZE, "bicubic-antialias", IMAGENET_MEAN, IMAGENET_STD,
                              post_scale=1 / 255),
        # torch-fidelity 0.4 dinov2-vit-*-14: TF1 bilinear on 0..255, then (x - 255 mean) / (255 std)
        "tf": Preprocessing("tf", INPUT_SIZE, "tf1-bilinear", mean255, std255),
        # dgm-eval --clean_resize: Pillow bicubic per float channel (clean-fid's), clipped, / 255
        "clean": Preprocessing("clean", INPUT_SIZE, "pil-bicubic", IMAGENET_MEAN, IMAGENET_STD,
                               post_scale=1 / 255),
    }


def _spec(v: DinoV2Variant) -> BackboneSpec:
    return BackboneSpec(
        name=v.name,
        feature_dim=v.width,
        input_size=INPUT_SIZE,
        modes=_modes(),
        default_mode="dgm-eval",
        build=functools.partial(build, variant=v.name),
        weights=WeightsSpec(filename=v.filename, url=URL.format(s=v.letter), sha256=v.sha256, size=v.size,
                            license="Apache-2.0 (DINOv2)"),
        description=(f"DINOv2 ViT-{v.letter.upper()}/14 ({v.depth} blocks, width {v.width}"
                     f"{', SwiGLU' if v.ffn == 'swiglu' else ''}): final-norm CLS token"
                     + ("; FD here is FD_DINOv2" if v.letter == "l" else "")),
    )


SPECS: dict[str, BackboneSpec] = {v.name: register(_spec(v)) for v in VARIANTS}

__all__ = ["DinoV2", "DinoV2Variant", "VARIANTS", "SPECS", "build", "swiglu_hidden"]
