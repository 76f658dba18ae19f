"""LPIPS and DISTS throughput on the CPU: image pairs per second at 256 px.

    python benchmarks/bench_lpips.py [--size 256] [--pairs 32] [--nets alex,vgg,squeeze,dists]
                                     [--batches 1,8,auto] [--repeats 2] [--threads N]
                                     [--peers-python PEERS/bin/python] [--memory]

Stand-in weights (PyTorch's default initialisation: the speed does not depend on the values) and
``--pairs`` random smooth ``size x size`` uint8 image pairs. Rows per network:

* ``pairs, batch B``     :func:`~imgdist.extraction.perceptual.base.pair_distances`, B pairs per
                         call (both images of a pair through the network in one batch), what
                         ``lpips_diversity`` runs; ``auto`` is the batch it chooses (about 1 GB of
                         activations);
* ``one vs many``        :func:`~imgdist.extraction.perceptual.base.distances_to`: one image
                         against ``--pairs`` others, the first run once (``imgdist compare A
                         FOLDER --lpips``, the robustness table);
* ``lpips package``      with ``--peers-python``: ``lpips.LPIPS(net)(x, y)`` 0.1.4 in that
                         environment, one pair per call and ``--pairs`` per call (not for DISTS).

Each rate is the best of ``--repeats`` passes after one untimed warm-up call.

``--memory``: peak resident memory of one batch per input pixel, each network in a fresh
process (``ru_maxrss`` after the batch minus before it, divided by the batch's pixels): the
``bytes_per_pixel`` the batch size is chosen from.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from imgdist.extraction.perceptual.base import distances_to, pair_distances
from imgdist.extraction.perceptual.dists import DISTS
from imgdist.extraction.perceptual.lpips import LPIPS

NETS = ("alex", "vgg", "squeeze", "dists")

_PEERS = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch, lpips
net, size, pairs, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
g = torch.Generator().manual_seed(0)
x, y = torch.rand(pairs, 3, size, size, generator=g) * 2 - 1, torch.rand(pairs, 3, size, size, generator=g) * 2 - 1
out = {}
with torch.no_grad():
    for name, step in (("1", 1), ("all", pairs)):
        model(x[:step], y[:step])
        best = 1e9
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(0, pairs, step):
                model(x[i:i + step], y[i:i + step])
            best = min(best, time.perf_counter() - t)
        out[name] = pairs / best
print(json.dumps(out))
"""


def model_for(net: str):
    torch.manual_seed(0)
    return (DISTS() if net == "dists" else LPIPS(net)).eval()


def images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random uint8 images N x 3 x size x size (noise blurred by upsampling)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return (F.interpolate(coarse, size=(size, size), mode="bilinear") * 255).round().to(torch.uint8)


def best_rate(fn, pairs: int, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return pairs / best


def rates(net: str, size: int, pairs: int, batches: list[str], repeats: int) -> dict[str, float]:
    model = model_for(net)
    a, b = images(pairs, size, 1), images(pairs, size, 2)
    out = {}
    for batch in batches:
        step = max(1, model.batch_images(size, size) // 2) if batch == "auto" else int(batch)
        step = min(step, pairs)

        def run():
            for i in range(0, pairs, step):
                pair_distances(model, a[i:i + step], b[i:i + step])

        out[f"pairs, batch {batch}" + (f" ({step})" if batch == "auto" else "")] = best_rate(run, pairs, repeats)
    first = a[0].permute(1, 2, 0).numpy()
    others = list(b.permute(0, 2, 3, 1).numpy())
    out["one vs many"] = best_rate(lambda: distances_to(model, first, others), pairs, repeats)
    return out


def peers_rates(python: str, net: str, size: int, pairs: int, repeats: int) -> dict[str, float]:
    proc = subprocess.run([python, "-c", _PEERS, net, str(size), str(pairs), str(repeats)], capture_output=True,
                          text=True, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"lpips package, one pair per call": got["1"], f"lpips package, {pairs} pairs per call": got["all"]}


def measure_memory(net: str, size: int, batch: int) -> float:
    """In this (fresh) process: peak RSS growth of one batch of pairs, bytes per input pixel."""
    model = model_for(net)
    a, b = images(batch, size, 1), images(batch, size, 2)
    pair_distances(model, a[:1], b[:1])  # thread pools, allocator arenas
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pair_distances(model, a, b)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (after - before) / (2 * batch * size * size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--batches", default="1,8,auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--peers-python", default=None, help="a Python with lpips 0.1.4, for its rates")
    parser.add_argument("--memory", action="store_true", help="peak memory per input pixel instead of rates")
    parser.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    nets = args.nets.split(",")
    if args._measure:
        print(measure_memory(args._measure, args.size, 8))
        return 0
    if args.memory:
        print(f"peak memory of one batch of 8 pairs at {args.size} px, per input pixel")
        for net in nets:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_measure", net, "--size",
                                   str(args.size)] + (["--threads", str(args.threads)] if args.threads else []),
                                  capture_output=True, text=True, check=True)
            print(f"{net:8s} {float(proc.stdout):8.0f} bytes")
        return 0
    print(f"pairs per second at {args.size} px, {args.pairs} pairs, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    for net in nets:
        got = rates(net, args.size, args.pairs, args.batches.split(","), args.repeats)
        if args.peers_python and net != "dists":
            got.update(peers_rates(args.peers_python, net, args.size, args.pairs, args.repeats))
        for name, rate in got.items():
            print(f"{net:8s} {name:40s} {rate:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
