"""One Vision Transformer for every ViT backbone (DINOv2, CLIP): the quirks are data, not branches.

A pre-norm transformer block is the same computation in DINOv2 (Oquab et al. 2023) and in CLIP
(Radford et al. 2021)::

    x = x + ls1 * attn(norm1(x))          attn: one fused qkv projection, softmax(q k^T / sqrt(d)) v
    x = x + ls2 * ffn(norm2(x))           ffn: fc2(act(fc1(h)))  or  w3(silu(a) * b), (a, b) = w12(h)

What differs is described by parameters:

* :class:`BlockLayout` -- the *names* under which the official checkpoint stores each tensor
  (DINOv2: ``norm1``, ``attn.qkv.weight``, ``ls1.gamma`` ...; CLIP: ``ln_1``,
  ``attn.in_proj_weight`` ...), so either file loads strictly under its own key names;
* the activation: exact GELU (DINOv2), QuickGELU ``x * sigmoid(1.702 x)`` (CLIP), SwiGLU
  (DINOv2 ViT-g/14);
* LayerScale (DINOv2) or none (CLIP), and the LayerNorm epsilon (1e-6 DINOv2, 1e-5 CLIP).

The family modules (:mod:`.dinov2`, :mod:`.clip`) only add what surrounds the blocks: the patch
embedding, class token and position embedding on the way in, the final norm (and CLIP's
projection) on the way out. Attention is :func:`torch.nn.functional.scaled_dot_product_attention`.

Outputs (``forward(x, outputs=...)``):

* ``"pool"``    N x d: the image embedding (DINOv2: final-norm CLS token; CLIP: projected CLS)
* ``"spatial"`` the patch tokens after four evenly spaced blocks, as N x width x g x g maps
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone

__all__ = ["BlockLayout", "ViTConfig", "Block", "VisionTransformer", "interpolate_pos_embed",
           "attention", "causal_attention", "ACTIVATIONS"]

OUTPUTS = ("pool", "spatial")


@dataclass(frozen=True)
class BlockLayout:
    """Where one transformer block keeps its tensors in the official checkpoint.

    Norms and linear layers are prefixes (``.weight`` / ``.bias`` follow); the fused
    query-key-value projection is named in full, because ``nn.MultiheadAttention`` (CLIP) stores
    it as ``in_proj_weight`` / ``in_proj_bias`` rather than as a linear layer. ``ls1`` / ``ls2``:
    the LayerScale vectors, or None where the model has none.
    """

    norm1: str
    qkv_weight: str
    qkv_bias: str
    out: str
    norm2: str
    fc1: str
    fc2: str
    ls1: str | None = None
    ls2: str | None = None


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": F.gelu, "quick_gelu": _quick_gelu, "swiglu": None}


@dataclass(frozen=True)
class ViTConfig:
    """Sizes and quirks of one ViT. ``hidden``: the FFN width (SwiGLU: of each of its two halves)."""

    width: int
    depth: int
    heads: int
    hidden: int
    patch: int
    grid: int               # position-embedding grid the weights were trained at (518 / 14 = 37)
    act: str                # "gelu", "quick_gelu" or "swiglu"
    eps: float
    layout: BlockLayout
    bias: bool = True       # DINOv2 and CLIP both have biases on every linear layer
    #: each token attends only to itself and the tokens before it: CLIP's text transformer, which
    #: uses these blocks too (no patches there: ``patch`` and ``grid`` are 0)
    causal: bool = False


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over N x heads x tokens x d tensors (a seam for benchmarks)."""
    return F.scaled_dot_product_attention(q, k, v)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:func:`attention` where token i sees tokens 0..i only (CLIP's text transformer; the same as
    OpenAI's additive mask of -inf above the diagonal)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _add_parameter(root: nn.Module, dotted: str, shape: tuple[int, ...]) -> None:
    """Register an (uninitialised) parameter at a dotted path, creating plain containers on the way."""
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            child = nn.Module()
            module.add_module(part, child)
        module = child
    module.register_parameter(leaf, nn.Parameter(torch.empty(shape)))


class Block(nn.Module):
    """A pre-norm transformer block whose tensors carry the names of ``cfg.layout``."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {cfg.act!r}; choose from {', '.join(ACTIVATIONS)}")
        self.cfg = cfg
        w, lay = cfg.width, cfg.layout
        fc1_out = 2 * cfg.hidden if cfg.act == "swiglu" else cfg.hidden
        shapes = {f"{lay.norm1}.weight": (w,), f"{lay.norm1}.bias": (w,),
                  lay.qkv_weight: (3 * w, w), lay.qkv_bias: (3 * w,),
                  f"{lay.out}.weight": (w, w), f"{lay.out}.bias": (w,),
                  lay.ls1: (w,),
                  f"{lay.norm2}.weight": (w,), f"{lay.norm2}.bias": (w,),
                  f"{lay.fc1}.weight": (fc1_out, w), f"{lay.fc1}.bias": (fc1_out,),
                  f"{lay.fc2}.weight": (w, cfg.hidden), f"{lay.fc2}.bias": (w,),
                  lay.ls2: (w,)}
        for name, shape in shapes.items():
            if name is not None:  # no LayerScale: ls1 / ls2 are None
                _add_parameter(self, name, shape)
        self._init_random()

    def _init_random(self) -> None:
        # only for build(None) (benchmarks, tests): finite, varied activations
        lay = self.cfg.layout
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=p.shape[1] ** -0.5)
            elif name in (lay.ls1, lay.ls2):
                nn.init.constant_(p, 0.5)
            elif name in (f"{lay.norm1}.weight", f"{lay.norm2}.weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def _p(self, name: str) -> torch.Tensor:
        return self.get_parameter(name)

    def _norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (self.cfg.width,), self._p(prefix + ".weight"), self._p(prefix + ".bias"),
                            self.cfg.eps)

    def _linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, self._p(prefix + ".weight"), self._p(prefix + ".bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg, lay = self.cfg, self.cfg.layout
        n, tokens, width = x.shape
        qkv = F.linear(self._norm(x, lay.norm1), self._p(lay.qkv_weight), self._p(lay.qkv_bias))
        q, k, v = qkv.reshape(n, tokens, 3, cfg.heads, width // cfg.heads).permute(2, 0, 3, 1, 4)
        h = (causal_attention if cfg.causal else attention)(q, k, v).transpose(1, 2).reshape(n, tokens, width)
        h = self._linear(h, lay.out)
        x = x + (h * self._p(lay.ls1) if lay.ls1 else h)

        h = self._linear(self._norm(x, lay.norm2), lay.fc1)
        if cfg.act == "swiglu":
            a, b = h.chunk(2, dim=-1)
            h = F.silu(a) * b
        else:
            h = ACTIVATIONS[cfg.act](h)
        h = self._linear(h, lay.fc2)
        return x + (h * self._p(lay.ls2) if lay.ls2 else h)


def interpolate_pos_embed(patch_pos: torch.Tensor, grid: int, offset: float = 0.1) -> torch.Tensor:
    """A (1, M*M, D) grid of position embeddings resampled to (1, grid*grid, D) as DINOv2 does it.

    Bicubic, no antialiasing, on float32, and -- the quirk that matters -- through a *scale
    factor* ``(grid + offset) / M`` rather than an output size: the output still has
    ``floor(grid + offset) = grid`` cells, but PyTorch maps output to input coordinates with that
    scale factor, i.e. with ``M / (grid + 0.1)`` instead of ``M / grid``. The offset is the DINO
    authors' guard against ``floor`` rounding down (facebookresearch/dino issue 8); it shifts every
    sampled position slightly, and features computed with the official code depend on it.
    """
    m = math.isqrt(patch_pos.shape[1])
    if m * m != patch_pos.shape[1]:
        raise ValueError(f"{patch_pos.shape[1]} position embeddings do not form a square grid")
    if grid == m:
        return patch_pos
    dim = patch_pos.shape[-1]
    scale = (grid + offset) / m
    x = patch_pos.float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    x = F.interpolate(x, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if x.shape[-2:] != (grid, grid):  # cannot happen for offset < 1; guards a changed offset
        raise ValueError(f"position-embedding interpolation gave {tuple(x.shape[-2:])}, not {grid}x{grid}")
    return x.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(patch_pos.dtype)


class VisionTransformer(Backbone):
    """The shared trunk: ``tokens(x)`` (family-specific) -> blocks -> ``pool(tokens)`` (family-specific).

    Subclasses create their embedding tensors under their checkpoint's names, call
    :meth:`_make_blocks` with the dotted path of the block list, and implement
    :meth:`tokens` and :meth:`pool`.
    """

    cfg: ViTConfig
    prefix_tokens = 1  # the class token in front of the patch tokens

    def _make_blocks(self, path: str) -> None:
        *parents, leaf = path.split(".")
        module: nn.Module = self
        for part in parents:
            child = module._modules.get(part)
            if child is None:
                child = nn.Module()
                module.add_module(part, child)
            module = child
        module.add_module(leaf, nn.ModuleList(Block(self.cfg) for _ in range(self.cfg.depth)))
        self._blocks_path = path

    @property
    def blocks_list(self) -> nn.ModuleList:
        return self.get_submodule(self._blocks_path)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pool(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _patch_grid(self, x: torch.Tensor) -> int:
        height, width = x.shape[-2:]
        p = self.cfg.patch
        if height != width or height % p:
            raise ValueError(f"{type(self).__name__} needs square inputs whose side is a multiple of "
                             f"the patch size {p}, got {height}x{width}")
        return height // p

    def forward(self, x: torch.Tensor, outputs: Iterable[str] = ("pool",)) -> dict:
        wanted = {outputs} if isinstance(outputs, str) else set(outputs)
        unknown = wanted - set(OUTPUTS)
        if unknown:
            raise ValueError(f"unknown output(s) {sorted(unknown)}; a ViT backbone offers {OUTPUTS}")
        out: dict = {}
        if not wanted:
            return out
        grid = self._patch_grid(x)
        h = self.tokens(x)
        depth = self.cfg.depth
        taps = {depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1} if "spatial" in wanted else set()
        spatial = []
        for i, block in enumerate(self.blocks_list):
            h = block(h)
            if i in taps:
                patches = h[:, self.prefix_tokens:]
                spatial.append(patches.transpose(1, 2).reshape(h.shape[0], -1, grid, grid))
        if "spatial" in wanted:
            out["spatial"] = spatial
        if "pool" in wanted:
            out["pool"] = self.pool(h)
        return out
