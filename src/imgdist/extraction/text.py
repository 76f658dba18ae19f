"""Prompts through a text tower: each image's prompt embedded, in blocks a torchrun rank can share.

The prompts come from :func:`imgdist.extraction.prompts.read_prompts` (one per image, in source
order); the tower from :func:`imgdist.extraction.backbones.load_text_tower`. Every prompt is
tokenized (OpenAI's BPE, truncated as ``tokenize(..., truncate=True)`` does, which the returned
flags mark), and the embeddings are computed in blocks of similar length; under torchrun each
rank computes the blocks it owns and the rest arrive from the others, so every rank holds all.
"""

from __future__ import annotations

import numpy as np
import torch

from ..metrics._shard import ALONE, Shard

#: prompts per block (a block is one batch of the tower)
BLOCK = 256


@torch.inference_mode()
def embed_prompts(tower, prompts: list[str], shard: Shard = ALONE) -> tuple[np.ndarray, np.ndarray]:
    """``(N x embed float32 embeddings, N truncated flags)`` of ``prompts`` through ``tower``."""
    tokens = tower.tokenizer(list(prompts))
    out = np.zeros((len(prompts), tower.cfg.embed_dim), dtype=np.float32)
    # blocks of similar length, so that each runs only as long as its own longest prompt
    order = np.argsort(tokens.ids.argmax(axis=1), kind="stable")
    for b, start in enumerate(range(0, len(order), BLOCK)):
        if shard.owns(b):
            rows = order[start:start + BLOCK]
            out[rows] = tower(torch.from_numpy(tokens.ids[rows])).float().cpu().numpy()
    out = shard.total(out)
    if not np.isfinite(out).all():
        from ..errors import ImgdistError

        raise ImgdistError("the text tower gave NaN or infinity for some prompts (broken weights?)")
    return out, np.asarray(tokens.truncated, dtype=bool)
