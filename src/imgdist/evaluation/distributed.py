"""Evaluation across processes with ``torch.distributed`` (launch with ``torchrun``).

Each rank reads its own shard of every source (batch ``b`` of the images goes to rank
``b % world_size``, so every rank runs the batches one process would), the
Gaussian statistics are gathered and merged in rank order (float64 means and centred scatter
matrices: the merged statistics equal a single process's to rounding, on every rank alike), and
per-image features are gathered where k-NN metrics and KID need them, back in source order.
Then the metrics' own heavy work is split too (:func:`evaluate_features_distributed`): the k-NN
distance blocks, the KID subsets and the FID-infinity subsets (:mod:`imgdist.metrics._shard`).
gloo works on CPU, NCCL on GPU (each rank on ``cuda:LOCAL_RANK``). ``torchrun ... -m imgdist eval REAL
FAKE`` runs the command line this way (:func:`init_from_environment`); ranks that do not all join
within :func:`dist_timeout` seconds end as one line naming the missing ones. From Python,
``imgdist.evaluate(..., distributed=True)`` is the route (the same code as one process, each rank
extracting its share through :class:`ShardSource` and :func:`gather_features`), and the streaming
``Evaluator.compute()`` combines the ranks' states itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..environment import env_int
from ..errors import ImgdistError, one_line
from ..extraction.features import CACHE_READ_CHUNK as CHUNK_ROWS
from ..extraction.features import Features
from ..extraction.sources import ImageSource, Skipped
from ..extraction.stats import GaussianStats
from ..metrics._shard import Shard
from .compute import evaluate_features
from .results import Result


class ShardSource(ImageSource):
    """Every ``world``-th block of ``block`` consecutive items of a source, starting at block ``rank``.

    With ``block`` = the batch size, each rank's batches are the very batches one process would
    run: a network's output for an image can depend on the batch around it in the last bits
    (oneDNN picks its kernels by batch shape), so this is what makes the features, and every
    metric but the float64 sums of the statistics, equal one process's."""

    def __init__(self, source: ImageSource, rank: int, world: int, block: int = 1):
        self.source = source
        self.indices = [i for i in range(len(source)) if (i // block) % world == rank]
        self.label = f"{source.label} [shard {rank}/{world}]"

    def __len__(self):
        return len(self.indices)

    def name_of(self, index):
        return self.source.name_of(self.indices[index])

    def load(self, index):
        return self.source.load(self.indices[index])

    def content_bytes(self, index):
        return self.source.content_bytes(self.indices[index])

    @property
    def parallel_decode(self):
        return self.source.parallel_decode


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (its environment says so)."""
    return env_int("WORLD_SIZE", 1, minimum=1, hint="torchrun sets it") > 1


#: seconds a rank waits for all ranks to join (IMGDIST_DIST_TIMEOUT, --dist-timeout). torch's own
#: 30 minutes suits a collective in a long job, not a rendezvous: torchrun starts its workers within
#: seconds of each other, and even a cold import of torch on a network file system stays well below
#: a minute, so 5 minutes is margin, not a wait a forgotten rank makes anyone sit through.
DIST_TIMEOUT = 300
_JOINED = "imgdist/joined/"


def dist_timeout(seconds=None) -> int:
    """The rendezvous timeout: ``seconds`` (``--dist-timeout``), else ``IMGDIST_DIST_TIMEOUT``, else
    :data:`DIST_TIMEOUT`."""
    from ..checks import check_int

    if seconds is not None:
        return check_int("dist_timeout", seconds, 1)
    return env_int("IMGDIST_DIST_TIMEOUT", DIST_TIMEOUT, minimum=1, typed=True)


def backend_for(device: str) -> str:
    """NCCL for a rank on a CUDA device; gloo for the CPU (and MPS, which NCCL does not serve)."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def collective_device(backend: str, cuda_index: int | None = None) -> str:
    """Where tensors must lie for a collective of ``backend``: NCCL reduces only CUDA tensors, gloo
    CPU ones (a ``cpu:gloo,cuda:nccl`` group takes CPU tensors through gloo)."""
    if "gloo" in backend or "nccl" not in backend:
        return "cpu"
    return f"cuda:{cuda_index or 0}"


def rank_device(device: str, local_rank: int, cuda_count: int) -> str:
    """This rank's device from a resolved ``device`` name: ``cuda`` becomes ``cuda:LOCAL_RANK``; a
    process that sees one GPU only (a launcher bound one to each process) takes it; an explicit
    ``cuda:K`` stays the user's choice (one rank per node on GPU K), and ranks that would share a
    GPU are refused later, from every rank's claim (:func:`shared_gpus`)."""
    if device != "cuda":
        return device
    if local_rank < cuda_count:
        return f"cuda:{local_rank}"
    if cuda_count == 1:
        return "cuda:0"
    raise ImgdistError(f"torchrun: LOCAL_RANK={local_rank} has no GPU of its own: this machine shows "
                       f"{cuda_count} CUDA devices; start at most {cuda_count} processes per node "
                       f"(--nproc_per_node {cuda_count})")


def shared_gpus(claims: list) -> list[list[int]]:
    """Groups of ranks whose claims (``None`` or (host, GPU id)) name the same GPU: NCCL refuses a
    GPU twice in one group, after a traceback, so this is checked at the rendezvous."""
    by_gpu: dict = {}
    for rank, claim in enumerate(claims):
        if claim is not None:
            by_gpu.setdefault(tuple(claim), []).append(rank)
    return [ranks for ranks in by_gpu.values() if len(ranks) > 1]


def format_ranks(ranks) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``: a 64-rank job's missing ranks in one short line."""
    runs: list[list[int]] = []
    for r in sorted(ranks):
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _gpu_claim(device: str):
    if not device.startswith("cuda"):
        return None
    import socket

    return [socket.gethostname(), str(torch.cuda.get_device_properties(torch.device(device)).uuid)]


class _NativeStderrSilenced:
    """fd 2 to /dev/null: c10d's C++ code logs every connection retry and timeout with a stack trace
    on stderr, below Python, and reads TORCH_CPP_LOG_LEVEL only when torch loads."""

    def __enter__(self):
        import os
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import os

        os.dup2(self.saved, 2)
        os.close(self.saved)


def _await_port(addr: str, port: int, deadline: float) -> bool:
    """Whether anything listens at ``addr:port`` before ``deadline``: TCPStore's own client retries
    past its timeout (to about twice it) and logs each try."""
    import socket
    import time

    while True:
        try:
            socket.create_connection((addr, port), timeout=max(0.1, min(1.0, deadline - time.monotonic()))).close()
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def _rendezvous(addr: str, port: int, rank: int, world: int, timeout: int, claim):
    """The store every rank meets at, once all ``world`` ranks have joined it, and every rank's claim;
    one line naming the missing ranks after ``timeout`` seconds."""
    import json
    import os
    import time
    from datetime import timedelta

    from torch.distributed import PrefixStore, TCPStore

    where = f"{addr}:{port}"
    advice = (f"start all WORLD_SIZE={world} ranks with the same MASTER_ADDR and MASTER_PORT, or wait longer with "
              "--dist-timeout SECONDS (IMGDIST_DIST_TIMEOUT)")
    # torchrun's agent hosts the store (and keeps it across restarts: keys per attempt); else rank 0 does
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    host = rank == 0 and not agent
    deadline = time.monotonic() + timeout
    with _NativeStderrSilenced():
        if not host and not _await_port(addr, port, deadline):
            who = "torchrun's store" if agent else "rank(s) 0"
            raise ImgdistError(f"torchrun: {who} did not join within {timeout} s ({where}): nothing answered "
                               f"there; {advice}")
        try:
            store = TCPStore(addr, port, None, host, timeout=timedelta(seconds=max(1.0, deadline - time.monotonic())),
                             wait_for_workers=False, multi_tenant=True)
        except RuntimeError as e:  # DistNetworkError: the port is taken, the address is not this host's
            raise ImgdistError(f"torchrun: the store at {where} (MASTER_ADDR:MASTER_PORT): "
                               f"{one_line(str(e).splitlines()[0])}") from None
        store = PrefixStore(f"imgdist/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        store.set(f"{_JOINED}{rank}", json.dumps(claim))
        keys = [f"{_JOINED}{r}" for r in range(world)]
        # polled, not store.wait: its timeout is a logged C++ error with nothing on who is missing
        while not store.check(keys):
            if time.monotonic() >= deadline:
                missing = [r for r, key in enumerate(keys) if not store.check([key])]
                raise ImgdistError(f"torchrun: rank(s) {format_ranks(missing)} did not join within {timeout} s "
                                   f"({where}); {advice}")
            time.sleep(0.05)
        claims = [json.loads(store.get(key)) for key in keys]
    return store, claims


def init_from_environment(device: str, timeout: int | None = None) -> str:
    """Join the process group ``torchrun`` describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT): NCCL when this rank computes on a CUDA device, else gloo. Returns this
    rank's device (``cuda:LOCAL_RANK`` for ``auto`` or ``cuda`` where CUDA is available). Ranks that
    do not all join within ``timeout`` seconds (:func:`dist_timeout`) are one line naming them."""
    import os

    from torch.distributed.constants import default_pg_timeout

    from ..checks import resolve_device

    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ImgdistError(f"WORLD_SIZE is set but {name} is not: launch with torchrun "
                               "(torchrun --nproc_per_node N -m imgdist eval ...)")
    rank, local, port = (env_int(name, None, minimum=0, hint="torchrun sets it")
                         for name in ("RANK", "LOCAL_RANK", "MASTER_PORT"))
    world = env_int("WORLD_SIZE", 1, minimum=1, hint="torchrun sets it")
    if rank >= world:
        raise ImgdistError(f"environment variable RANK={rank} is not below WORLD_SIZE={world} (torchrun sets both)")
    if port > 65535:
        raise ImgdistError(f"environment variable MASTER_PORT={port}: ports go up to 65535 (torchrun sets it)")
    timeout = dist_timeout(timeout)
    device = resolve_device(device)
    device = rank_device(device, local, torch.cuda.device_count() if device.startswith("cuda") else 0)
    if device.startswith("cuda"):
        resolve_device(device)  # a rank without its GPU: one line, not a NCCL hang
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device
    store, claims = _rendezvous(os.environ["MASTER_ADDR"], port, rank, world, timeout, _gpu_claim(device))
    shared = shared_gpus(claims)
    if shared:
        ranks = shared[0]
        raise ImgdistError(f"torchrun: ranks {format_ranks(ranks)} would share one GPU (host {claims[ranks[0]][0]}; "
                           f"this rank's --device is {device}); NCCL needs a GPU per rank: use --device cuda "
                           "(each rank takes cuda:LOCAL_RANK) and one process per GPU")
    # the rendezvous is over: later store waits (NCCL's first collective) get torch's own patience
    store.set_timeout(default_pg_timeout)
    dist.init_process_group(backend_for(device), store=store, rank=rank, world_size=world)
    return device


def _require_initialised():
    if not (dist.is_available() and dist.is_initialized()):
        raise ImgdistError("torch.distributed is not initialised: launch with torchrun and call "
                           "torch.distributed.init_process_group first")


def _collective_device() -> str:
    cuda = torch.cuda.current_device() if torch.cuda.is_available() else None
    return collective_device(str(dist.get_backend()), cuda)


def all_reduce_stats(stats: GaussianStats, device=None) -> GaussianStats:
    """The statistics of all ranks' images together, identical on every rank.

    Every rank's state (count, mean, centred scatter; float64) is gathered and the states are
    merged in rank order with Chan et al.'s pairwise update (see :mod:`imgdist.extraction.stats`): the same
    arithmetic on every rank, so every rank gets bit-identical statistics, equal to one process's
    over all images up to rounding. Summing raw moments instead would lose digits to any
    common offset in the features. The float64 state travels on the device the process group's
    backend reduces (``device``, by default a CUDA device for NCCL, else the CPU) and is merged on
    the host.
    """
    _require_initialised()
    device = device or _collective_device()
    dim = torch.tensor([stats.dim or 0], dtype=torch.int64, device=device)
    dist.all_reduce(dim, op=dist.ReduceOp.MAX)
    d = int(dim.item())
    if stats.n:
        n, mean, scatter = stats.state
        if len(mean) != d:
            raise ImgdistError(f"feature dimensions differ across ranks: {len(mean)} vs {d}")
    else:
        n, mean, scatter = 0, np.zeros(d), np.zeros((d, d))
    flat = torch.cat([torch.tensor([float(n)], dtype=torch.float64), torch.from_numpy(mean),
                      torch.from_numpy(scatter.ravel())]).to(device)
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, flat)
    total = GaussianStats(d, stats.provenance)
    for part in parts:  # rank order
        part = part.cpu().numpy()
        count = int(round(part[0]))
        if count:
            total.merge(GaussianStats.from_state(count, part[1:1 + d], part[1 + d:].reshape(d, d),
                                                 stats.provenance))
    return total


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order."""
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def gather_features(features: Features, shard: ShardSource) -> Features:
    """Every rank's shard features -> the whole set's, rows in source order."""
    positions = [shard.indices[i] for i in features.indices]
    parts = all_gather_objects((positions, features.names, features.features, features.logits,
                         features.skipped.items, features.extra_features))
    order = np.argsort(np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts]), kind="stable")

    def rows(k):
        if any(p[k] is None for p in parts):
            return None
        # a rank with an empty shard knows no feature length at native size: its part is left out
        return np.concatenate([p[k] for p in parts if len(p[k])])[order]

    names = [n for p in parts for n in p[1]]
    extra_rows = {name: np.concatenate([p[5][name] for p in parts if len(p[5][name])])[order]
                  for name in sorted(features.extra_features)}
    extra = {name: _all_reduce_any(features.extra[name]) for name in sorted(features.extra)}
    stats = (all_reduce_stats(features.stats) if features.stats._scatter is not None or not features.extra
             else _count_and_mean(extra, features))
    return Features(names=[names[i] for i in order], stats=stats,
                    provenance=features.provenance, features=rows(2), logits=rows(3),
                    skipped=Skipped([item for p in parts for item in p[4]]), cached=features.cached,
                    indices=sorted(i for p in parts for i in p[0]), extra=extra, extra_features=extra_rows)


def _all_reduce_any(stats):
    """Every rank's statistics of an output merged in rank order: Gaussian statistics, or FWD's
    per-packet ones."""
    from ..extraction.packet_stats import PacketStats

    if not isinstance(stats, PacketStats):
        return all_reduce_stats(stats)
    parts = all_gather_objects(None if not stats.n else tuple(t.cpu().numpy() if hasattr(t, "cpu") else t
                                                              for t in stats.state))
    total = None
    for part in parts:  # rank order
        if part is None:
            continue
        here = PacketStats.from_state(*part, device=stats.device)
        total = here if total is None else total.merge(here)
    return total if total is not None else stats


def _count_and_mean(extra: dict, features: Features):
    from ..extraction.wavelet_space import summary

    return summary(next(iter(extra.values())), features.provenance)


def process_shard() -> Shard:
    """This process's share of the metrics' work (:mod:`imgdist.metrics._shard`), gathering over
    the initialised process group."""
    _require_initialised()
    return Shard(dist.get_rank(), dist.get_world_size(), gather=all_gather_objects)


def evaluate_features_distributed(real, fake, *, metrics=None, provenance=None, progress=False,
                                  **metric_kwargs) -> Result:
    """:func:`imgdist.evaluate_features` on features every rank holds (N x d arrays, or
    :class:`~imgdist.extraction.features.Features` gathered by ``evaluate(..., distributed=True)``), with the work
    split over the ranks: the Gaussian statistics of each rank's rows are all-reduced, and the
    metrics' heavy work (the k-NN distance blocks, the KID subsets, the FID-infinity subsets, and
    whatever else a metric splits through its shard) is divided among the ranks and gathered. Every
    rank returns the result: FD equal to one process's to rounding (statistics summed in another
    order), the rest exactly where BLAS runs with the same thread count as that process (KID's
    kernel products round differently with 1 and 2 threads: 1.4e-17 apart at 50k).
    """
    from ..extraction.provenance import USER_FEATURES, Provenance

    shard = process_shard()
    provenance = provenance or Provenance(backbone=USER_FEATURES, feature_layer="pool", precision=None)
    sides = []
    for name, x in (("real", real), ("fake", fake)):
        if isinstance(x, Features):
            sides.append(x)
            continue
        x = np.asarray(x)
        rows = [i for i in range(len(x)) if shard.owns(i // CHUNK_ROWS)]
        local = Features.from_array(x, provenance=provenance, rows=rows, name=name)
        local.stats = all_reduce_stats(local.stats)
        sides.append(local)
    return evaluate_features(sides[0], sides[1], metrics=metrics, progress=progress and shard.rank == 0,
                             shard=shard, **metric_kwargs)
