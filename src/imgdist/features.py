"""The extraction engine: any source -> backbone -> features and Gaussian statistics.

* Decoding and resizing run in DataLoader worker processes, overlapping the network.
* Order is the source's order, whatever the number of workers.
* The Gaussian statistics stream (O(d^2) memory); per-image features are kept only on request
  (``keep_features``), as float32.
* A content-addressed cache (SQLite, one database per backbone / weights / preprocessing /
  layer) stores each image's features under the SHA-256 of its encoded bytes, committed batch by
  batch: unchanged images are never recomputed, and an interrupted run loses at most one batch.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import defaults as D
from .backbones import Backbone, load_backbone
from .checks import check_batch_memory, check_int, resolve_device
from .decode import max_pixels
from .errors import ImageError, ImgdistError
from .preprocess import Preprocessing
from .provenance import Provenance
from .sources import ImageSource, Skipped, check_on_error, open_source
from .stats import GaussianStats

#: bump when the cached values would change for the same key (e.g. a preprocessing fix)
CACHE_FORMAT = 1
#: cached rows read per query
CACHE_READ_CHUNK = 1000
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _area_factor(spec, prep) -> float:
    """Activation memory scales with the input area; a recipe may use another size than the spec's."""
    if not spec.input_size or not prep.size:
        return 1.0
    return (prep.size / spec.input_size) ** 2


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

    def __len__(self) -> int:
        return len(self.names)


class _Decoded(Dataset):
    """Loads and resizes source items in a worker; failures travel back as values, not exceptions,
    so that ``on_error='skip'`` can count them and ``'raise'`` can name the first in order."""

    def __init__(self, source: ImageSource, prep: Preprocessing, indices: list[int]):
        self.source, self.prep, self.indices = source, prep, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            return i, self.prep.resize_image(self.source.load(i)), None
        except ImageError as exc:
            return i, None, (exc.name, exc.cause)
        except ValueError as exc:  # e.g. resize 'none' on an image of the wrong size
            return i, None, (self.source.name_of(i), " ".join(str(exc).split()))


def _collate(items):
    good = [(i, x) for i, x, err in items if err is None]
    errors = [(i, err) for i, _, err in items if err is not None]
    indices = [i for i, _ in good]
    tensors = [x for _, x in good]
    if tensors and any(t.shape != tensors[0].shape for t in tensors):
        # only the 'native' (no resize) recipes can get here
        return indices, tensors, errors
    return indices, (torch.stack(tensors) if tensors else None), errors


class FeatureCache:
    """SQLite table: image content hash -> feature vector (+ logits)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS features "
                        "(hash TEXT PRIMARY KEY, feat BLOB, logits BLOB)")

    def present(self, hashes: list[str], need_logits: bool = False) -> set[str]:
        """Which of ``hashes`` have a row (with logits, if ``need_logits``)."""
        condition = " AND logits IS NOT NULL" if need_logits else ""
        found = set()
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            rows = self.db.execute(f"SELECT hash FROM features WHERE hash IN "
                                   f"({','.join('?' * len(chunk))}){condition}", chunk)
            found.update(h for (h,) in rows)
        return found

    def get(self, hashes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        found = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            rows = self.db.execute(f"SELECT hash, feat, logits FROM features WHERE hash IN "
                                   f"({','.join('?' * len(chunk))})", chunk)
            for h, feat, logits in rows:
                found[h] = (np.frombuffer(feat, np.float32),
                            None if logits is None else np.frombuffer(logits, np.float32))
        return found

    def put(self, hashes: list[str], feats: np.ndarray, logits: np.ndarray | None) -> None:
        rows = [(h, feats[j].tobytes(), None if logits is None else logits[j].tobytes())
                for j, h in enumerate(hashes)]
        with self.db:  # one transaction per batch: committed work survives an interruption
            self.db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?)", rows)

    def close(self):
        self.db.close()


class FeatureExtractor:
    """A backbone ready to turn sources into :class:`Features`.

    ``backbone``: a registered name (``imgdist backbones``) or a :class:`Backbone` (e.g. from
    :func:`imgdist.custom_backbone`). ``mode``: the resize mode (default: the backbone's).
    ``dims``: a smaller feature layer where the backbone has one (Inception: 64, 192, 768).
    ``cache``: True (the default cache folder), False, or a folder.
    """

    def __init__(self, backbone: str | Backbone = D.EVAL_BACKBONE, *, weights=None, mode: str | None = None,
                 dims: int | None = None, device: str = D.DEVICE, batch_size: int = D.BATCH_SIZE,
                 workers: int | None = None, progress: bool = True, cache: bool | str = False,
                 precision: str = "fp32"):
        # everything that can be refused is refused before the weights are read
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.workers = None if workers is None else check_int("workers", workers, 0)
        if precision not in PRECISIONS:
            raise ImgdistError(f"precision (--precision) {precision!r}: choose from {', '.join(PRECISIONS)}")
        max_pixels()  # the environment's limit is checked here, not as a traceback from a worker
        self.device = torch.device(resolve_device(device))
        self.dtype = PRECISIONS[precision]
        if self.dtype != torch.float32 and self.device.type == "cpu":
            raise ImgdistError(f"precision {precision} is only offered on GPU; use fp32 on CPU")
        self.model = load_backbone(backbone, weights, progress=progress)
        self.spec = self.model.spec
        self.prep = self.spec.preprocessing(mode)
        self.layer = self.spec.output_for_dim(dims)
        check_batch_memory(self.batch_size, self.spec.memory_mb_per_image * _area_factor(self.spec, self.prep),
                           self.spec.name, str(self.device), precision)
        self.progress = progress
        self.model = self.model.to(self.device, self.dtype)
        if self.spec.name != "pixels":  # channels_last: 1.5-1.7x on CPU for both CNNs (benchmarks/)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.provenance = Provenance(
            backbone=self.spec.name, weights_sha256=getattr(self.model, "weights_id", None),
            resize_mode=self.prep.name, preprocessing=self.prep.describe(), feature_layer=self.layer)
        self.cache_dir = _cache_root(cache)

    @property
    def feature_dim(self) -> int:
        """Size of the chosen feature layer."""
        if self.layer == "pool":
            return self.spec.feature_dim
        return next(d for d, name in self.spec.feature_layers.items() if name == self.layer)

    # ---------------------------------------------------------------- network

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor, logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Resized, pre-scaled N x 3 x S x S batch -> (features, logits or None) as float32 numpy.

        Logits are computed only on request: a low feature layer (``dims=64``) then stops the
        network early."""
        x = self.prep.normalise(batch.to(self.device, torch.float32)).to(self.dtype)
        if self.spec.name != "pixels":
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = (self.layer, "logits") if logits and self.spec.has_logits else (self.layer,)
        out = self.model(x, outputs=outputs)
        feats = out[self.layer].float().cpu().numpy()
        logits = out["logits"].float().cpu().numpy() if "logits" in out else None
        return feats, logits

    def embed_images(self, images, logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """In-memory images (any source form: uint8 tensors N x C x H x W, arrays, PIL) -> features."""
        source = open_source(images)
        batch = torch.stack([self.prep.resize_image(source.load(i)) for i in range(len(source))])
        return self.embed(batch, logits)

    # ---------------------------------------------------------------- sources

    def extract(self, source, *, keep_features: bool = True, keep_logits: bool = False,
                on_error: str = "raise", desc: str | None = None) -> Features:
        check_on_error(on_error)
        source = open_source(source)
        n = len(source)
        hashes = self._hashes(source) if self.cache_dir else None
        cache = FeatureCache(self._cache_path()) if hashes is not None else None
        keep_logits = keep_logits and self.spec.has_logits
        # rows cached without logits (by a run that needed none) do not count when logits are needed
        found = cache.present(sorted(set(hashes)), keep_logits) if cache else set()

        feats_out: list = [None] * n
        logits_out: list = [None] * n
        stats = GaussianStats(provenance=self.provenance)
        skipped = Skipped()
        errors: dict[int, tuple[str, str]] = {}

        first_shape = None
        todo = [i for i in range(n) if hashes is None or hashes[i] not in found]
        cached_idx = [i for i in range(n) if hashes is not None and hashes[i] in found]
        bar = tqdm(total=n, desc=desc or _short(source.label), unit="img", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            for start in range(0, len(cached_idx), CACHE_READ_CHUNK):
                # in chunks: without keep_features, memory stays O(d^2) however much is cached
                chunk = cached_idx[start:start + CACHE_READ_CHUNK]
                rows = cache.get([hashes[i] for i in chunk])
                stats.update(np.stack([rows[hashes[i]][0] for i in chunk]))
                for i in chunk:
                    feats_out[i] = rows[hashes[i]][0] if keep_features else None
                    logits_out[i] = rows[hashes[i]][1] if keep_logits else None
                bar.update(len(chunk))
            for indices, batch, errs in self._loader(source, todo):
                for i, err in errs:
                    errors[i] = err
                if errs and on_error == "raise":
                    first = min(i for i, _ in errs)
                    raise ImageError(*errors[first])
                if batch is not None:
                    first_shape = self._check_one_size(source, indices, batch, first_shape)
                    if isinstance(batch, list):
                        batch = torch.stack(batch)
                    feats, logits = self.embed(batch, keep_logits)
                    if not np.isfinite(feats).all():
                        raise ImgdistError(f"{self.spec.name} produced non-finite features "
                                           f"(first image of the batch: {source.name_of(indices[0])})")
                    stats.update(feats)
                    if cache:
                        cache.put([hashes[i] for i in indices], feats, logits)
                    for j, i in enumerate(indices):
                        feats_out[i] = feats[j] if keep_features else None
                        logits_out[i] = logits[j] if keep_logits and logits is not None else None
                bar.update(len(indices) + len(errs))
        finally:
            bar.close()
            if cache:
                cache.close()
        for i in sorted(errors):
            skipped.items.append(errors[i])
        good = [i for i in range(n) if i not in errors]
        if not good:
            raise ImgdistError(f"{source.label}: none of the {n} images could be read "
                               f"({skipped.summary()})")
        return Features(
            names=[source.name_of(i) for i in good], stats=stats, provenance=self.provenance,
            features=np.stack([feats_out[i] for i in good]).astype(np.float32) if keep_features else None,
            logits=np.stack([logits_out[i] for i in good]).astype(np.float32) if keep_logits else None,
            skipped=skipped, cached=len(cached_idx), indices=good, device=str(self.device))

    def _check_one_size(self, source, indices, batch, first_shape):
        """Recipes without resizing (``pixels`` at native size) need every image at one size."""
        shapes = [tuple(t.shape) for t in batch]
        first_shape = first_shape or shapes[0]
        for j, shape in enumerate(shapes):
            if shape != first_shape:
                raise ImageError(source.name_of(indices[j]),
                                 f"is {shape[2]}x{shape[1]}, earlier images are {first_shape[2]}x"
                                 f"{first_shape[1]}; resize mode {self.prep.name!r} needs one size")
        return first_shape

    def _loader(self, source: ImageSource, indices: list[int]):
        if not indices:
            return iter(())
        workers = self.workers
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if source.parallel_decode and len(indices) > self.batch_size else 0
        return DataLoader(_Decoded(source, self.prep, indices), batch_size=self.batch_size, shuffle=False,
                          num_workers=workers, collate_fn=_collate,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def _hashes(self, source: ImageSource) -> list[str] | None:
        hashes = []
        for i in range(len(source)):
            data = source.content_bytes(i)
            if data is None:
                return None  # in-memory images: nothing stable to key a cache on
            hashes.append(hashlib.sha256(data).hexdigest())
        return hashes

    def _cache_path(self) -> str:
        key = "|".join(str(v) for v in (CACHE_FORMAT, self.spec.name, self.provenance.weights_sha256,
                                         self.prep, self.layer))
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return os.path.join(self.cache_dir, f"{self.spec.name}-{self.layer}-{self.prep.name}-{digest}.sqlite")


def _cache_root(cache: bool | str) -> str | None:
    if not cache:
        return None
    if isinstance(cache, (str, os.PathLike)):
        return os.fspath(cache)
    from .weights import cache_dir

    return os.fspath(cache_dir() / "features")


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else "..." + label[-(width - 3):]


def extract_features(source, backbone: str | Backbone = D.EVAL_BACKBONE, **kwargs) -> Features:
    """One-call form of :class:`FeatureExtractor` ``(backbone, ...).extract(source)``."""
    extract_kwargs = {k: kwargs.pop(k) for k in ("keep_features", "keep_logits", "on_error") if k in kwargs}
    return FeatureExtractor(backbone, **kwargs).extract(source, **extract_kwargs)
