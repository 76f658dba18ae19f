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
from .registry import PROMPTS, Card, Metric, Section, Setting, register

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


# ---------------------------------------------------------------- registration

#: the network the CLIP score runs on when none is named
CLIP_SCORE_SPACE = ("clip-vit-l14", None)


def _per_image(run) -> np.ndarray:
    return run.once("clip_score", lambda: clip_score_per_image(run.xf, run.fake.text,
                                                               scale=run.options.clip_score_scale))


def _compute(run) -> float:
    scores = _per_image(run)
    truncated = int(np.sum(run.fake.prompts_truncated))
    run.result.details["clip_score"] = {"scale": run.options.clip_score_scale, "prompts_truncated": truncated}
    if truncated:
        run.result.warnings.append(
            f"{truncated} of {len(scores)} prompts are longer than the text tower's 77 tokens and were truncated as "
            "OpenAI's tokenize(..., truncate=True) does (end-of-text token kept last); --per-image marks them")
    return float(scores.mean())


def _note(result) -> str | None:
    d = result.details.get("clip_score")
    if d is None:
        return None
    return (f"CLIP score: {d['scale']:g} x max(cos(image, prompt), 0), mean over the images"
            + (" (Hessel et al.'s CLIP-S)" if d["scale"] == HESSEL_SCALE else ""))


def _report(ctx) -> Section | None:
    """The images that match their prompts worst, with the prompts."""
    fake = ctx.fake
    if getattr(fake, "text", None) is None:
        return None
    scores = clip_score_per_image(ctx.xf, fake.text, scale=ctx.options.clip_score_scale)
    worst = np.argsort(scores, kind="stable")[:ctx.per_section]
    cards = tuple(Card((("fake", int(i)),), (("CLIP score", float(scores[i])), ("prompt", fake.prompts[i])))
                  for i in worst)
    return Section("clip-score", "Images that match their prompts worst",
                   f"The {len(worst)} lowest CLIP scores ({ctx.options.clip_score_scale:g} x max(cos(image, prompt), "
                   f"0)) of {len(scores)}, lowest first, each with its prompt.", cards)


CLIP_SCORE = register(Metric(
    "clip-score", "how well each image matches its prompt: 100 x max(cos(image, text), 0) on CLIP embeddings, "
    "mean over images (Hessel et al. 2021)", _compute, "CLIPScore", "CLIPScore", lower_is_better=False,
    needs={PROMPTS}, published_on=None, space=CLIP_SCORE_SPACE, needs_real=False, note=_note, report=_report,
    settings=(Setting("clip_score_scale", CLIP_SCORE_SCALE, "CLIP score: the factor w in w x max(cos, 0); 2.5 "
                      "gives Hessel et al.'s CLIP-S", kind="number", minimum=1e-9, in_label=True),),
    per_image={"clip_score": _per_image, "prompt": lambda run: list(run.fake.prompts),
               "prompt_truncated": lambda run: list(run.fake.prompts_truncated)},
    order=65, paper="Hessel et al., CLIPScore: A Reference-free Evaluation Metric for Image Captioning, EMNLP 2021",
    function=lambda sets, o: clip_score(sets.fake, sets.fake_text, scale=o.clip_score_scale)))
