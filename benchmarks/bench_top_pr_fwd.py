"""Cost of TopP&R and FWD: seconds and peak resident memory, each case in a process of its own.

    python benchmarks/bench_top_pr_fwd.py [--threads N] [--cases top-pr,fwd64,fwd256]
                                          [--top-pr-fake 10000] [--fwd256-images 400] [--json OUT]

Cases (each run in a fresh child process, so ``ru_maxrss`` is that case's own peak):

- ``top-pr``: ``imgdist.metrics.top_pr.top_pr`` on 10,000 real x ``--top-pr-fake`` (10,000; 50,000
  for the memory claim) float32 features at d = 2048 (20 Gaussian clusters, the fakes shifted by
  0.3 in every coordinate). Checked: peak below 4 GiB.
- ``fwd64``: FWD of 10,000 Fashion-MNIST training images against 10,000 test images, each resized
  from 28 x 28 to 64 x 64 (Pillow bilinear, pytorchfwd's ``--resize``), through
  ``imgdist.extraction.wavelets.wavelet_statistics`` (decoding, resize, Haar packets to level 4,
  streamed statistics: 256 packets of 48 coefficients) and ``PacketStats.fwd``.
- ``fwd256``: the same at 256 x 256 (256 packets of 768 coefficients, 1.21 GB of statistics per
  set) on ``--fwd256-images`` images per side; the time for 10,000 + 10,000 is extrapolated:
  the per-image part (decode, resize, transform, accumulate) scales with the image count, the
  256 per-packet Fréchet distances do not. The printout says which numbers are measured.

Each case prints one row: ``case, n_real, n_fake, size, seconds, peak RSS``. The machine's load
matters (2 shared cores here); the same command on an idle machine gives the lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from fwd_inputs import fashion  # noqa: E402  (the first images of a Fashion-MNIST IDX file)

GIB = 2**30


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def clustered(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """``n`` samples around 20 cluster centres shared by every call (``seed``: the samples')."""
    centres = np.random.default_rng(2048).standard_normal((20, d)).astype(np.float32) * 3
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(20, size=n)] + rng.standard_normal((n, d), dtype=np.float32)
    return x + np.float32(shift)


def case_top_pr(n_real: int, n_fake: int) -> dict:
    from imgdist.metrics.top_pr import top_pr

    real = clustered(n_real, 2048, 0)
    fake = clustered(n_fake, 2048, 1, shift=0.3)
    before = peak_rss()
    t = time.perf_counter()
    result = top_pr(real, fake)
    seconds = time.perf_counter() - t
    return {"case": "top-pr", "n_real": n_real, "n_fake": n_fake, "size": "d=2048", "seconds": seconds,
            "peak_rss": peak_rss(), "rss_before": before, "measured": True,
            "value": f"precision {result.precision:.4f} recall {result.recall:.4f}"}


def case_fwd(size: int, n: int, full: int) -> dict:
    from imgdist.extraction.wavelets import wavelet_statistics

    real = fashion("train-images-idx3-ubyte.gz", n)
    fake = fashion("t10k-images-idx3-ubyte.gz", n)
    t = time.perf_counter()
    a = wavelet_statistics(real, resize=size)
    b = wavelet_statistics(fake, resize=size)
    stream = time.perf_counter() - t
    t = time.perf_counter()
    value = a.fwd(b)
    distance = time.perf_counter() - t
    seconds = stream + distance
    row = {"case": f"fwd{size}", "n_real": n, "n_fake": n, "size": f"{size}x{size}", "seconds": seconds,
           "peak_rss": peak_rss(), "measured": n == full, "value": f"FWD {value:.5g}",
           "stream_s": stream, "distance_s": distance, "stats_bytes_per_set": a.nbytes}
    if n != full:
        row["extrapolated_seconds"] = stream * full / n + distance
        row["extrapolated_to"] = full
    return row


def run_case(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case == "top-pr":
        return case_top_pr(10_000, args.top_pr_fake)
    if args.case == "fwd64":
        return case_fwd(64, 10_000, 10_000)
    if args.case == "fwd256":
        return case_fwd(256, args.fwd256_images, 10_000)
    raise SystemExit(f"unknown case {args.case}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="top-pr,fwd64,fwd256")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--top-pr-fake", type=int, default=10_000)
    parser.add_argument("--fwd256-images", type=int, default=400)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return
    rows = []
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--case", case, "--threads", str(args.threads),
               "--top-pr-fake", str(args.top_pr_fake), "--fwd256-images", str(args.fwd256_images)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'case':8} {'n_real':>7} {'n_fake':>7} {'size':>9} {'seconds':>9} {'peak RSS':>9}  value")
    failed = False
    for r in rows:
        print(f"{r['case']:8} {r['n_real']:>7} {r['n_fake']:>7} {r['size']:>9} {r['seconds']:>9.1f} "
              f"{r['peak_rss'] / GIB:>7.2f} G  {r['value']}")
        if "extrapolated_seconds" in r:
            print(f"{'':8} {'(extrapolated to ' + str(r['extrapolated_to']) + ' + ' + str(r['extrapolated_to']) + ')':>25}"
                  f" {r['extrapolated_seconds']:>9.0f}              stream {r['stream_s']:.1f} s for "
                  f"{r['n_real']}+{r['n_fake']}, distances {r['distance_s']:.1f} s")
        if r["case"] == "top-pr":
            ok = r["peak_rss"] < 4 * GIB
            failed |= not ok
            print(f"{'':8} TopP&R peak below 4 GiB: {'PASS' if ok else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
