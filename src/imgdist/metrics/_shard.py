"""One process's share of a metric computation split over several processes.

The metric functions stay pure: they compute the blocks, subsets or subset sizes a
:class:`Shard` assigns to this process (block ``i`` to process ``i % world``) into arrays that
are zero elsewhere, and the shard's ``gather`` (injected by :mod:`imgdist.evaluation.distributed`; every
process's array, in rank order) adds them up. Each entry then comes from the one process that
owns it plus exact zeros, so the combined result has the bits a single process computes, in the
same blocks with the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    #: every process's array, in rank order (None: one process)
    gather: Callable[[np.ndarray], list[np.ndarray]] | None = None

    def __post_init__(self):
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside 0..{self.world - 1}")
        if self.world > 1 and self.gather is None:
            raise ValueError("a shard of several processes needs a gather function")

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank

    def total(self, partial: np.ndarray) -> np.ndarray:
        """The sum over processes of arrays that are each zero outside their owner's entries."""
        if self.world == 1:
            return partial
        parts = self.gather(np.ascontiguousarray(partial))
        out = np.array(parts[0], copy=True)
        for part in parts[1:]:
            if out.dtype == bool:
                out |= part
            else:
                out += part
        return out


ALONE = Shard()
