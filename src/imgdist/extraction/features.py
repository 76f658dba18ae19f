"""The extraction engine: any source -> backbone(s) -> features and Gaussian statistics.

* One decode feeds several networks (:func:`extract_together`): each image is read and decoded
  once, and every network gets it through its own resize recipe; each network keeps its own
  statistics, per-image arrays and cache.

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
import time
import warnings

import numpy as np
import torch

from .. import defaults as D
from ..checks import activation_bytes, check_batch_memory, check_cpu_precision, check_int, resolve_device
from ..errors import ImageError, ImgdistError, ImgdistWarning
from .backbones import Backbone, get_spec, load_backbone
from .batches import Pending, collate, decode_batch, pickled, split_batch
from .cache import CACHE_FORMAT, FeatureCache
from .collect import ExtractionRun, Timing
from .decode import max_pixels
from .decode_pool import DecodePool
from .feature_set import CACHE_READ_CHUNK, Features
from .precision import PRECISIONS, fp32_mode, threads
from .provenance import Provenance
from .scheduling import (PREFETCH_PER_WORKER, accelerator_workers, area_factor, choose_batch_size, choose_workers,
                         usable_cores)
from .sources import ImageSource, open_source
from .stats import statistics_home

__all__ = ["CACHE_READ_CHUNK", "FeatureExtractor", "Features", "extract_features", "fp32_mode"]


class FeatureExtractor:
    """A backbone ready to turn sources into :class:`Features`.

    ``backbone``: a registered name (``imgdist backbones``) or a :class:`Backbone` (e.g. from
    :func:`imgdist.custom_backbone`). ``mode``: the resize mode (default: the backbone's).
    ``dims``: a smaller feature layer where the backbone has one (Inception: 64, 192, 768).
    ``cache``: True (the default cache folder), False, or a folder.
    """

    # optional state, declared here so that a subclass without weights, cache or memory estimate
    # (WaveletExtractor) sets only what differs, and close() works on an instance __init__ refused
    _pool: DecodePool | None = None  # decoding processes, started on first need (close())
    _fits: int | None = None  # the batch an out-of-memory error left (None: every batch fits)
    _batch_bytes = 0  # one batch's activations (0: unknown)
    fused = False
    retain_memory = False
    cache_dir: str | None = None
    _cache_given_up = False
    _weights = _weights_id = _text_tower = None

    def __init__(self, backbone: str | Backbone = D.EVAL_BACKBONE, *, weights=None, mode: str | None = None,
                 dims: int | None = None, device: str = D.DEVICE, batch_size: int | None = D.BATCH_SIZE,
                 workers: int | None = None, progress: bool = True, cache: bool | str = False,
                 precision: str = "fp32", fuse: bool = True, retain_memory: bool = True):
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
        per_image_mb = self.spec.memory_mb_per_image * area_factor(self.spec, self.prep)
        check_batch_memory(self.batch_size, per_image_mb, self.spec.name, str(self.device), precision)
        self._batch_bytes = int(activation_bytes(per_image_mb, self.batch_size, precision))
        self.model = load_backbone(backbone, weights, progress=progress)
        self._weights = weights
        # the text tower reads the file the network was just loaded from by name: its hash is known
        # (a built network passed in may come from another file than the one the name resolves to)
        self._weights_id = None if isinstance(backbone, Backbone) else self.model.weights_id
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
    def device_label(self) -> str:
        """The device, and where the statistics accumulate where that is not on it (MPS)."""
        note = statistics_home(self.device.type)
        return str(self.device) + (f" ({note})" if note else "")

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
                extra_host: bool = False) -> Pending:
        """Start a batch: run :meth:`_network` on it and start copying the outputs back (to the
        host only where ``host``). On an accelerator this returns before the work is done, so the
        host can prepare the next batch meanwhile. A CUDA out-of-memory error halves the batch
        (see :meth:`_halve`) and computes it again in parts."""
        main = (self.layer, "logits") if logits and self.spec.has_logits else (self.layer,)
        outputs = main + tuple(extra)
        while True:
            try:
                parts = [self._network(part, outputs) for part in split_batch(batch, self._fits)]
                break
            except torch.cuda.OutOfMemoryError:  # the same class; torch 2.2 has no torch.OutOfMemoryError
                parts = None  # noqa: F841 - the parts' memory is freed before the retry
                self._halve(len(batch))
        out = parts[0] if len(parts) == 1 else {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        return Pending([out[name].float() for name in main if name in out], self.device, host,
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
            with threads(1):
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
        return collate([self.prep.prepare(source.load(i)) for i in range(len(source))])

    def new_run(self, source, keep_features: bool, keep_logits: bool, on_error: str, timing) -> ExtractionRun:
        """The state of one extraction of ``source`` by this extractor."""
        return ExtractionRun(self, source, keep_features, keep_logits, on_error, timing)

    def text_tower(self):
        """The backbone's text tower (CLIP, OpenCLIP), from the same weights, on this device; a
        built network may carry its own (``model.text_tower``)."""
        if self._text_tower is None:
            tower = getattr(self.model, "text_tower", None)
            if tower is None:
                from .backbones import load_text_tower

                tower = load_text_tower(self.spec.name, self._weights, progress=self.progress,
                                        weights_id=self._weights_id)
            self._text_tower = tower.to(self.device).eval()
        return self._text_tower

    def to(self, device) -> "FeatureExtractor":
        """Run the network on ``device`` from now on (the decoding pool, if any, is kept)."""
        device = torch.device(resolve_device(str(device)))
        if self.precision != "fp32" and device.type == "cpu":
            check_cpu_precision(self.precision)
        self.model = self.model.to(device)
        if self._text_tower is not None:
            self._text_tower = self._text_tower.to(device)
        self.device = device
        return self

    # ---------------------------------------------------------------- sources

    def extract(self, source, *, keep_features: bool = True, keep_logits: bool = False,
                on_error: str = "raise", desc: str | None = None, extra_layers: tuple[str, ...] = (),
                keep_extra: bool = False) -> Features:
        """``extra_layers``: further named outputs of the backbone (e.g. Inception's ``"sfid"``)
        computed in the same pass; their statistics land in ``Features.extra`` and, with
        ``keep_extra``, their per-image arrays in ``Features.extra_features``."""
        from .together import Job, extract_together

        job = Job(self, keep_features=keep_features, keep_logits=keep_logits, extra_layers=tuple(extra_layers),
                  keep_extra=keep_extra)
        return extract_together(source, [job], on_error=on_error, desc=desc)[0]

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

    def _batches(self, source: ImageSource, indices: list[int], timing: Timing, preps: tuple = ()):
        """Yield ``(indices, [batch per recipe of preps], errors)`` in source order, batches pinned
        on CUDA; ``preps``: the resize recipes of every network fed (default: this one's).

        Decoding processes: ``workers`` if fixed; else those this extractor already runs; else on
        an accelerator :func:`accelerator_workers`; else (a CPU) the first batch is decoded here
        and timed against its compute time, and :func:`choose_workers` decides. In-memory images
        are decoded here (a process would only copy them)."""
        if not indices:
            return
        preps = tuple(preps) or (self.prep,)
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
                yield self._decode_here(source, chunks.pop(0), timing, preps)
                workers = choose_workers(timing.decode, timing.compute, self.device.type)
        # the first chunk left is decoded here while the processes start on the next ones
        workers = min(workers, len(chunks) - 1)
        job = pickled(functools.partial(decode_batch, source, preps)) if workers > 0 else None
        if job is None:
            for chunk in chunks:
                yield self._decode_here(source, chunk, timing, preps)
            return
        pool = self._decode_pool(workers)
        timing.workers = min(pool.size, len(chunks) - 1)
        count = torch.get_num_threads()
        if self.device.type == "cpu" and self.workers is None:
            # chosen for a decoding share this large, the workers take their share of the cores;
            # a fixed --workers leaves the network its threads (on 2 cores, halving them for a
            # worker that decodes 3% of the time made Inception 1.7x slower, bench_e2e workers1)
            count = max(1, min(count, usable_cores() - timing.workers))
        with threads(count):
            yield from self._from_pool(pool, job, source, chunks, timing, preps)

    def _decode_pool(self, workers: int) -> DecodePool:
        """This extractor's pool, with at least ``workers`` processes; a new one where a process
        of the old one has died since (killed for memory between two sets, say)."""
        if self._pool is None or not self._pool.healthy:
            self.close()
            self._pool = DecodePool()
        self._pool.grow(workers)
        return self._pool

    def _from_pool(self, pool: DecodePool, payload: bytes, source: ImageSource, chunks: list, timing: Timing,
                   preps: tuple):
        """``chunks`` decoded, in order: the first here, the rest by ``pool`` (``payload``: the
        pickled decoding function), at most ``PREFETCH_PER_WORKER`` per process queued or in hand."""
        job = pool.start_job(payload)
        try:
            ahead = 1 + PREFETCH_PER_WORKER * pool.size
            sent = 1
            while sent < min(len(chunks), ahead):
                pool.submit(job, sent, chunks[sent])
                sent += 1
            yield self._decode_here(source, chunks[0], timing, preps)
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

    def _decode_here(self, source: ImageSource, indices: list[int], timing: Timing, preps: tuple):
        t = time.perf_counter()
        decoded = self._pinned(decode_batch(source, preps, indices))
        timing.decode += time.perf_counter() - t
        return decoded

    def _pinned(self, decoded):
        """On CUDA, batches in pinned memory, so that their copy to the device does not block."""
        indices, batches, errs = decoded
        if self.device.type == "cuda":
            batches = [b.pin_memory() if isinstance(b, torch.Tensor) else b for b in batches]
        return indices, batches, errs

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


def _cache_root(cache: bool | str) -> str | None:
    if not cache:
        return None
    if isinstance(cache, (str, os.PathLike)):
        return os.fspath(cache)
    from .weights import cache_dir

    return os.fspath(cache_dir() / "features")


def extract_features(source, backbone: str | Backbone = D.EVAL_BACKBONE, **kwargs) -> Features:
    """One-call form of :class:`FeatureExtractor` ``(backbone, ...).extract(source)``."""
    extract_kwargs = {k: kwargs.pop(k) for k in ("keep_features", "keep_logits", "on_error") if k in kwargs}
    return FeatureExtractor(backbone, **kwargs).extract(source, **extract_kwargs)
