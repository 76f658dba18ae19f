"""The extraction engine: any source -> backbone -> features and Gaussian statistics.

* Decoding and resizing run in worker processes (:mod:`imgdist.extraction.decode_pool`), overlapping the
  network: started once per extractor, on first need, and reused by every later extraction
  (``evaluate``'s sets), until :meth:`FeatureExtractor.close`.
* Order is the source's order, whatever the number of workers.
* The network runs in strict fp32 unless a precision is chosen (TF32 off for cuDNN and matmul
  during the extraction, the caller's settings restored after).
* The Gaussian statistics stream on the device where the features are (float64, O(d^2) memory)
  and come to the host once; per-image features are kept only on request (``keep_features``), as
  float32. ``extra_layers`` adds a backbone's further outputs (sFID's maps) in the same pass.
* A content-addressed cache (:mod:`imgdist.extraction.cache`: SQLite, one file per backbone, weights,
  resize recipe, layer, precision and BatchNorm folding, see ``_extractor_id``) stores each
  image's features (and logits, where computed) under the SHA-256 of its encoded bytes, each
  batch as soon as it is collected: unchanged images are never recomputed, and an interrupted run
  loses at most the batch in flight. Runs with extra layers go without it. The file is untrusted: every row carries its
  lengths and a checksum and must hold finite values of the expected length, else it is dropped
  and its image recomputed; an unreadable file is moved aside and rebuilt; a locked or unusable
  cache means running without it. Each case is one warning, none changes a number.
* An item the hashing pass cannot read (a broken link, a FIFO, no permission) gets no cache key
  and fails in decoding like any unreadable image (skipped and counted, or the one-line error).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import defaults as D
from .allocator import retained_memory
from .backbones import Backbone, get_spec, load_backbone
from .cache import CACHE_FORMAT, FeatureCache
from ..checks import (MEMORY_FRACTION, activation_bytes, available_memory, check_batch_memory, check_cpu_precision,
                     check_int, resolve_device)
from .decode import max_pixels
from .decode_pool import DecodePool
from ..errors import ImageError, ImgdistError, ImgdistWarning, one_line
from .preprocess import Preprocessing
from .provenance import Provenance
from .sources import ImageSource, Skipped, check_on_error, open_source
from .stats import DeviceStats, GaussianStats

#: cached rows read at a time (statistics-only runs hold no more than this many)
CACHE_READ_CHUNK = 1000
#: the network's dtype per precision; tf32 computes in float32 storage with TF32 tensor-core products
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


#: the largest automatic batch on an accelerator: network-only throughput on an H200 levels off
#: by 256 images (issue 16's rates were measured there); larger batches only cost memory
GPU_BATCH_KNEE = 256


def choose_batch_size(spec, prep, device: torch.device, precision: str) -> int:
    """The automatic batch size: as measured on a CPU (``CPU_BATCH_SIZE``); on CUDA the largest
    whose activations fit the memory budget, up to ``GPU_BATCH_KNEE`` (an out-of-memory error
    still halves it, see :meth:`FeatureExtractor._launch`)."""
    if device.type != "cuda":
        return D.CPU_BATCH_SIZE
    per_image = activation_bytes(spec.memory_mb_per_image * _area_factor(spec, prep), 1, precision)
    available = available_memory(str(device))
    if not per_image or available is None:  # a custom network: its memory is unknown
        return GPU_BATCH_KNEE
    return max(1, min(GPU_BATCH_KNEE, int(MEMORY_FRACTION * available // per_image)))


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
    timing: "_Timing | None" = None                   # seconds per stage, decoding workers
    #: further outputs computed in the same pass (``extract(extra_layers=...)``): their streaming
    #: statistics, and their per-image arrays (float32) where ``keep_extra`` asked for them
    extra: dict[str, GaussianStats] = field(default_factory=dict)
    extra_features: dict[str, np.ndarray] = field(default_factory=dict)
    #: ``stats`` (and ``extra``) were read from a file, not accumulated from ``features`` (an ADM
    #: reference batch's stored mu/sigma beside its images): distances use them, never the rows
    stats_from_file: bool = False

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


class _Decoded:
    """Decodes source items and runs the decoding side of the recipe (:meth:`Preprocessing.prepare`:
    uint8 images, resized here only by the Pillow kernels), in a worker or in the main process.
    Failures travel back as values, not exceptions, so that ``on_error='skip'`` can count them and
    ``'raise'`` can name the first in order."""

    def __init__(self, source: ImageSource, prep: Preprocessing, indices: list[int]):
        self.source, self.prep, self.indices = source, prep, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            return i, self.prep.prepare(self.source.load(i)), None
        except ImageError as exc:
            return i, None, (exc.name, exc.cause)
        except ValueError as exc:  # e.g. resize 'none' on an image of the wrong size
            return i, None, (self.source.name_of(i), one_line(exc))


def _decode_batch(source: ImageSource, prep: Preprocessing, indices: list[int]):
    """-> ``(indices, batch, errors)`` (see :func:`_collate`); in the main process or a decoding one."""
    dataset = _Decoded(source, prep, indices)
    return _collate([dataset[k] for k in range(len(dataset))])


def _pickled(work) -> bytes | None:
    """``work`` pickled for the decoding processes; None, with a warning, where it cannot be (a
    custom source holding e.g. a lambda): it is then decoded in the main process."""
    try:
        return pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises means the same
        warnings.warn(f"{work.args[0].label}: decoding in the main process, the source cannot be sent to "
                      f"decoding processes ({one_line(exc)})", ImgdistWarning, stacklevel=2)
        return None


def _collate(items):
    """-> (indices, batch, errors): one N x C x H x W tensor where every image has one size (the
    device resizes it as a whole), else a list of C x H x W tensors."""
    good = [(i, x) for i, x, err in items if err is None]
    errors = [(i, err) for i, _, err in items if err is not None]
    indices = [i for i, _ in good]
    tensors = [x for _, x in good]
    if tensors and any(t.shape != tensors[0].shape for t in tensors):
        return indices, tensors, errors
    return indices, (torch.stack(tensors) if tensors else None), errors


#: on a CPU device the network already uses every core: decoding workers pay only where decoding
#: is at least this share of the work (measured in benchmarks/bench_pipeline.py)
CPU_WORKER_SHARE = 0.3
#: decoding processes at most (beyond this, process start-up and IPC cost more than they bring)
MAX_WORKERS = 16


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def choose_workers(decode_s: float, compute_s: float, device_type: str, cores: int | None = None) -> int:
    """Decoding processes for the rest of a run, from the first batch's decode time (decoding and
    the Pillow resizes) and compute time (device-side resize and network), both per batch.

    On a CPU device the network's threads and the workers share the cores, so workers pay only
    where decoding is a large share (``CPU_WORKER_SHARE``), and then take that share of the cores
    (the network keeps the rest). On an accelerator the CPU only decodes: see
    :func:`accelerator_workers`.
    """
    cores = usable_cores() if cores is None else cores
    if cores < 2 or decode_s <= 0:
        return 0
    if device_type == "cpu":
        share = decode_s / (decode_s + compute_s)
        if share < CPU_WORKER_SHARE:
            return 0
        return max(1, min(cores - 1, round(cores * share)))
    return accelerator_workers(cores)


def accelerator_workers(cores: int | None = None) -> int:
    """Decoding processes beside an accelerator: every core the process may use, up to
    ``MAX_WORKERS``. The main process mostly waits for the device (issue 16: 15 of 16 cores
    decoding PNGs fed an H200 at 6,000 img/s, below its bf16 rate), and the bounded prefetch
    keeps a process that has nothing to do cheap. No measurement is needed, so they start
    before the first batch. One core: nothing to overlap with."""
    cores = usable_cores() if cores is None else cores
    return 0 if cores < 2 else min(cores, MAX_WORKERS)


#: batches in flight per decoding process (queued or being decoded): one in hand, one ready
PREFETCH_PER_WORKER = 2


@dataclass
class _Timing:
    """Seconds spent per stage of one extraction (``Features.timing``)."""

    hash: float = 0.0
    cache_read: float = 0.0
    decode: float = 0.0      # first batch only when workers decode the rest in parallel
    compute: float = 0.0     # transfer, device-side resize, network, copy back
    stats: float = 0.0
    wait: float = 0.0        # the main process waiting for the decoding processes' batches
    workers: int = 0


class FeatureExtractor:
    """A backbone ready to turn sources into :class:`Features`.

    ``backbone``: a registered name (``imgdist backbones``) or a :class:`Backbone` (e.g. from
    :func:`imgdist.custom_backbone`). ``mode``: the resize mode (default: the backbone's).
    ``dims``: a smaller feature layer where the backbone has one (Inception: 64, 192, 768).
    ``cache``: True (the default cache folder), False, or a folder.
    """

    def __init__(self, backbone: str | Backbone = D.EVAL_BACKBONE, *, weights=None, mode: str | None = None,
                 dims: int | None = None, device: str = D.DEVICE, batch_size: int | None = D.BATCH_SIZE,
                 workers: int | None = None, progress: bool = True, cache: bool | str = False,
                 precision: str = "fp32", fuse: bool = True, retain_memory: bool = True):
        self._pool: DecodePool | None = None  # decoding processes, started on first need (close())
        # everything that can be refused is refused before the weights are read
        if batch_size is not None:
            check_int("batch_size", batch_size, 1)
        self.workers = None if workers is None else check_int("workers", workers, 0)
        if precision not in PRECISIONS:
            raise ImgdistError(f"precision (--precision) {precision!r}: choose from {', '.join(PRECISIONS)}")
        max_pixels()  # the environment's limit is checked here, not as a traceback from a worker
        self.device = torch.device(resolve_device(device))
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        if precision != "fp32" and self.device.type == "cpu":
            check_cpu_precision(precision)
        # the spec alone tells the mode, the layer and the batch memory: refused before the weights
        # are read (or downloaded)
        self.spec = backbone.spec if isinstance(backbone, Backbone) else get_spec(backbone)
        self.prep = self.spec.preprocessing(mode)
        self.layer = self.spec.output_for_dim(dims)
        self.batch_size = int(batch_size) if batch_size is not None else \
            choose_batch_size(self.spec, self.prep, self.device, precision)
        self._fits = None  # the batch an out-of-memory error left (None: every batch fits)
        per_image_mb = self.spec.memory_mb_per_image * _area_factor(self.spec, self.prep)
        check_batch_memory(self.batch_size, per_image_mb, self.spec.name, str(self.device), precision)
        self._batch_bytes = int(activation_bytes(per_image_mb, self.batch_size, precision))
        self.model = load_backbone(backbone, weights, progress=progress)
        self.progress = progress
        self.fused = bool(fuse and hasattr(self.model, "fuse"))
        if self.fused:
            self.model.fuse()  # BatchNorm into convolutions: FD moves by <= 4e-7 relative (README "Speed and scale")
        self.model = self.model.to(self.device, self.dtype)
        if self.spec.name != "pixels":  # channels_last: 1.5-1.7x on CPU for both CNNs (benchmarks/)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.retain_memory = retain_memory
        self.provenance = Provenance(
            backbone=self.spec.name, weights_sha256=getattr(self.model, "weights_id", None),
            resize_mode=self.prep.name, preprocessing=self.prep.describe(), feature_layer=self.layer,
            precision=precision)
        self.cache_dir = _cache_root(cache)
        self._cache_given_up = False

    def close(self) -> None:
        """Stop the decoding processes (``evaluate`` does at its end; garbage collection and the
        interpreter's exit do too). Extracting again starts them again."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> "FeatureExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def retained_bytes(self) -> int:
        """Free memory kept between batches while extracting on the CPU (:mod:`imgdist.extraction.allocator`):
        one batch's activations and half again, for the buffers that do not line up."""
        return max(int(1.5 * self._batch_bytes), 256 * 2**20) if self._batch_bytes else 2**30

    @property
    def feature_dim(self) -> int:
        """Size of the chosen feature layer."""
        if self.layer == "pool":
            return self.spec.feature_dim
        return next(d for d, name in self.spec.feature_layers.items() if name == self.layer)

    # ---------------------------------------------------------------- network

    def embed(self, batch, logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """A batch from :meth:`Preprocessing.prepare` (N x 3 x H x W, or a list of images of
        different sizes) -> (features, logits or None) as float32 numpy.

        Logits are computed only on request: a low feature layer (``dims=64``) then stops the
        network early."""
        with fp32_mode(self.precision):
            return self._launch(batch, logits).result()

    @torch.inference_mode()
    def _launch(self, batch, logits: bool, host: bool = True, extra: tuple[str, ...] = (),
                extra_host: bool = False) -> "_Pending":
        """Start a batch: run :meth:`_network` on it and start copying the outputs back (to the
        host only where ``host``). On an accelerator this returns before the work is done, so the
        host can prepare the next batch meanwhile. A CUDA out-of-memory error halves the batch
        (see :meth:`_halve`) and computes it again in parts."""
        main = (self.layer, "logits") if logits and self.spec.has_logits else (self.layer,)
        outputs = main + tuple(extra)
        while True:
            try:
                parts = [self._network(part, outputs) for part in _split(batch, self._fits)]
                break
            except torch.OutOfMemoryError:
                parts = None  # noqa: F841 - the parts' memory is freed before the retry
                self._halve(len(batch))
        out = parts[0] if len(parts) == 1 else {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        return _Pending([out[name].float() for name in main if name in out], self.device, host,
                        {name: out[name].float() for name in extra}, extra_host)

    def _network(self, batch, outputs) -> dict:
        """Copy the (uint8) images to the device, resize and normalise them there, run the network."""
        non_blocking = self.device.type == "cuda"
        if isinstance(batch, (list, tuple)):
            batch = [x.to(self.device, non_blocking=non_blocking) for x in batch]
        else:
            batch = batch.to(self.device, non_blocking=non_blocking)
        if self.device.type == "cpu":
            # torch's CPU resize kernels round differently with the number of threads (1.8e-7 of
            # the value, 1e-5 in Inception features, 6e-8 in FD at N = 160): one thread, so that
            # features do not depend on the machine's or a rank's thread count; it costs ~1%
            with _threads(1):
                x = self.prep.finish(batch)
        else:
            x = self.prep.finish(batch)
        x = x.to(self.dtype)
        if self.spec.name != "pixels":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x, outputs=outputs)

    def _halve(self, size: int) -> None:
        """After an out-of-memory error: later batches run in parts of half the size. Features do
        not depend on the batch size beyond fp32 rounding, so the numbers do not change."""
        current = self._fits or size
        if current <= 1:
            raise ImgdistError(f"{self.spec.name} on {self.device}: out of memory with a single image; free "
                               "memory on the device or use --device cpu") from None
        self._fits = current // 2
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        warnings.warn(f"{self.device} ran out of memory with batches of {current} images; going on with "
                      f"{self._fits} (numbers change by fp32 rounding only); use --batch-size {self._fits} "
                      "to start there", ImgdistWarning, stacklevel=4)

    def embed_images(self, images, logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """In-memory images (any source form: uint8 tensors N x C x H x W, arrays, PIL) -> features."""
        return self.embed(self._prepared(images), logits)

    def embed_outputs(self, images, *, logits: bool = False, extra: tuple[str, ...] = ()) -> dict:
        """In-memory images -> ``{"features": ..., "logits": ... (where asked), name: ... for each of
        the backbone's ``extra`` outputs}`` as float32 numpy; non-finite outputs are refused."""
        with fp32_mode(self.precision):
            pending = self._launch(self._prepared(images), logits, extra=tuple(extra), extra_host=True)
            feats, lg = pending.result()
            out = {"features": feats, **({"logits": lg} if logits and lg is not None else {}), **pending.extra()}
        if not pending.finite():
            raise ImgdistError(f"{self.spec.name} gave NaN or infinity for these images (broken weights, or "
                               "values out of range for the precision)")
        return out

    def _prepared(self, images):
        source = open_source(images)
        return _collate([(i, self.prep.prepare(source.load(i)), None) for i in range(len(source))])[1]

    def to(self, device) -> "FeatureExtractor":
        """Run the network on ``device`` from now on (the decoding pool, if any, is kept)."""
        device = torch.device(resolve_device(str(device)))
        if self.precision != "fp32" and device.type == "cpu":
            check_cpu_precision(self.precision)
        self.model = self.model.to(device)
        self.device = device
        return self

    # ---------------------------------------------------------------- sources

    def extract(self, source, *, keep_features: bool = True, keep_logits: bool = False,
                on_error: str = "raise", desc: str | None = None, extra_layers: tuple[str, ...] = (),
                keep_extra: bool = False) -> Features:
        """``extra_layers``: further named outputs of the backbone (e.g. Inception's ``"sfid"``)
        computed in the same pass; their statistics land in ``Features.extra`` and, with
        ``keep_extra``, their per-image arrays in ``Features.extra_features``."""
        check_on_error(on_error)
        source = open_source(source)
        run = _Run(self, source, keep_features, keep_logits and self.spec.has_logits, on_error)
        run.want_extra(tuple(extra_layers), keep_extra)
        bar = tqdm(total=run.n, desc=desc or _short(source.label), unit="img", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        with fp32_mode(self.precision):
            return self._extract(source, run, bar)

    def _extract(self, source: ImageSource, run: "_Run", bar) -> Features:
        retain = retained_memory(self.retained_bytes()) if self.retain_memory and self.device.type == "cpu" \
            else nullcontext()
        t = time.perf_counter()
        # the cache stores one layer (and logits) per image: runs with extra layers go without it
        # rather than key rows by a layer set that other runs would never ask for
        use_cache = self.cache_dir and not self._cache_given_up and not run.extra_stats
        if self.cache_dir and run.extra_stats:
            warnings.warn(f"the feature cache is not used for {', '.join(run.extra_stats)} (it keeps one layer per "
                          "image): these images are computed again on every run", ImgdistWarning, stacklevel=3)
        keys = self._hashes(source) if use_cache else None
        run.timing.hash = time.perf_counter() - t
        cache = self._open_cache() if keys is not None else None
        try:
            with retain:
                todo = run.read_cache(cache, keys, bar) if cache else list(range(run.n))
                _rate_from_here(bar, len(run.cached))
                pending = None  # the batch on the device while the next one is prepared
                try:
                    for indices, batch, errs in self._batches(source, todo, run.timing):
                        run.add_errors(errs)
                        # a finished batch reaches the cache at once, and at the latest before the
                        # next is launched: an interruption loses at most the batch in flight
                        if pending is not None:
                            done, pending = pending, None
                            run.collect(*done, cache, keys)
                        if batch is not None:
                            if self.prep.size is None:
                                run.first_shape = self._check_one_size(source, indices, batch, run.first_shape)
                            t = time.perf_counter()
                            pending = (indices, self._launch(batch, run.keep_logits, run.needs_host(cache),
                                                             tuple(run.extra_stats), bool(run.extra_rows)))
                            run.timing.compute += time.perf_counter() - t
                            if pending[1].ready():  # always on a CPU
                                done, pending = pending, None
                                run.collect(*done, cache, keys)
                        bar.update(len(indices) + len(errs))
                finally:
                    # also when interrupted or stopped by a bad image: the batch already computed
                    # reaches the cache
                    if pending is not None:
                        run.collect(*pending, cache, keys)
        finally:
            bar.close()
            if cache:
                cache.close()
                # locked or unusable: the warning said this run goes on without it (evaluate's
                # second set included), so later extractions neither retry nor repeat it
                self._cache_given_up = cache.given_up
        return run.features()

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

    def _batches(self, source: ImageSource, indices: list[int], timing: "_Timing"):
        """Yield ``(indices, batch, errors)`` in source order, batches pinned on CUDA.

        Decoding processes: ``workers`` if fixed; else those this extractor already runs; else on
        an accelerator :func:`accelerator_workers`; else (a CPU) the first batch is decoded here
        and timed against its compute time, and :func:`choose_workers` decides. In-memory images
        are decoded here (a process would only copy them)."""
        if not indices:
            return
        size = self.batch_size
        chunks = [indices[b:b + size] for b in range(0, len(indices), size)]
        workers = self.workers if source.parallel_decode else 0
        if workers is None:
            if len(chunks) < 2:
                workers = 0
            elif self._pool is not None and self._pool.healthy:
                workers = self._pool.size
            elif self.device.type != "cpu":
                workers = accelerator_workers()
            else:
                yield self._decode_here(source, chunks.pop(0), timing)
                workers = choose_workers(timing.decode, timing.compute, self.device.type)
        # the first chunk left is decoded here while the processes start on the next ones
        workers = min(workers, len(chunks) - 1)
        job = _pickled(functools.partial(_decode_batch, source, self.prep)) if workers > 0 else None
        if job is None:
            for chunk in chunks:
                yield self._decode_here(source, chunk, timing)
            return
        pool = self._decode_pool(workers)
        timing.workers = min(pool.size, len(chunks) - 1)
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and self.workers is None:
            # chosen for a decoding share this large, the workers take their share of the cores;
            # a fixed --workers leaves the network its threads (on 2 cores, halving them for a
            # worker that decodes 3% of the time made Inception 1.7x slower, bench_e2e workers1)
            threads = max(1, min(threads, usable_cores() - timing.workers))
        with _threads(threads):
            yield from self._from_pool(pool, job, source, chunks, timing)

    def _decode_pool(self, workers: int) -> DecodePool:
        """This extractor's pool, with at least ``workers`` processes; a new one where a process
        of the old one has died since (killed for memory between two sets, say)."""
        if self._pool is None or not self._pool.healthy:
            self.close()
            self._pool = DecodePool()
        self._pool.grow(workers)
        return self._pool

    def _from_pool(self, pool: DecodePool, payload: bytes, source: ImageSource, chunks: list, timing: "_Timing"):
        """``chunks`` decoded, in order: the first here, the rest by ``pool`` (``payload``: the
        pickled decoding function), at most ``PREFETCH_PER_WORKER`` per process queued or in hand."""
        job = pool.start_job(payload)
        try:
            ahead = 1 + PREFETCH_PER_WORKER * pool.size
            sent = 1
            while sent < min(len(chunks), ahead):
                pool.submit(job, sent, chunks[sent])
                sent += 1
            yield self._decode_here(source, chunks[0], timing)
            ready = {}
            for seq in range(1, len(chunks)):
                t = time.perf_counter()
                while seq not in ready:
                    got, decoded = pool.result(job)
                    ready[got] = decoded
                timing.wait += time.perf_counter() - t
                if sent < len(chunks):
                    pool.submit(job, sent, chunks[sent])
                    sent += 1
                yield self._pinned(ready.pop(seq))
        finally:
            pool.end_job(job)

    def _decode_here(self, source: ImageSource, indices: list[int], timing: "_Timing"):
        t = time.perf_counter()
        decoded = self._pinned(_decode_batch(source, self.prep, indices))
        timing.decode += time.perf_counter() - t
        return decoded

    def _pinned(self, decoded):
        """On CUDA, a batch in pinned memory, so that its copy to the device does not block."""
        indices, batch, errs = decoded
        if self.device.type == "cuda" and isinstance(batch, torch.Tensor):
            batch = batch.pin_memory()
        return indices, batch, errs

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
        # precision and folding move the features (bf16 by ~1e-2, folding by ~5e-6): a bf16 or
        # unfused run must never read fp32 or folded rows, nor the other way round
        return "|".join(str(v) for v in (CACHE_FORMAT, self.spec.name, self.provenance.weights_sha256,
                                         self.prep, self.layer, self.precision,
                                         "folded" if self.fused else "unfolded"))

    def _cache_path(self) -> str:
        digest = hashlib.sha256(self._extractor_id().encode()).hexdigest()[:16]
        return os.path.join(self.cache_dir, f"{self.spec.name}-{self.layer}-{self.prep.name}-{digest}.sqlite")

    def _open_cache(self) -> FeatureCache:
        # native size ('pixels' without resize): the length depends on the image, the checksum holds it
        feature_dim = self.feature_dim if self.prep.size is not None else None
        return FeatureCache.open(self._cache_path(), feature_dim=feature_dim,
                                 logits_dim=self.spec.num_classes if self.spec.has_logits else None,
                                 extractor=self._extractor_id())


def _split(batch, size: int | None) -> list:
    """A batch (tensor or list of images) in parts of at most ``size`` images (None: whole)."""
    if size is None or len(batch) <= size:
        return [batch]
    return [batch[i:i + size] for i in range(0, len(batch), size)]


@contextmanager
def fp32_mode(precision: str):
    """float32 products exact for the block (TF32 off for cuDNN and matmul) unless ``precision`` is
    'tf32'; the caller's settings are restored afterwards. PyTorch lets cuDNN use TF32 by default:
    on a GPU that moved FD by 4.9e-4 relative (issue 16), ~100x more than the batch size does."""
    tf32 = precision == "tf32"
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    # 'highest' also keeps oneDNN from bf16 products on a CPU
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        # the flags first: setting matmul.allow_tf32 rewrites the precision string
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


@contextmanager
def _threads(count: int):
    """torch's intra-op threads set to ``count`` for the block."""
    before = torch.get_num_threads()
    if before != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if before != count:
            torch.set_num_threads(before)


class _Pending:
    """A batch's outputs: on the device, where the statistics are accumulated, and, where the run
    needs them on the host (kept features, logits, the cache), on their way there: on CUDA copied
    into pinned host memory without blocking, with an event to wait for; elsewhere already there.
    Whether the features are finite is decided on the device; only that flag always travels."""

    def __init__(self, tensors: list[torch.Tensor], device: torch.device, host: bool = True,
                 extra: dict[str, torch.Tensor] | None = None, extra_host: bool = False):
        self.on_device = tensors
        self.extra_on_device = extra or {}
        self.event = None
        self._main = len(tensors) if host else 0
        self._extra_names = tuple(self.extra_on_device) if extra_host else ()
        checked = [tensors[0], *self.extra_on_device.values()]
        finite = torch.stack([torch.isfinite(t).all() for t in checked]).all().reshape(1)
        sent = (list(tensors) if host else []) + [self.extra_on_device[n] for n in self._extra_names] + [finite]
        if device.type == "cuda":
            self.host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in sent]
            for host_t, t in zip(self.host, sent):
                host_t.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = [t.cpu() for t in sent]

    def ready(self) -> bool:
        """Whether the device has finished the batch (always, off CUDA)."""
        return self.event is None or self.event.query()

    def finite(self) -> bool:
        if self.event is not None:
            self.event.synchronize()
        return bool(self.host[-1].item())

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(features, logits or None) on the host; (None, None) where they were not sent."""
        if self.event is not None:
            self.event.synchronize()
        arrays = [h.numpy() for h in self.host[:self._main]]
        if not arrays:
            return None, None
        return arrays[0], (arrays[1] if len(arrays) > 1 else None)

    def extra(self) -> dict[str, np.ndarray]:
        """The extra outputs sent to the host, by name (after :meth:`result`, which waits for them)."""
        start = self._main
        return {name: self.host[start + j].numpy() for j, name in enumerate(self._extra_names)}


class _Run:
    """The state of one :meth:`FeatureExtractor.extract`: per-image outputs in source order, the
    streaming statistics, the errors, and what is checked across batches."""

    def __init__(self, extractor: "FeatureExtractor", source: ImageSource, keep_features: bool,
                 keep_logits: bool, on_error: str):
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
        self.timing = _Timing()
        self.extra_stats: dict[str, DeviceStats] = {}
        self.extra_rows: dict[str, list] = {}

    def want_extra(self, names: tuple[str, ...], keep: bool) -> None:
        self.extra_stats = {name: DeviceStats() for name in names}
        self.extra_rows = {name: [None] * self.n for name in names} if keep else {}

    def needs_host(self, cache) -> bool:
        """Whether computed features must come to the host (else only the statistics are kept)."""
        return bool(self.keep_features or self.keep_logits or cache)

    def read_cache(self, cache: FeatureCache, keys: list, bar) -> list[int]:
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
            bar.update(len(hits))
        self.timing.cache_read = time.perf_counter() - t
        done = set(self.cached)
        return [i for i in range(self.n) if i not in done]

    def add_errors(self, errs) -> None:
        for i, err in errs:
            self.errors[i] = err
        if errs and self.on_error == "raise":
            raise ImageError(*self.errors[min(i for i, _ in errs)])

    def collect(self, indices: list[int], pending: _Pending, cache, keys) -> None:
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
