"""Evaluation across processes with ``torch.distributed`` (launch with ``torchrun``).

Each rank reads its own shard of every source (batch ``b`` of the images goes to rank
``b % world_size``, so every rank runs the batches one process would), the
Gaussian statistics are gathered and merged in rank order (float64 means and centred scatter
matrices: the merged statistics equal a single process's to rounding, on every rank alike), and
per-image features are gathered where k-NN metrics and KID need them, back in source order.
Then the metrics' own heavy work is split too (:func:`evaluate_features_distributed`): the k-NN
distance blocks, the KID subsets and the FID-infinity subsets (:mod:`imgdist.metrics._shard`).
gloo works on CPU, NCCL on GPU. ``torchrun ... -m imgdist eval REAL FAKE`` runs the command line
this way (:func:`init_from_environment`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from . import defaults as D
from .environment import env_int
from .errors import ImgdistError
from .evaluation import DEFAULT_METRICS, Evaluator, Result, evaluate_features, keeps_features
from .catalogue import Facts, MetricOptions, needs_logits, parse_metrics
from .features import CACHE_READ_CHUNK as CHUNK_ROWS
from .features import FeatureExtractor, Features
from .metrics._shard import Shard
from .sources import ImageSource, Skipped, open_source
from .stats import GaussianStats


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


def init_from_environment(device: str) -> str:
    """Join the process group ``torchrun`` describes in the environment (``env://``): NCCL when this
    rank computes on a CUDA device, else gloo. Returns this rank's device (``cuda:LOCAL_RANK``
    for ``auto`` or ``cuda`` where CUDA is available)."""
    import os

    from .checks import resolve_device

    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ImgdistError(f"WORLD_SIZE is set but {name} is not: launch with torchrun "
                               "(torchrun --nproc_per_node N -m imgdist eval ...)")
    rank, local, _ = (env_int(name, None, minimum=0, hint="torchrun sets it")
                      for name in ("RANK", "LOCAL_RANK", "MASTER_PORT"))
    world = env_int("WORLD_SIZE", 1, minimum=1, hint="torchrun sets it")
    if rank >= world:
        raise ImgdistError(f"environment variable RANK={rank} is not below WORLD_SIZE={world} (torchrun sets both)")
    device = resolve_device(device)
    if device == "cuda":
        device = f"cuda:{local}"
        resolve_device(device)  # a rank without its GPU: one line, not a NCCL hang
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def _require_initialised():
    if not (dist.is_available() and dist.is_initialized()):
        raise ImgdistError("torch.distributed is not initialised: launch with torchrun and call "
                           "torch.distributed.init_process_group first")


def all_reduce_stats(stats: GaussianStats, device="cpu") -> GaussianStats:
    """The statistics of all ranks' images together, identical on every rank.

    Every rank's state (count, mean, centred scatter; float64) is gathered and the states are
    merged in rank order with Chan et al.'s pairwise update (see :mod:`imgdist.stats`): the same
    arithmetic on every rank, so every rank gets bit-identical statistics, equal to one process's
    over all images up to rounding. Summing raw moments instead would lose digits to any
    common offset in the features.
    """
    _require_initialised()
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


def _all_gather(obj) -> list:
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def _gather_features(features: Features, shard: ShardSource) -> Features:
    """Every rank's shard features -> the whole set's, rows in source order."""
    positions = [shard.indices[i] for i in features.indices]
    parts = _all_gather((positions, features.names, features.features, features.logits,
                         features.skipped.items))
    order = np.argsort(np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts]), kind="stable")

    def rows(k):
        if any(p[k] is None for p in parts):
            return None
        # a rank with an empty shard knows no feature length at native size: its part is left out
        return np.concatenate([p[k] for p in parts if len(p[k])])[order]

    names = [n for p in parts for n in p[1]]
    return Features(names=[names[i] for i in order], stats=all_reduce_stats(features.stats),
                    provenance=features.provenance, features=rows(2), logits=rows(3),
                    skipped=Skipped([item for p in parts for item in p[4]]), cached=features.cached,
                    indices=sorted(i for p in parts for i in p[0]))


def process_shard() -> Shard:
    """This process's share of the metrics' work (:mod:`imgdist.metrics._shard`), gathering over
    the initialised process group."""
    _require_initialised()
    return Shard(dist.get_rank(), dist.get_world_size(), gather=_all_gather)


def evaluate_features_distributed(real, fake, *, metrics=DEFAULT_METRICS, provenance=None, progress=False,
                                  **metric_kwargs) -> Result:
    """:func:`imgdist.evaluate_features` on features every rank holds (N x d arrays, or
    :class:`~imgdist.features.Features` gathered by :func:`evaluate_distributed`), with the work
    split over the ranks: the Gaussian statistics of each rank's rows are all-reduced, and the
    k-NN distance blocks (precision, recall, density, coverage), the KID subsets and the
    FID-infinity subsets are divided among the ranks and gathered. Every rank returns the result:
    FD equal to one process's to rounding (statistics summed in another order), the rest exactly
    where BLAS runs with the same thread count as that process (KID's kernel products round
    differently with 1 and 2 threads: 1.4e-17 apart at 50k).
    Metrics without a split (Vendi, CMMD, memorization, ...) are computed on every rank.
    """
    shard = process_shard()
    sides = []
    for x in (real, fake):
        if isinstance(x, Features):
            sides.append(x)
            continue
        x = np.asarray(x)
        rows = [i for i in range(len(x)) if shard.owns(i // CHUNK_ROWS)]
        local = Features.from_array(x, provenance=provenance, rows=rows)
        local.stats = all_reduce_stats(local.stats)
        sides.append(local)
    return evaluate_features(sides[0], sides[1], metrics=metrics, progress=progress and shard.rank == 0,
                             shard=shard, **metric_kwargs)


def evaluate_distributed(real, fake, *, metrics=DEFAULT_METRICS, backbone="inception", weights=None,
                         mode=None, dims=None, device=D.DEVICE, precision="fp32", batch_size=D.BATCH_SIZE,
                         workers=None, progress=False, cache=False, on_error="raise", **metric_kwargs) -> Result:
    """:func:`imgdist.evaluate` with the images split over the ranks, and the metrics' work too
    (see :func:`evaluate_features_distributed`); every rank returns the result."""
    _require_initialised()
    rank, world = dist.get_rank(), dist.get_world_size()
    options = MetricOptions.from_keywords(metric_kwargs)
    extractor = FeatureExtractor(backbone, weights=weights, mode=mode, dims=dims, device=device,
                                 precision=precision, batch_size=batch_size, workers=workers,
                                 progress=progress and rank == 0, cache=cache)
    # the same facts as one process's evaluate (images on both sides, no held-out set under torchrun)
    chosen = parse_metrics(metrics, Facts.of(extractor.spec))
    sources = [open_source(spec) for spec in (real, fake)]
    options.check_sets(chosen, {"real": len(sources[0]), "fake": len(sources[1])},
                       has_logits=extractor.spec.has_logits)
    sides = []
    for side, source in zip(("real", "fake"), sources):
        shard = ShardSource(source, rank, world, block=extractor.batch_size)
        keep = keeps_features(chosen, options, len(source), extractor.feature_dim)
        local = extractor.extract(shard, keep_features=keep,
                                  keep_logits=needs_logits(chosen) and side == "fake",
                                  on_error=on_error, desc=f"{side}, rank 0's share" if world > 1 else side)
        sides.append(_gather_features(local, shard))
    result = evaluate_features(sides[0], sides[1], metrics=chosen, options=options, shard=process_shard(),
                               progress=progress and rank == 0)
    result.details["device"] = str(extractor.device)
    result.details["processes"] = world
    return result


def sync_evaluator(evaluator: Evaluator) -> None:
    """Make every rank's :class:`Evaluator` hold the union of all ranks' updates (in place)."""
    _require_initialised()
    for state in (evaluator._real, evaluator._fake):
        if state["frozen"]:
            continue
        state["stats"] = all_reduce_stats(state["stats"])
        for key in ("feats", "logits"):
            parts = _all_gather(np.concatenate(state[key]) if state[key] else None)
            state[key] = [p for p in parts if p is not None]
