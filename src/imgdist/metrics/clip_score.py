"""CLIP score: how well each image matches its prompt, by the cosine of their CLIP embeddings.

Papers: J. Hessel, A. Holtzman, M. Forbes, R. Le Bras, Y. Choi, "CLIPScore: A Reference-free
Evaluation Metric for Image Captioning", EMNLP 2021 (``CLIP-S = w * max(cos, 0)`` with
``w = 2.5``); the text-to-image literature (Imagen, Saharia et al. 2022; SDXL, Podell et al. 2023;
torchmetrics' ``CLIPScore``) reports the same quantity with ``w = 100``::

    score_i = scale * max(cos(E_image_i, E_text_i), 0)        CLIP score = mean_i score_i

``E``: the projected embeddings of a CLIP model's image and text towers (not normalised; the
cosine normalises them). Each image is paired with its own prompt. Higher is better; the value
lies in ``[0, scale]``.

One difference from torchmetrics' code, though not from its documentation: torchmetrics
(1.9) averages ``100 * cos`` over the images and clamps the *mean* at 0, while its docstring and
Hessel et al. clamp each image's cosine. The two agree whenever no pair has a negative cosine,
which is the usual case with a trained CLIP; here each image is clamped, as specified.

Numerics: float64 throughout.
"""

from __future__ import annotations

import numpy as np

from ._arrays import as_features

__all__ = ["clip_score", "clip_score_per_image", "CLIP_SCORE_SCALE", "HESSEL_SCALE"]

CLIP_SCORE_SCALE = 100.0
HESSEL_SCALE = 2.5  # CLIP-S of Hessel et al. 2021


def clip_score_per_image(image_embeddings, text_embeddings, *, scale: float = CLIP_SCORE_SCALE) -> np.ndarray:
    """``scale * max(cos(image_i, text_i), 0)`` for each row pair: N image embeddings against the
    embeddings of their N prompts (N x d each). Returns N float64 values in ``[0, scale]``."""
    a = as_features(image_embeddings, "image embeddings")
    b = as_features(text_embeddings, "text embeddings")
    if a.shape != b.shape:
        raise ValueError(f"image and text embeddings must pair up row by row: shapes {a.shape} and {b.shape}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    norms = []
    for name, x in (("image", a), ("text", b)):
        norm = np.linalg.norm(x, axis=1)
        zero = np.flatnonzero(norm == 0)
        if len(zero):
            raise ValueError(f"{name} embedding {zero[0]} is all zeros: its cosine with anything is undefined")
        norms.append(norm)
    cosine = np.einsum("ij,ij->i", a, b) / (norms[0] * norms[1])
    return scale * np.maximum(np.clip(cosine, -1.0, 1.0), 0.0)


def clip_score(image_embeddings, text_embeddings, *, scale: float = CLIP_SCORE_SCALE) -> float:
    """The CLIP score of a set: the mean of :func:`clip_score_per_image` (at least one pair)."""
    per_image = clip_score_per_image(image_embeddings, text_embeddings, scale=scale)
    if len(per_image) == 0:
        raise ValueError("the CLIP score needs at least one image and its prompt")
    return float(per_image.mean())
