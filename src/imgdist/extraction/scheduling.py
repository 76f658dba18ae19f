"""How an extraction is scheduled: the automatic batch size, and how many decoding processes run
beside the network. Each rule was measured (benchmarks/bench_pipeline.py, issue 16's GPU rates)."""

from __future__ import annotations

import os

import torch

from .. import defaults as D
from ..checks import MEMORY_FRACTION, activation_bytes, available_memory

#: the largest automatic batch on an accelerator: network-only throughput on an H200 levels off
#: by 256 images (issue 16's rates were measured there); larger batches only cost memory
GPU_BATCH_KNEE = 256


def choose_batch_size(spec, prep, device: torch.device, precision: str) -> int:
    """The automatic batch size: as measured on a CPU (``CPU_BATCH_SIZE``); on CUDA the largest
    whose activations fit the memory budget, up to ``GPU_BATCH_KNEE`` (an out-of-memory error
    still halves it, see :meth:`FeatureExtractor._launch`)."""
    if device.type != "cuda":
        return D.CPU_BATCH_SIZE
    per_image = activation_bytes(spec.memory_mb_per_image * area_factor(spec, prep), 1, precision)
    available = available_memory(str(device))
    if not per_image or available is None:  # a custom network: its memory is unknown
        return GPU_BATCH_KNEE
    return max(1, min(GPU_BATCH_KNEE, int(MEMORY_FRACTION * available // per_image)))


def area_factor(spec, prep) -> float:
    """Activation memory scales with the input area; a recipe may use another size than the spec's."""
    if not spec.input_size or not prep.size:
        return 1.0
    return (prep.size / spec.input_size) ** 2


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
