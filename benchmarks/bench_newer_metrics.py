"""Cost of rarity, P-precision/P-recall, precision/recall cover, RKE, RRKE and sliced Wasserstein.

    python benchmarks/bench_newer_metrics.py [--n-real 10000] [--n-fake 10000] [--d 2048]
                                             [--metrics rarity,ppr,pr-cover,rke,rrke,sw]
                                             [--seed 0] [--json OUT]

Each metric runs in a fresh Python process (so the peak resident memory is its own) on seeded
random float32 features (standard normal, ``--n-real`` x ``--d`` and ``--n-fake`` x ``--d``) with
its default settings, called the way an evaluation calls it: rarity (k 3), P-precision and
P-recall together (a 1.2, k 4), precision and recall cover together (k 3, C 3), the RKE mode
count of the fakes and of the reals (sigma 10), RRKE (sigma 10), sliced Wasserstein (1,000
directions). Printed per metric: wall-clock seconds, CPU seconds of the process (user + system,
all threads: on a shared machine the steadier number), the process's peak resident memory
(``ru_maxrss``) and its resident memory just before the metric started (the features and the
interpreter), so that the difference is the metric's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

METRICS = ("rarity", "ppr", "pr-cover", "rke", "rrke", "sw")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run(metric: str):
    from imgdist.metrics.pr_cover import pr_cover
    from imgdist.metrics.probabilistic_pr import p_precision_recall
    from imgdist.metrics.rarity import rarity
    from imgdist.metrics.rke import rke_mode_count, rrke
    from imgdist.metrics.sliced_wasserstein import sliced_wasserstein

    calls = {
        "rarity": lambda x, y: rarity(x, y).value,
        "ppr": lambda x, y: p_precision_recall(x, y).precision,
        "pr-cover": lambda x, y: pr_cover(x, y).precision,
        "rke": lambda x, y: (rke_mode_count(y), rke_mode_count(x))[0],
        "rrke": lambda x, y: rrke(x, y),
        "sw": lambda x, y: sliced_wasserstein(x, y),
    }
    return calls[metric]


def child(args) -> None:
    rng = np.random.default_rng(args.seed)
    real = rng.standard_normal((args.n_real, args.d), dtype=np.float32)
    fake = rng.standard_normal((args.n_fake, args.d), dtype=np.float32) + np.float32(0.1)
    call = _run(args.child)
    before = _rss_mib()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    value = call(real, fake)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    print(json.dumps({"metric": args.child, "seconds": seconds, "cpu_seconds": cpu,
                      "peak_rss_mib": after.ru_maxrss / 1024, "rss_before_mib": before, "value": value}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-real", type=int, default=10_000)
    parser.add_argument("--n-fake", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--metrics", default=",".join(METRICS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    chosen = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(METRICS))
    if unknown:
        parser.error(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    print(f"{args.n_real} reals x {args.n_fake} fakes, d = {args.d}; one fresh process per metric", flush=True)
    print(f"{'metric':<10} {'seconds':>9} {'CPU s':>9} {'peak RSS MiB':>13} {'RSS before MiB':>15} {'value':>14}",
          flush=True)
    rows = []
    for metric in chosen:
        cmd = [sys.executable, __file__, "--child", metric, "--n-real", str(args.n_real), "--n-fake",
               str(args.n_fake), "--d", str(args.d), "--seed", str(args.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{metric:<10} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{metric:<10} {row['seconds']:>9.1f} {row['cpu_seconds']:>9.1f} {row['peak_rss_mib']:>13.0f} "
              f"{row['rss_before_mib']:>15.0f} {row['value']:>14.6g}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n_real": args.n_real, "n_fake": args.n_fake, "d": args.d, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
