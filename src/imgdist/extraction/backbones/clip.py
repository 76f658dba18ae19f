"""CLIP image encoders (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision"): ``clip-vit-b32``, ``clip-vit-l14`` and ``clip-vit-l14-336``.

The feature is the projected image embedding, ``ln_post(CLS) @ proj`` (512 or 768 numbers), not
normalised: what torch-fidelity's ``clip-*`` extractors and clean-fid's ``clip_vit_b_32`` compute
FID on. CMMD (:func:`imgdist.metrics.cmmd`, Jayasumana et al. 2024) L2-normalises it, as the
paper's code does, on ``clip-vit-l14-336``.

The network is OpenAI's ``VisionTransformer`` in the shared :mod:`.vit` trunk: a bias-free patch
convolution (``conv1``), a class embedding and fixed position embeddings, LayerNorm ``ln_pre``
before the blocks (``eps = 1e-5`` everywhere), blocks with QuickGELU ``x * sigmoid(1.702 x)`` and
``nn.MultiheadAttention``'s tensor names, ``ln_post`` on the CLS token and the projection ``proj``.
The position embeddings are used as trained: the input must have the model's resolution.

The text tower (:class:`CLIPText`, for the CLIP score) comes from the same file: token embedding,
learned position embeddings for 77 tokens, a causal transformer of the same blocks (each token
sees itself and the tokens before it), ``ln_final``, and the projection ``text_projection`` of the
end token's feature, i.e. the position of the largest id (:mod:`..tokenizer`), as OpenAI's
``encode_text`` takes it.

Weights: OpenAI's official files, TorchScript archives whose URL path carries the file's SHA-256
(verified on download together with the pinned size), or a plain state dict with OpenAI's tensor
names. Their tensors are read without running the archive's code (:mod:`.checkpoint`); each tower
takes its own tensors (``visual.*``; ``token_embedding``, ``positional_embedding``,
``transformer.*``, ``ln_final``, ``text_projection``) and they must match exactly. Most of them are
stored in float16 and computed in float32, as torch-fidelity and ``clip.load`` on CPU do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import numpy as np

from ..preprocess import Preprocessing
from ..tokenizer import CONTEXT_LENGTH, OPENAI_SPECIALS, VOCAB_SIZE, Tokens, get_tokenizer
from .registry import register
from .base import BackboneSpec, WeightsSpec, build_loaded
from .vit import Block, BlockLayout, ViTConfig, VisionTransformer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BASE_URL = "https://openaipublic.azureedge.net/clip/models"

LAYOUT = BlockLayout(norm1="ln_1", qkv_weight="attn.in_proj_weight", qkv_bias="attn.in_proj_bias",
                     out="attn.out_proj", norm2="ln_2", fc1="mlp.c_fc", fc2="mlp.c_proj")


#: where a CLIP file keeps its text tower (top level, beside ``visual.*`` and ``logit_scale``)
TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@dataclass(frozen=True)
class TextConfig:
    """CLIP's text transformer: ``width``, ``depth`` blocks of ``heads`` heads (FFN 4 x width),
    projected to ``embed_dim``; ``specials``: the tokenizer's special-token strings."""

    width: int
    depth: int
    heads: int
    embed_dim: int
    act: str = "quick_gelu"
    context: int = CONTEXT_LENGTH
    vocab: int = VOCAB_SIZE
    eps: float = 1e-5
    specials: tuple[str, str] = OPENAI_SPECIALS

    @property
    def blocks(self) -> ViTConfig:
        # the image tower's block with a causal mask; no patches in a text transformer
        return ViTConfig(width=self.width, depth=self.depth, heads=self.heads, hidden=4 * self.width, patch=0,
                         grid=0, act=self.act, eps=self.eps, layout=LAYOUT, causal=True)


@dataclass(frozen=True)
class CLIPVariant:
    name: str
    label: str             # OpenAI's model name
    width: int
    depth: int
    patch: int
    resolution: int
    embed_dim: int
    filename: str
    sha256: str            # the 64-hex component of the official URL
    size: int              # bytes
    text: TextConfig | None = None

    @property
    def config(self) -> ViTConfig:
        return ViTConfig(width=self.width, depth=self.depth, heads=self.width // 64, hidden=4 * self.width,
                         patch=self.patch, grid=self.resolution // self.patch, act="quick_gelu", eps=1e-5,
                         layout=LAYOUT)

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.sha256}/{self.filename}"


VARIANTS = (
    CLIPVariant("clip-vit-b32", "ViT-B/32", 768, 12, 32, 224, 512, "ViT-B-32.pt",
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", 353_976_522,
                TextConfig(width=512, depth=12, heads=8, embed_dim=512)),
    CLIPVariant("clip-vit-l14", "ViT-L/14", 1024, 24, 14, 224, 768, "ViT-L-14.pt",
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", 932_768_134,
                TextConfig(width=768, depth=12, heads=12, embed_dim=768)),
    CLIPVariant("clip-vit-l14-336", "ViT-L/14@336px", 1024, 24, 14, 336, 768, "ViT-L-14-336px.pt",
                "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", 934_088_680,
                TextConfig(width=768, depth=12, heads=12, embed_dim=768)),
)
_VARIANTS = {v.name: v for v in VARIANTS}


class CLIPVisual(VisionTransformer):
    """CLIP's image tower with the official checkpoint's names (``visual.conv1.weight`` ...)."""

    def __init__(self, cfg: ViTConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        visual = nn.Module()
        self.visual = visual
        visual.conv1 = nn.Conv2d(3, w, cfg.patch, stride=cfg.patch, bias=False)
        visual.class_embedding = nn.Parameter(torch.randn(w) * w ** -0.5)
        visual.positional_embedding = nn.Parameter(torch.randn(cfg.grid * cfg.grid + 1, w) * w ** -0.5)
        visual.ln_pre = nn.LayerNorm(w, eps=cfg.eps)
        self._make_blocks("visual.transformer.resblocks")
        visual.ln_post = nn.LayerNorm(w, eps=cfg.eps)
        visual.proj = nn.Parameter(torch.randn(w, embed_dim) * w ** -0.5)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        grid = x.shape[-1] // self.cfg.patch
        if grid != self.cfg.grid:
            size = self.cfg.grid * self.cfg.patch
            raise ValueError(f"this CLIP encoder takes {size}x{size} inputs, got {x.shape[-1]}x{x.shape[-2]}")
        h = v.conv1(x).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(h.dtype).expand(h.shape[0], 1, -1)
        h = torch.cat((cls, h), dim=1) + v.positional_embedding.to(h.dtype)
        return v.ln_pre(h)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        v = self.visual
        cls = F.layer_norm(h[:, 0], (self.cfg.width,), v.ln_post.weight, v.ln_post.bias, self.cfg.eps)
        return cls @ v.proj


@dataclass(frozen=True)
class TextEmbeddings:
    """Projected text embeddings (N x embed_dim float32, not normalised) and the tokens they came from."""

    embeddings: np.ndarray
    tokens: Tokens


class CLIPText(nn.Module):
    """CLIP's text tower with the official checkpoint's names (``token_embedding.weight`` ...)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab, w)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context, w) * 0.01)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(Block(cfg.blocks) for _ in range(cfg.depth))
        self.ln_final = nn.LayerNorm(w, eps=cfg.eps)
        self.text_projection = nn.Parameter(torch.randn(w, cfg.embed_dim) * w ** -0.5)

    @property
    def tokenizer(self):
        """The tokenizer this tower was trained with (OpenAI's or OpenCLIP's special-token strings)."""
        return get_tokenizer(self.cfg.specials, self.cfg.context)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (N x context, as :mod:`..tokenizer` makes them) -> N x embed_dim."""
        if ids.ndim != 2 or ids.shape[1] != self.cfg.context:
            raise ValueError(f"this text tower takes N x {self.cfg.context} token ids, got {tuple(ids.shape)}")
        ids = ids.to(device=self.token_embedding.weight.device, dtype=torch.long)
        # the end token's feature: the first position of the largest id, as OpenAI's argmax finds it
        end = ids.argmax(dim=-1)
        # with causal attention no position sees the ones after it, so the padding after the last
        # end token cannot change any end token's feature: it is left out (typical captions fill
        # 10-25 of the 77 positions, so this is 3-5x less work, and the same numbers)
        length = int(end.max()) + 1 if len(ids) else 1
        ids = ids[:, :length]
        h = self.token_embedding(ids) + self.positional_embedding[:length]
        for block in self.transformer.resblocks:
            h = block(h)
        h = h[torch.arange(h.shape[0], device=h.device), end]
        return self.ln_final(h) @ self.text_projection

    encode_text = forward

    def encode_prompts(self, prompts, batch_size: int = 256) -> TextEmbeddings:
        """Prompts -> their embeddings (float32 numpy) and tokens (which prompts were truncated)."""
        return TextEmbeddings(*embed_prompt_blocks(self, prompts, batch_size))


@torch.inference_mode()
def embed_prompt_blocks(tower, prompts, batch_size: int, owns=None) -> tuple[np.ndarray, Tokens]:
    """``prompts`` tokenized and run through ``tower`` in batches of ``batch_size``: (N x embed_dim
    float32, the tokens). Batch ``b`` runs only where ``owns(b)`` (None: all); the rest stay zero,
    for another torchrun rank to fill."""
    tokens = tower.tokenizer(list(prompts))
    out = np.zeros((len(tokens), tower.cfg.embed_dim), dtype=np.float32)
    # batches of similar length, so that each batch runs only as long as its own longest prompt
    order = np.argsort(tokens.ids.argmax(axis=1), kind="stable")
    for b, start in enumerate(range(0, len(order), batch_size)):
        if owns is None or owns(b):
            rows = order[start:start + batch_size]
            out[rows] = tower(torch.from_numpy(tokens.ids[rows])).float().cpu().numpy()
    return out, tokens


def build_text_tower(cfg: TextConfig, weights_path: Path | str | None, name: str) -> CLIPText:
    """A text tower in eval mode: ``weights_path`` None keeps random weights; otherwise the file's
    text tensors (``TEXT_PREFIXES``), strictly."""
    return build_loaded(lambda: CLIPText(cfg), weights_path, name, only=TEXT_PREFIXES)


def build_text(weights_path: Path | str | None = None, variant: str = "clip-vit-b32") -> CLIPText:
    """The text tower of ``variant`` from the same file as its image tower."""
    v = _VARIANTS[variant]
    return build_text_tower(v.text, weights_path, f"CLIP {v.label} text encoder ({variant})")


def build(weights_path: Path | str | None = None, variant: str = "clip-vit-b32") -> CLIPVisual:
    """The image encoder in eval mode with ``.spec`` set; ``weights_path`` None keeps random weights."""
    v = _VARIANTS[variant]
    model = build_loaded(lambda: CLIPVisual(v.config, v.embed_dim), weights_path,
                         f"CLIP {v.label} image encoder ({variant})", only="visual.")
    model.spec = SPECS[variant]
    return model


def _modes(size: int) -> dict[str, Preprocessing]:
    mean255 = tuple(255 * m for m in CLIP_MEAN)
    std255 = tuple(255 * s for s in CLIP_STD)
    return {
        # OpenAI CLIP's own preprocess, also clean-fid's clip_vit_b_32 (CLIP-FID): Resize(size,
        # BICUBIC) of the shorter side on the PIL image, CenterCrop(size), ToTensor, Normalize
        "openai": Preprocessing("openai", size, "pil-bicubic-rgb", CLIP_MEAN, CLIP_STD, post_scale=1 / 255,
                                crop="resize-center"),
        # the CMMD reference code: largest centred square, PIL bicubic to size, / 255, CLIP mean/std
        "cmmd": Preprocessing("cmmd", size, "pil-bicubic-rgb", CLIP_MEAN, CLIP_STD, post_scale=1 / 255,
                              crop="center"),
        # torch-fidelity 0.4 clip-vit-*: TF1 bilinear to the input size on 0..255, then
        # (x - 255 mean) / (255 std)
        "tf": Preprocessing("tf", size, "tf1-bilinear", mean255, std255),
    }


def _spec(v: CLIPVariant) -> BackboneSpec:
    return BackboneSpec(
        name=v.name,
        feature_dim=v.embed_dim,
        input_size=v.resolution,
        modes=_modes(v.resolution),
        default_mode="cmmd" if v.name == "clip-vit-l14-336" else "openai",
        build=functools.partial(build, variant=v.name),
        text=functools.partial(build_text, variant=v.name),
        weights=WeightsSpec(filename=v.filename, url=v.url, sha256=v.sha256, size=v.size,
                            license="MIT (OpenAI CLIP)"),
        description=(f"CLIP {v.label} image encoder (OpenAI): projected image embedding"
                     + ("; the CMMD encoder" if v.name == "clip-vit-l14-336" else "")),
    )


SPECS: dict[str, BackboneSpec] = {v.name: register(_spec(v)) for v in VARIANTS}

__all__ = ["CLIPVisual", "CLIPText", "CLIPVariant", "TextConfig", "TextEmbeddings", "VARIANTS", "SPECS", "build",
           "build_text", "build_text_tower", "CLIP_MEAN", "CLIP_STD", "TEXT_PREFIXES", "LAYOUT"]
