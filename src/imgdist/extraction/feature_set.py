"""What an extraction gives: :class:`Features` (names in source order, Gaussian statistics, and the
per-image arrays that were asked for)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ImgdistError
from .provenance import Provenance
from .sources import Skipped
from .stats import GaussianStats

#: rows accumulated at a time (statistics-only runs hold no more than this many)
CACHE_READ_CHUNK = 1000


@dataclass
class Features:
    """The result of one extraction: names in order, statistics, optional per-image arrays."""

    names: list[str]
    stats: GaussianStats
    provenance: Provenance
    features: np.ndarray | None = None   # N x d float32, the chosen feature layer
    logits: np.ndarray | None = None     # N x K float32, where the backbone has a classifier
    skipped: Skipped = field(default_factory=Skipped)
    cached: int = 0                      # how many images came from the cache
    indices: list[int] = field(default_factory=list)  # each image's position in the source
    device: str | None = None                         # where the network ran
    timing: object = None                   # seconds per stage, decoding workers
    #: further outputs computed in the same pass (``extract(extra_layers=...)``): their streaming
    #: statistics, and their per-image arrays (float32) where ``keep_extra`` asked for them
    extra: dict[str, GaussianStats] = field(default_factory=dict)
    extra_features: dict[str, np.ndarray] = field(default_factory=dict)
    #: ``stats`` (and ``extra``) were read from a file, not accumulated from ``features`` (an ADM
    #: reference batch's stored mu/sigma beside its images): distances use them, never the rows
    stats_from_file: bool = False
    #: each image's prompt (text-to-image runs), its text tower embedding and whether the tokenizer
    #: truncated it (longer than the tower's context)
    prompts: list[str] | None = None
    text: np.ndarray | None = None
    prompts_truncated: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_array(cls, features, *, provenance: Provenance | None = None, names: list[str] | None = None,
                   logits=None, rows=None, name: str = "features") -> "Features":
        """Features computed elsewhere (an N x d array) as a set imgdist evaluates: statistics
        accumulated in chunks (no float64 copy of the whole set). ``rows``: the row indices whose
        statistics to accumulate (a process's share; all by default); ``name``: the set's name in
        errors."""
        x = np.asarray(features)
        if x.ndim != 2:
            raise ImgdistError(f"{name}: features must be an N x d array, got shape {x.shape}")
        if x.dtype.kind not in "fiu":
            raise ImgdistError(f"{name}: features must be numbers, got {x.dtype}")
        if len(x) == 0 or x.shape[1] == 0:
            raise ImgdistError(f"{name}: features hold no values (shape {x.shape})")
        if not np.isfinite(x).all():
            raise ImgdistError(f"{name}: features contain NaN or infinity")
        provenance = provenance or Provenance()
        stats = GaussianStats(x.shape[1], provenance)
        chosen = np.arange(len(x)) if rows is None else np.asarray(rows)
        for start in range(0, len(chosen), CACHE_READ_CHUNK):
            stats.update(x[chosen[start:start + CACHE_READ_CHUNK]])
        return cls(names=list(names) if names is not None else [f"[{i}]" for i in range(len(x))], stats=stats,
                   provenance=provenance, features=x.astype(np.float32, copy=False),
                   logits=None if logits is None else np.asarray(logits, dtype=np.float32),
                   indices=list(range(len(x))))
