"""Time the Fréchet distance at d = 2048: scipy sqrtm, eigenvalues of the product, and imgdist.

    python benchmarks/bench_frechet.py [--dim 2048] [--samples 4096] [--repeats 3]

Covariances are made from random features with unequal scales (condition like real embeddings'),
so every method sees the same float64 matrices. The max relative difference is taken against the
sqrtm result, the slow float64 reference.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.linalg

from imgdist.metrics import frechet_distance


def _stats(rng, n, d, shift):
    x = rng.standard_normal((n, d)) * rng.uniform(0.05, 2.0, d) + shift
    mu = x.mean(axis=0)
    xc = x - mu
    return mu, xc.T @ xc / (n - 1)


def fid_sqrtm(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def fid_eigvals(mu1, s1, mu2, s2):
    w = scipy.linalg.eigvals(s1 @ s2)
    diff = mu1 - mu2
    tr = np.sqrt(np.clip(w.real, 0, None)).sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr)


def _time(fn, args, repeats):
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a = _stats(rng, args.samples, args.dim, 0.0)
    b = _stats(rng, args.samples, args.dim, 0.1)
    inputs = (a[0], a[1], b[0], b[1])
    rows = [
        ("scipy.linalg.sqrtm (reference)", 1, fid_sqrtm),
        ("scipy.linalg.eigvals(S1 S2)", args.repeats, fid_eigvals),
        ("imgdist frechet_distance", args.repeats, frechet_distance),
    ]
    results = [(name, reps, *_time(fn, inputs, reps)) for name, reps, fn in rows]
    ref = results[0][3]
    print(f"d = {args.dim}, N = {args.samples}, CPU cores = {os.cpu_count()}, "
          f"OPENBLAS_NUM_THREADS = {os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"load avg = {os.getloadavg()[0]:.2f} (other jobs inflate every time)")
    print(f"{'method':34s} {'runs':>4s} {'time [s]':>9s} {'FID':>20s} {'rel diff vs sqrtm':>18s}")
    for name, reps, seconds, value in results:
        rel = abs(value - ref) / abs(ref)
        print(f"{name:34s} {reps:4d} {seconds:9.3f} {value:20.12f} {rel:18.2e}")


if __name__ == "__main__":
    main()
