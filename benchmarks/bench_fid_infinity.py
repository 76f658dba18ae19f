"""Time FID-infinity on pixel features (d = 3072), against the old one-covariance-per-subset route.

    python benchmarks/bench_fid_infinity.py [--samples 600] [--slow-points 2] [--memory]

Real = the first N Fashion-MNIST training images, fake = the first N test images, both through
the ``pixels`` backbone (32 x 32 x 3 = 3072 features, the case the issue measured: 407 s at
N = 1000 before). The old route (mean and covariance of each subset, then a d x d Fréchet
distance; eigendecompositions with eigenvectors because every covariance is singular) is timed on
the first ``--slow-points`` sizes of the same run (same subsets), with the relative difference of
those FIDs; its total is extrapolated from the time per point.

``--memory``: peak memory traced (numpy allocations, tracemalloc) beyond the inputs for the 50k
protocol's shapes, 50,000 x 2048 float32 real and fake features, at sizes 5,000 and 50,000 (the
peak does not depend on how many sizes there are; the run takes minutes).
"""

from __future__ import annotations

import argparse
import gzip
import time
import tracemalloc

import numpy as np

from imgdist.extraction.features import FeatureExtractor
from imgdist.metrics import fid_infinity, frechet_distance, mean_cov
from imgdist.extraction.sources import open_source

FASHION = "/usr/share/datasets/fashion-mnist/{}-images-idx3-ubyte.gz"


def _fashion(split: str, n: int) -> np.ndarray:
    with gzip.open(FASHION.format(split)) as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:n]


def _pixel_features(images: np.ndarray) -> np.ndarray:
    extractor = FeatureExtractor("pixels", progress=False, cache=False)
    return extractor.extract(open_source(images), keep_features=True).features


def _slow_route(real, fake, sizes, points, seed=0):
    """What fid_infinity did before (mean_cov and a d x d Fréchet distance per subset), on the
    first ``points`` sizes, drawing the same subsets."""
    mu_r, s_r = mean_cov(real)
    rng = np.random.default_rng(seed)
    out = []
    for size in sizes[:points]:
        sub = fake[rng.choice(len(fake), int(size), replace=False)] if size < len(fake) else fake
        out.append(frechet_distance(mu_r, s_r, *mean_cov(sub)))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600, help="0: skip the timing")
    parser.add_argument("--slow-points", type=int, default=2, help="0: skip the old route")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()

    if args.samples:
        real = _pixel_features(_fashion("train", args.samples))
        fake = _pixel_features(_fashion("t10k", args.samples))
        start = time.perf_counter()
        res = fid_infinity(real, fake, progress=False)
        print(f"fid_infinity N = {args.samples}, d = {real.shape[1]}, {len(res.sizes)} sizes "
              f"{res.sizes[0]}..{res.sizes[-1]}: {time.perf_counter() - start:.1f} s, FID_inf {res.value:.6g}")
        if args.slow_points:
            start = time.perf_counter()
            old = _slow_route(real, fake, res.sizes, args.slow_points)
            per_point = (time.perf_counter() - start) / len(old)
            print(f"old route: {per_point:.1f} s per size ({len(res.sizes) * per_point:.0f} s for all "
                  f"{len(res.sizes)} extrapolated); max relative difference of the first {len(old)} FIDs "
                  f"{np.max(np.abs(res.fids[:len(old)] / old - 1)):.2e}")

    if args.memory:
        rng = np.random.default_rng(0)
        real = rng.standard_normal((50_000, 2048), dtype=np.float32)
        fake = rng.standard_normal((50_000, 2048), dtype=np.float32) + np.float32(0.01)
        tracemalloc.start()
        start = time.perf_counter()
        fid_infinity(real, fake, sizes=[5000, 50_000], progress=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"50,000 x 2048 float32 real and fake (inputs {2 * real.nbytes / 2**30:.2f} GiB), sizes "
              f"5000 and 50000: {time.perf_counter() - start:.0f} s, peak traced memory beyond the "
              f"inputs {peak / 2**20:.0f} MiB (one float64 50,000 x 2048 copy would be "
              f"{real.size * 8 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
