"""Pixel-distance throughput: imgdist against plain one-liners that compute only L1.

    python benchmarks/bench_pixel.py [--pairs 1000] [--size 256] [--batch 100] [--repeats 3]
                                     [--ssim-pairs 100] [--threads N]

Random ``size x size`` RGB uint8 image pairs are processed ``--batch`` pairs per call. Rows:

* ``torch L1 one-liner``   ``(a.float() - b.float()).abs().sum((1, 2, 3))`` on N x 3 x H x W tensors
* ``numpy L1 one-liner``   ``np.abs(a.astype(np.float32) - b.astype(np.float32)).sum((1, 2, 3))``
                           on N x H x W x 3 arrays
* ``imgdist pixel_distances(with_ssim=False)``  L1, mean, MSE, RMSE, PSNR from exact integer sums
* ``imgdist sum_abs_diff``                      the exact L1 alone
* ``imgdist pixel_distances (with SSIM)``       everything, SSIM in float64; timed on the first
                                                ``--ssim-pairs`` pairs only, because it is
                                                orders of magnitude slower

Each row is the median of ``--repeats`` timed passes after one untimed warm-up batch.
The requirement checked at the end: imgdist's non-SSIM distances run at no less than half the
speed of the torch one-liner that computes only L1 (ratio <= 2).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from imgdist.pairs.pixel import pixel_distances, sum_abs_diff

REQUIRED_RATIO = 2.0


def time_pass(fn, a, b, batch: int, pairs: int) -> float:
    start = time.perf_counter()
    for i in range(0, pairs, batch):
        fn(a[i:i + batch], b[i:i + batch])
    return time.perf_counter() - start


def bench(fn, a, b, batch: int, pairs: int, repeats: int) -> float:
    """Pairs per second, median of ``repeats`` passes over ``pairs`` pairs."""
    fn(a[:batch], b[:batch])  # warm-up: allocator, thread pool, lazy imports
    times = [time_pass(fn, a, b, batch, pairs) for _ in range(repeats)]
    return pairs / statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ssim-pairs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    shape = (args.pairs, args.size, args.size, 3)
    a_np = rng.integers(0, 256, shape, dtype=np.uint8)
    b_np = rng.integers(0, 256, shape, dtype=np.uint8)
    a_t = torch.from_numpy(a_np).permute(0, 3, 1, 2).contiguous()  # N x 3 x H x W
    b_t = torch.from_numpy(b_np).permute(0, 3, 1, 2).contiguous()

    # the fast rows must agree with the exact ones (float32 sums of integers are exact up to 2^24
    # per partial sum; compare loosely so the check is about the computation, not rounding)
    exact = sum_abs_diff(a_t[:4], b_t[:4])
    torch.testing.assert_close((a_t[:4].float() - b_t[:4].float()).abs().sum((1, 2, 3)).double(), exact,
                               rtol=1e-6, atol=0)
    assert torch.equal(pixel_distances(a_np[:4], b_np[:4], with_ssim=False)["sum_abs_diff"], exact)

    rows = [
        ("(a) torch L1 one-liner", lambda a, b: (a.float() - b.float()).abs().sum((1, 2, 3)),
         a_t, b_t, args.pairs),
        ("(b) numpy L1 one-liner", lambda a, b: np.abs(a.astype(np.float32) - b.astype(np.float32)).sum((1, 2, 3)),
         a_np, b_np, args.pairs),
        ("(c) imgdist pixel_distances(with_ssim=False)",
         lambda a, b: pixel_distances(a, b, with_ssim=False), a_t, b_t, args.pairs),
        ("(d) imgdist sum_abs_diff", sum_abs_diff, a_t, b_t, args.pairs),
        ("(e) imgdist pixel_distances (with SSIM)", pixel_distances, a_t, b_t,
         min(args.ssim_pairs, args.pairs)),
    ]
    print(f"{args.pairs} pairs of {args.size}x{args.size} RGB uint8, {args.batch} pairs per call, "
          f"median of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    for label, fn, a, b, pairs in rows:
        rate = bench(fn, a, b, min(args.batch, pairs), pairs, args.repeats)
        results[label[:3]] = rate
        print(f"  {label:<46} {rate:>10.1f} pairs/s   ({pairs} pairs)", flush=True)

    ratio = results["(a)"] / results["(c)"]
    verdict = "OK" if ratio <= REQUIRED_RATIO else "TOO SLOW"
    print(f"time ratio (c)/(a): {ratio:.2f}x the torch L1 one-liner "
          f"(required <= {REQUIRED_RATIO:g}x): {verdict}")
    return 0 if ratio <= REQUIRED_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
