"""Deterministic stand-in weights with both towers, for the CLIP score and OpenCLIP parity checks.

Shared by ``tools/peers/make_text_fixtures.py`` (which loads these tensors into clip-anytorch and
open_clip) and the tests (which load them into imgdist), without importing imgdist. Key names,
shapes and dtypes come from ``fixtures/text_keys.json``, which the fixture script wrote from the
reference models themselves (clip-anytorch's ``CLIP`` after ``convert_weights`` for OpenAI's
ViT-B/32 and ViT-L/14 with their real text towers; open_clip's ``CLIP`` for ViT-B-32, ViT-H-14,
ViT-bigG-14 and two small configurations). Values come from ``numpy.random.default_rng(seed)``
drawn in key order, float64 then cast, so they do not depend on the torch version.

Recipe (:mod:`vit_stand_in`'s scales, drawn uniformly in float32 for speed; "std s" below means
uniform with that standard deviation): matrices (linear and patch-convolution weights) std
``1 / sqrt(fan_in)``, LayerNorm weights ``U(0.7, 1.3)``, biases std 0.1, class and position
embeddings std 0.5, token embeddings std 1, the projections ``visual.proj`` and ``text_projection``
std ``1 / sqrt(width)``.

Then one alignment step, so that CLIP scores are large enough to compare in relative terms: with
unrelated towers the cosine of an image and a text embedding is ~N(0, 1/d) (a few hundredths, and
half of them negative, clamped to 0). The biases of ``visual.ln_post`` and ``ln_final`` are set
(least norm) so that both project onto one common vector ``c ~ N(0, 1)`` of the embedding
space: every embedding is then ``c`` plus an image- or prompt-dependent part, and cosines spread
around ~0.5.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from vit_stand_in import FIXTURES

TEXT_KEYS_FILE = FIXTURES / "text_keys.json"


def text_keys(arch: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every tensor of ``arch`` (e.g. ``clip_b32_full``) in order."""
    data = json.loads(TEXT_KEYS_FILE.read_text())
    return [(name, tuple(shape), dtype) for name, shape, dtype in data["archs"][arch]]


def _normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    """Zero-mean values of standard deviation ``std``: uniform on ``[-std sqrt 3, std sqrt 3)``, drawn
    in float32 (the ViT-L/14 stand-in has 428 million values; normal draws take 5x as long)."""
    values = rng.random(shape, dtype=np.float32)
    values -= np.float32(0.5)
    values *= np.float32(2 * np.sqrt(3.0) * std)
    return values


def _values(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if name == "logit_scale":
        return np.full(shape, np.log(1 / 0.07), dtype=np.float32)
    if name == "token_embedding.weight":
        return _normal(rng, shape, 1.0)
    if name in ("positional_embedding", "visual.positional_embedding", "visual.class_embedding"):
        return _normal(rng, shape, 0.5)
    if name in ("text_projection", "visual.proj"):
        return _normal(rng, shape, shape[0] ** -0.5)
    if len(shape) >= 2:  # linear and patch-convolution weights, fan-in = all but the first axis
        return _normal(rng, shape, int(np.prod(shape[1:])) ** -0.5)
    if leaf == "weight":  # LayerNorm
        return rng.random(shape, dtype=np.float32) * np.float32(0.6) + np.float32(0.7)
    return _normal(rng, shape, 0.1)


def stand_in_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The stand-in tensors of ``arch``, in the reference model's names, order and dtypes."""
    rng = np.random.default_rng(seed)
    keys = text_keys(arch)
    values = {name: _values(rng, name, shape) for name, shape, _ in keys}
    dtypes = {name: getattr(torch, dtype) for name, _, dtype in keys}
    # round the projections to their stored dtype before solving, so the alignment holds as stored
    projections = {k: torch.from_numpy(values[k]).to(dtypes[k]).double().numpy()
                   for k in ("visual.proj", "text_projection")}
    common = rng.standard_normal(projections["text_projection"].shape[1])
    for bias, projection in (("visual.ln_post.bias", "visual.proj"), ("ln_final.bias", "text_projection")):
        p = projections[projection]  # width x embed, width >= embed: the least-norm b with b @ p = c
        values[bias] = (p @ np.linalg.solve(p.T @ p, common)).astype(np.float32)
    return {name: torch.from_numpy(values[name]).to(dtypes[name]) for name, _, _ in keys}


# --- images and prompts -----------------------------------------------------------------------

PHOTOS = ("coffee", "chelsea", "astronaut")
CLIP_SCORE_PROMPTS = ("a cup of coffee on a saucer", "a cat lying on a blanket",
                      "an astronaut in a white suit in front of the American flag")
TEXT_ONLY_PROMPTS = ("", "A PHOTO of a Dog \U0001f436 &amp; a caf\u00e9\u00a0table", "literal <|endoftext|> in a prompt",
                     "an oil painting of a lighthouse, " + "dramatic sky, " * 40 + "trending on artstation")


def builtin_photos() -> list[np.ndarray]:
    """imgdist's shipped scikit-image photos (``src/imgdist/data``) as uint8 H x W x 3."""
    from PIL import Image

    from vit_stand_in import ROOT

    return [np.array(Image.open(ROOT / "src" / "imgdist" / "data" / f"{n}.jpg").convert("RGB")) for n in PHOTOS]


def clip_scores(image_emb: np.ndarray, text_emb: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """Every image against every prompt, ``scale * max(cos, 0)``, in float64 (the fixture's reference)."""
    a = image_emb.astype(np.float64)
    b = text_emb.astype(np.float64)
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    return scale * np.maximum(cos, 0.0)
