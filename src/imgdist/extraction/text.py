"""Prompts through a text tower: each image's prompt embedded, in blocks a torchrun rank can share.

The prompts come from :func:`imgdist.extraction.prompts.read_prompts` (one per image, in source
order); the tower from :func:`imgdist.extraction.backbones.load_text_tower`. Every prompt is
tokenized (OpenAI's BPE, truncated as ``tokenize(..., truncate=True)`` does, which the returned
flags mark), and the embeddings are computed in blocks of similar length; under torchrun each
rank computes the blocks it owns and the rest arrive from the others, so every rank holds all.
"""

from __future__ import annotations

import numpy as np

from ..metrics._shard import ALONE, Shard
from .backbones.clip import embed_prompt_blocks

#: prompts per block (a block is one batch of the tower)
BLOCK = 256


def embed_prompts(tower, prompts: list[str], shard: Shard = ALONE) -> tuple[np.ndarray, np.ndarray]:
    """``(N x embed float32 embeddings, N truncated flags)`` of ``prompts`` through ``tower``."""
    out, tokens = embed_prompt_blocks(tower, prompts, BLOCK, shard.owns)
    out = shard.total(out)
    if not np.isfinite(out).all():
        from ..errors import ImgdistError

        raise ImgdistError("the text tower gave NaN or infinity for some prompts (broken weights?)")
    return out, np.asarray(tokens.truncated, dtype=bool)
