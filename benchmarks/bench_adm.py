"""Time and peak memory of the metric part of ``imgdist eval --suite adm``, from features.

The ADM protocol: 10,000 reference and 50,000 sample images. Features here are random stand-ins of
the right shapes (pool 2048, sFID 2023, ``pool @ W`` logits 1008), non-negative and of pool_3's
scale so that float16 does not overflow (as with real pool features): the work and the memory do
not depend on the values. Prints one row per stage and the peak resident memory of the process.

    PYTHONPATH=src python benchmarks/bench_adm.py                  # 10,000 x 50,000
    PYTHONPATH=src python benchmarks/bench_adm.py --ref 2000 --sample 5000
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from imgdist.metrics import frechet_distance
from imgdist.metrics.adm import adm_inception_score, adm_precision_recall
from imgdist.extraction.stats import GaussianStats


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _features(rng, n, d):
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 5000):  # drawn in chunks: no float64 copy of the whole set
        out[s:s + 5000] = np.abs(rng.standard_normal((min(5000, n - s), d), dtype=np.float32)) * 0.5
    return out


def _stats(x):
    stats = GaussianStats()
    for s in range(0, len(x), 1000):  # as the extraction streams them, batch by batch
        stats.update(x[s:s + 1000])
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=50_000)
    parser.add_argument("--exact", action="store_true", help="also time precision/recall in float64")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    def stage(name, fn):
        t = time.perf_counter()
        value = fn()
        rows.append((name, time.perf_counter() - t, _peak_gb()))
        return value

    pool_r, pool_s = _features(rng, args.ref, 2048), _features(rng, args.sample, 2048)
    sfid_r, sfid_s = _features(rng, args.ref, 2023), _features(rng, args.sample, 2023)
    logits = rng.standard_normal((args.sample, 1008), dtype=np.float32) * 3
    rows.append(("inputs (float32)", 0.0, _peak_gb()))
    st = stage("statistics (streamed, float64)", lambda: [_stats(x) for x in (pool_r, pool_s, sfid_r, sfid_s)])
    stage("Inception Score", lambda: adm_inception_score(logits))
    stage("FID (d = 2048)", lambda: frechet_distance(st[1].mu, st[1].sigma, st[0].mu, st[0].sigma))
    stage("sFID (d = 2023)", lambda: frechet_distance(st[3].mu, st[3].sigma, st[2].mu, st[2].sigma))
    pr = stage("precision/recall (float16 blocks)", lambda: adm_precision_recall(pool_r, pool_s))
    if args.exact:
        stage("precision/recall (float64)", lambda: adm_precision_recall(pool_r, pool_s, exact=True))
    print(f"{args.ref} reference x {args.sample} sample features; precision {pr.precision:.4f} recall "
          f"{pr.recall:.4f}, borderline {pr.borderline_precision} / {pr.borderline_recall}")
    print(f"{'stage':36s} {'seconds':>9s} {'peak RSS GB':>12s}")
    for name, seconds, peak in rows:
        print(f"{name:36s} {seconds:9.1f} {peak:12.2f}")
    print(f"{'total':36s} {sum(r[1] for r in rows):9.1f} {max(r[2] for r in rows):12.2f}")


if __name__ == "__main__":
    main()
