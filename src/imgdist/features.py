"""The extraction engine: any source -> backbone -> features and Gaussian statistics.

* Decoding and resizing run in DataLoader worker processes, overlapping the network.
* Order is the source's order, whatever the number of workers.
* The Gaussian statistics stream (O(d^2) memory); per-image features are kept only on request
  (``keep_features``), as float32.
* A content-addressed cache (:mod:`imgdist.cache`: SQLite, one file per backbone / weights /
  preprocessing / layer) stores each image's features (and logits, where computed) under the
  SHA-256 of its encoded bytes, committed batch by batch: unchanged images are never recomputed,
  and an interrupted run loses at most one batch. The file is untrusted: every row carries its
  lengths and a checksum and must hold finite values of the expected length, else it is dropped
  and its image recomputed; an unreadable file is moved aside and rebuilt; a locked or unusable
  cache means running without it. Each case is one warning, none changes a number.
* An item the hashing pass cannot read (a broken link, a FIFO, no permission) gets no cache key
  and fails in decoding like any unreadable image (skipped and counted, or the one-line error).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import defaults as D
from .backbones import Backbone, load_backbone
from .cache import CACHE_FORMAT, FeatureCache
from .checks import check_batch_memory, check_int, resolve_device
from .decode import max_pixels
from .errors import ImageError, ImgdistError
from .preprocess import Preprocessing
from .provenance import Provenance
from .sources import ImageSource, Skipped, check_on_error, open_source
from .stats import GaussianStats

#: cached rows read at a time (statistics-only runs hold no more than this many)
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
        self._cache_given_up = False

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
        keep_logits = keep_logits and self.spec.has_logits
        keys = self._hashes(source) if self.cache_dir and not self._cache_given_up else None
        cache = self._open_cache() if keys is not None else None

        feats_out: list = [None] * n
        logits_out: list = [None] * n
        stats = GaussianStats(provenance=self.provenance)
        skipped = Skipped()
        errors: dict[int, tuple[str, str]] = {}
        first_shape = dim = None
        cached_idx: list[int] = []
        bar = tqdm(total=n, desc=desc or _short(source.label), unit="img", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            keyed = [i for i in range(n) if keys is not None and keys[i] is not None]
            for start in range(0, len(keyed), CACHE_READ_CHUNK):
                # in chunks: without keep_features, memory stays O(d^2) however much is cached.
                # Only sound rows come back (rows without logits do not count when logits are
                # needed); every other image is computed below.
                chunk = keyed[start:start + CACHE_READ_CHUNK]
                rows = cache.get(list(dict.fromkeys(keys[i] for i in chunk)), keep_logits)
                hits = []
                for i in chunk:
                    row = rows.get(keys[i])
                    # at native size a row of another length is another image size: computing
                    # that image below names it (one run needs one size)
                    if row is not None and (dim is None or len(row[0]) == dim):
                        dim = len(row[0])
                        hits.append(i)
                for i in hits:
                    feats_out[i] = rows[keys[i]][0] if keep_features else None
                    logits_out[i] = rows[keys[i]][1] if keep_logits else None
                if hits:
                    stats.update(np.stack([rows[keys[i]][0] for i in hits]))
                cached_idx += hits
                bar.update(len(hits))
            _rate_from_here(bar, len(cached_idx))
            done = set(cached_idx)
            todo = [i for i in range(n) if i not in done]
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
                    dim = self._check_dim(source, indices[0], feats.shape[1], dim)
                    stats.update(feats)
                    if cache:
                        have = [j for j, i in enumerate(indices) if keys[i] is not None]
                        cache.put([keys[indices[j]] for j in have], feats[have],
                                  None if logits is None else logits[have])
                    for j, i in enumerate(indices):
                        feats_out[i] = feats[j] if keep_features else None
                        logits_out[i] = logits[j] if keep_logits and logits is not None else None
                bar.update(len(indices) + len(errs))
        finally:
            bar.close()
            if cache:
                cache.close()
                # locked or unusable: the warning said this run goes on without it (evaluate's
                # second set included), so later extractions neither retry nor repeat it
                self._cache_given_up = cache.given_up
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

    def _check_dim(self, source, index, d, dim):
        """Computed features must have the length of the cached ones (native size: one image size)."""
        if dim is not None and d != dim:
            raise ImageError(source.name_of(index), f"gives {d} feature values, earlier images {dim}; "
                                                    f"resize mode {self.prep.name!r} needs one size")
        return d

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

    def _hashes(self, source: ImageSource) -> list[str | None] | None:
        """Each item's cache key: the SHA-256 of its bytes; None for an item that cannot be read now
        (it goes to decoding, where it becomes an ordinary image error). None for in-memory images:
        nothing stable to key a cache on."""
        keys: list[str | None] = []
        for i in range(len(source)):
            try:
                data = source.content_bytes(i)
            except ImageError:
                keys.append(None)
                continue
            if data is None:
                return None
            keys.append(hashlib.sha256(data).hexdigest())
        return keys

    def _extractor_id(self) -> str:
        """What the cached values depend on besides the image (stored in the file and checked)."""
        return "|".join(str(v) for v in (CACHE_FORMAT, self.spec.name, self.provenance.weights_sha256,
                                         self.prep, self.layer))

    def _cache_path(self) -> str:
        digest = hashlib.sha256(self._extractor_id().encode()).hexdigest()[:16]
        return os.path.join(self.cache_dir, f"{self.spec.name}-{self.layer}-{self.prep.name}-{digest}.sqlite")

    def _open_cache(self) -> FeatureCache:
        # native size ('pixels' without resize): the length depends on the image, the checksum holds it
        feature_dim = self.feature_dim if self.prep.size is not None else None
        return FeatureCache.open(self._cache_path(), feature_dim=feature_dim,
                                 logits_dim=self.spec.num_classes if self.spec.has_logits else None,
                                 extractor=self._extractor_id())


def _cache_root(cache: bool | str) -> str | None:
    if not cache:
        return None
    if isinstance(cache, (str, os.PathLike)):
        return os.fspath(cache)
    from .weights import cache_dir

    return os.fspath(cache_dir() / "features")


def _rate_from_here(bar, done: int) -> None:
    """Restart the bar's clock and rate with ``done`` items (the cached ones) already counted, so
    that its speed and ETA are those of the network alone: cached rows arrive thousands of times
    faster than ViT-L/14 computes on a CPU, and counting them in the rate would show an ETA of
    seconds for hours of work. tqdm's own ``initial`` is the count its rate leaves out."""
    if not done or bar.disable:
        return
    bar.reset(total=bar.total)
    bar.n = bar.last_print_n = bar.initial = done
    bar.refresh()


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else "..." + label[-(width - 3):]


def extract_features(source, backbone: str | Backbone = D.EVAL_BACKBONE, **kwargs) -> Features:
    """One-call form of :class:`FeatureExtractor` ``(backbone, ...).extract(source)``."""
    extract_kwargs = {k: kwargs.pop(k) for k in ("keep_features", "keep_logits", "on_error") if k in kwargs}
    return FeatureExtractor(backbone, **kwargs).extract(source, **extract_kwargs)
