"""The state of one network's extraction of one source: per-image outputs in source order, the
streaming statistics, the cache reads and writes, the errors, and what is checked across batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ImageError, ImgdistError
from .batches import Pending
from .cache import FeatureCache
from .feature_set import CACHE_READ_CHUNK, Features
from .sources import ImageSource, Skipped
from .stats import DeviceStats, GaussianStats


@dataclass
class Timing:
    """Seconds spent per stage of one extraction (``Features.timing``)."""

    hash: float = 0.0
    cache_read: float = 0.0
    decode: float = 0.0      # first batch only when workers decode the rest in parallel
    compute: float = 0.0     # transfer, device-side resize, network, copy back
    stats: float = 0.0
    wait: float = 0.0        # the main process waiting for the decoding processes' batches
    workers: int = 0


class ExtractionRun:
    """The state of one :meth:`FeatureExtractor.extract`: per-image outputs in source order, the
    streaming statistics, the errors, and what is checked across batches."""

    def __init__(self, extractor, source: ImageSource, keep_features: bool, keep_logits: bool, on_error: str,
                 timing: Timing):
        self.ex, self.source = extractor, source
        self.n = len(source)
        self.keep_features, self.keep_logits, self.on_error = keep_features, keep_logits, on_error
        self.feats: list = [None] * self.n
        self.logits: list = [None] * self.n
        self.stats = GaussianStats(provenance=extractor.provenance)  # cached rows, on the host
        self.device_stats = DeviceStats()                            # computed rows, on the device
        self.errors: dict[int, tuple[str, str]] = {}
        self.first_shape = self.dim = None
        self.cached: list[int] = []
        self.timing = timing  # shared by the networks fed from one decode
        self.extra_stats: dict[str, DeviceStats] = {}
        self.extra_rows: dict[str, list] = {}

    def want_extra(self, names: tuple[str, ...], keep: bool) -> None:
        self.extra_stats = {name: DeviceStats() for name in names}
        self.extra_rows = {name: [None] * self.n for name in names} if keep else {}

    def needs_host(self, cache) -> bool:
        """Whether computed features must come to the host (else only the statistics are kept)."""
        return bool(self.keep_features or self.keep_logits or cache)

    def read_cache(self, cache: FeatureCache, keys: list) -> list[int]:
        """Take every sound cached row; returns the indices still to compute.

        In chunks: without ``keep_features``, memory stays O(d^2) however much is cached. Only
        sound rows come back (rows without logits do not count when logits are needed)."""
        t = time.perf_counter()
        keyed = [i for i in range(self.n) if keys[i] is not None]
        for start in range(0, len(keyed), CACHE_READ_CHUNK):
            chunk = keyed[start:start + CACHE_READ_CHUNK]
            rows = cache.get(list(dict.fromkeys(keys[i] for i in chunk)), self.keep_logits)
            hits = []
            for i in chunk:
                row = rows.get(keys[i])
                # at native size a row of another length is another image size: computing
                # that image names it (one run needs one size)
                if row is not None and (self.dim is None or len(row[0]) == self.dim):
                    self.dim = len(row[0])
                    hits.append(i)
            for i in hits:
                self.feats[i] = rows[keys[i]][0] if self.keep_features else None
                self.logits[i] = rows[keys[i]][1] if self.keep_logits else None
            if hits:
                self.stats.update(np.stack([rows[keys[i]][0] for i in hits]))
            self.cached += hits
        self.timing.cache_read += time.perf_counter() - t
        done = set(self.cached)
        return [i for i in range(self.n) if i not in done]

    def add_errors(self, errs) -> None:
        for i, err in errs:
            self.errors[i] = err
        if errs and self.on_error == "raise":
            raise ImageError(*self.errors[min(i for i, _ in errs)])

    def collect(self, indices: list[int], pending: Pending, cache: FeatureCache | None, keys) -> None:
        """A finished batch's outputs into the statistics, the cache and the per-image lists."""
        t = time.perf_counter()
        feats, logits = pending.result()
        self.timing.compute += time.perf_counter() - t
        source = self.source
        if not pending.finite():  # no number is ever built from NaN or infinity
            first = source.name_of(indices[0])
            if self.ex.precision == "fp16":
                raise ImgdistError(f"{self.ex.spec.name}'s fp16 activations overflow (non-finite features; first "
                                   f"image of the batch: {first}); use --precision bf16")
            raise ImgdistError(f"{self.ex.spec.name} produced non-finite features (first image of the batch: {first})")
        d = pending.on_device[0].shape[1]
        if self.dim is not None and d != self.dim:
            raise ImageError(source.name_of(indices[0]), f"gives {d} feature values, earlier images {self.dim}; "
                                                         f"resize mode {self.ex.prep.name!r} needs one size")
        self.dim = d
        t = time.perf_counter()
        self.device_stats.update(pending.on_device[0])
        for name, values in pending.extra_on_device.items():
            self.extra_stats[name].update(values)
        for name, values in pending.extra().items():
            for j, i in enumerate(indices):
                self.extra_rows[name][i] = values[j]
        self.timing.stats += time.perf_counter() - t
        if cache:
            have = [j for j, i in enumerate(indices) if keys[i] is not None]
            cache.put([keys[indices[j]] for j in have], feats[have], None if logits is None else logits[have])
        for j, i in enumerate(indices):
            self.feats[i] = feats[j] if self.keep_features else None
            self.logits[i] = logits[j] if self.keep_logits and logits is not None else None

    def features(self) -> Features:
        if self.device_stats.n:  # the one copy of the statistics to the host
            self.stats.merge(self.device_stats.to_host(self.ex.provenance))
        skipped = Skipped([self.errors[i] for i in sorted(self.errors)])
        good = [i for i in range(self.n) if i not in self.errors]
        extra = {name: ds.to_host(replace(self.ex.provenance, feature_layer=name))
                 for name, ds in self.extra_stats.items()}
        if not self.n:  # e.g. a torchrun rank whose shard of a small set is empty
            spec = self.ex.spec
            return Features(names=[], stats=self.stats, provenance=self.ex.provenance,
                            features=np.zeros((0, self.ex.feature_dim), np.float32) if self.keep_features else None,
                            logits=np.zeros((0, spec.num_classes), np.float32) if self.keep_logits else None,
                            device=str(self.ex.device), timing=self.timing, extra=extra,
                            extra_features={name: np.zeros((0, spec.extra_outputs[name]), np.float32)
                                            for name in self.extra_rows})
        if not good:
            raise ImgdistError(f"{self.source.label}: none of the {self.n} images could be read "
                               f"({skipped.summary()})")
        return Features(
            names=[self.source.name_of(i) for i in good], stats=self.stats, provenance=self.ex.provenance,
            features=np.stack([self.feats[i] for i in good]).astype(np.float32) if self.keep_features else None,
            logits=np.stack([self.logits[i] for i in good]).astype(np.float32) if self.keep_logits else None,
            skipped=skipped, cached=len(self.cached), indices=good, device=str(self.ex.device),
            timing=self.timing, extra=extra,
            extra_features={name: np.stack([rows[i] for i in good]).astype(np.float32)
                            for name, rows in self.extra_rows.items()})
