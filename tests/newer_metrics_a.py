"""Shared by the tests of rarity, P-precision/P-recall, precision/recall cover, RKE and sliced
Wasserstein: their reference fixture, and two ranks of a torchrun split played by two threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from imgdist.metrics._shard import Shard
from needs import require_file

FIXTURE = Path(__file__).parent / "fixtures" / "newer_metrics_a.npz"


def load_fixture() -> dict[str, np.ndarray]:
    """tests/fixtures/newer_metrics_a.npz, made by tools/peers/make_newer_metrics_fixtures_a.py
    (the rke-score package and naive transcriptions of the authors' formulas; nothing from imgdist)."""
    require_file(FIXTURE, "run tools/peers/make_newer_metrics_fixtures_a.py in the peers environment")
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def fixture_sets(ref: dict[str, np.ndarray]) -> list[str]:
    return [str(s) for s in ref["sets"]]


def two_ranks(compute):
    """``compute(shard)`` on ranks 0 and 1 of a two-process split at once (threads), their shards'
    gather handing every rank both ranks' arrays in rank order, as torch.distributed's all-gather
    does. Returns both ranks' results."""
    barrier = threading.Barrier(2, timeout=120)
    slots: list = [None, None]
    results: list = [None, None]
    errors: list = []

    def gather_for(rank):
        def gather(partial):
            slots[rank] = np.array(partial, copy=True)
            barrier.wait()
            both = [slots[0], slots[1]]
            barrier.wait()  # both have read before either writes its next array
            return both
        return gather

    def run(rank):
        try:
            results[rank] = compute(Shard(rank, 2, gather=gather_for(rank)))
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
