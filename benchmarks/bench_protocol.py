"""The 50k protocol from features: FID, KID, precision/recall/density/coverage and FID-infinity for
50,000 fakes against 50,000 reals at d = 2048, time and peak memory per metric, in one process and
split over torchrun ranks.

    python benchmarks/bench_protocol.py [--count 50000] [--dim 2048] [--metrics fid,kid,prdc,fid-inf]
                                        [--nproc 2] [--no-single] [--json OUT]

Features: random float32, non-negative like pooled CNN features (|N(0, 1)|; the fakes scaled by
1.05 and shifted by 0.02, so every metric has something to measure), drawn from a fixed seed in
each process. Each metric runs in a fresh process (``imgdist.evaluation.run.evaluate_features`` on
``Features.from_array``), so its peak RSS (the kernel's ``ru_maxrss``, inputs included: 2 x
0.38 GiB) is its own; then all of them in one process, as ``imgdist eval`` computes them. With
``--nproc N`` the same set of metrics runs under ``torchrun --standalone --nproc_per_node N``
(gloo; ``imgdist.evaluation.distributed.evaluate_features_distributed``: the k-NN blocks and the KID and
FID-infinity subsets divided among the ranks), each rank with ``cores / N`` threads, and its
values are compared with the single process's (FD and FD-infinity to 1e-8 relative: statistics
summed in another order, and BLAS rounds differently with fewer threads; the rest exactly; KID
exactly against one process with the ranks' thread count, a row of its own).
For reference: the ``prdc`` package computes full N x N distance matrices (3 x 50,000^2 float32,
about 30 GB), which does not fit this 24 GB machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LIMIT = 4 * 2**30
KEYS = ("fid", "kid", "precision", "recall", "density", "coverage", "fid-inf")


def features(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = np.abs(rng.standard_normal((n, d), dtype=np.float32))
    fake = np.abs(rng.standard_normal((n, d), dtype=np.float32))
    fake *= np.float32(1.05)
    fake += np.float32(0.02)
    return real, fake


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_here(args) -> None:
    """One process (or one torchrun rank): the metrics on the features, a JSON line on stdout."""
    from imgdist.extraction.features import Features

    real, fake = features(args.n, args.d)
    t = time.perf_counter()
    if args.distributed:
        import torch.distributed as dist

        from imgdist.evaluation.distributed import evaluate_features_distributed

        dist.init_process_group("gloo")
        result = evaluate_features_distributed(real, fake, metrics=args.run)
        rank = dist.get_rank()
    else:
        from imgdist.evaluation.run import evaluate_features

        result = evaluate_features(Features.from_array(real), Features.from_array(fake), metrics=args.run)
        rank = 0
    seconds = time.perf_counter() - t
    record = {"metrics": args.run, "rank": rank, "seconds": seconds, "peak_rss": peak_rss(),
              "values": result.values, "stds": result.stds}
    if args.distributed:
        import torch.distributed as dist

        records = [None] * dist.get_world_size()
        dist.all_gather_object(records, record)
        dist.destroy_process_group()
        if rank:
            return
        record = {"metrics": args.run, "ranks": records, "seconds": max(r["seconds"] for r in records),
                  "peak_rss": max(r["peak_rss"] for r in records), "values": result.values, "stds": result.stds}
    print("RESULT " + json.dumps(record), flush=True)


def launch(cmd: list[str], env: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    record = json.loads(line[len("RESULT "):])
    record["wall"] = time.perf_counter() - start  # start-up and feature generation included
    record["user"], record["sys"] = usage.ru_utime, usage.ru_stime
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # names torchrun does not take for abbreviations of its own options
    ap.add_argument("--count", type=int, default=50_000, help="features per set")
    ap.add_argument("--dim", type=int, default=2048, help="feature dimensions")
    ap.add_argument("--metrics", default="fid,kid,prdc,fid-inf")
    ap.add_argument("--nproc", type=int, default=2, help="torchrun ranks (0: no distributed run)")
    ap.add_argument("--no-single", action="store_true", help="skip the per-metric processes")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker-metrics", dest="run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--in-torchrun", dest="distributed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.n, args.d = args.count, args.dim
    if args.run:
        run_here(args)
        return

    here = [sys.executable, __file__, "--count", str(args.n), "--dim", str(args.d)]
    env = dict(os.environ)
    rows, records = [], {}
    plan = [] if args.no_single else [m for m in args.metrics.split(",")]
    plan.append(args.metrics)  # all together, as imgdist eval computes them
    for metrics in plan:
        r = launch(here + ["--worker-metrics", metrics], env)
        records[metrics] = r
        label = metrics if "," not in metrics else f"all ({metrics}), one process"
        rows.append([label, f"{r['seconds']:.1f}", f"{r['peak_rss'] / 2**30:.2f}", ""])
        print(f"{label}: {r['seconds']:.1f} s, peak RSS {r['peak_rss'] / 2**30:.2f} GiB", flush=True)
    together = records[args.metrics]
    if args.nproc > 1:
        threads = max(1, (os.cpu_count() or 1) // args.nproc)
        env_d = dict(env, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               __file__, "--count", str(args.n), "--dim", str(args.d), "--worker-metrics", args.metrics, "--in-torchrun"]
        r = launch(cmd, env_d)
        records["distributed"] = r
        diffs = []
        for key, value in together["values"].items():
            other = r["values"][key]
            # Fréchet distances: relative difference (statistics summed in another order, and
            # BLAS with fewer threads rounds differently); the rest must be equal
            diffs.append(f"{key} {abs(other - value) / abs(value):.1e}" if key.startswith("fid")
                         else f"{key} {'equal' if other == value else f'{other - value:+.3g}'}")
        rows.append([f"all, torchrun {args.nproc} ranks x {threads} threads", f"{r['seconds']:.1f}",
                     f"{r['peak_rss'] / 2**30:.2f} per rank", "; ".join(diffs)])
        print(f"distributed: {r['seconds']:.1f} s; " + "; ".join(diffs), flush=True)
        if "kid" in together["values"] and threads != (os.cpu_count() or 1):
            # KID's kernel sums are BLAS products: with the ranks' thread count, one process
            # must give the ranks' KID to the last bit
            same = launch(here + ["--worker-metrics", "kid"], env_d)
            kid, ranks = same["values"]["kid"], r["values"]["kid"]
            verdict = f"torchrun's kid {'equal' if kid == ranks else f'{ranks - kid:+.3g}'}"
            rows.append([f"kid, one process x {threads} threads", f"{same['seconds']:.1f}",
                         f"{same['peak_rss'] / 2**30:.2f}", verdict])
            print(f"kid with {threads} thread(s): {same['seconds']:.1f} s; {verdict}", flush=True)

    from imgdist.formatting import format_table

    print(f"\n{args.n} fakes x {args.n} reals, d = {args.d}, random float32 features "
          f"({2 * args.n * args.d * 4 / 2**30:.2f} GiB of inputs), {os.cpu_count()} cores; seconds exclude "
          "start-up and feature generation")
    print(format_table(["metrics", "seconds", "peak RSS (GiB)", "vs one process"], rows))
    values = together["values"]
    print("values: " + ", ".join(f"{k} {values[k]:.6g}" for k in KEYS if k in values))
    peak = max(r["peak_rss"] for r in records.values())
    print(f"{'PASS' if peak <= LIMIT else 'FAIL'}  largest peak RSS {peak / 2**30:.2f} GiB (limit 4 GiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
