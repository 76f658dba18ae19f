"""Does each failure mode show up in the metric built for it? Fashion-MNIST, and a memory check.

    python benchmarks/bench_diversity.py [--n 1000] [--seed 0] [--collapse-class 0]
                                         [--copy-sigma 2] [--noise-sigma 32] [--blur-radius 1.5]
                                         [--n-cells 20] [--backbone efficientnet-lite0]
                                         [--batch-size 50] [--threads N] [--feature-dir DIR]
                                         [--data DIR] [--json OUT]
    python benchmarks/bench_diversity.py --memory [--mem-n 50000] [--mem-d 2048] [--mem-test 10000]

Part 1 (default). The real set is ``--n`` Fashion-MNIST *training* images: the "training set" the
memorization metrics compare against. Fake sets of ``--n`` images each:

- baseline     -- test images (a generator that learned the distribution without copying);
- collapsed    -- training-split images of one class that are not in the real set (mode collapse);
- copies       -- the real set's own images with Gaussian noise of sigma ``--copy-sigma`` on 0..255
                  (a generator returning its training samples with small variations);
- noisy        -- the baseline with noise of sigma ``--noise-sigma`` (poor fidelity);
- blurred      -- the baseline blurred, Pillow radius ``--blur-radius`` (an underfit generator).

C_T needs a held-out real set: ``--n`` further test images, disjoint from the baseline. Every set
goes once through ``imgdist.extract_features`` (``--backbone``, default efficientnet-lite0 at
224x224); the metrics are ``imgdist.metrics`` functions on those features: FD
(``fid_from_features``), precision and recall (k = 3), coverage (k = 5), the share of fakes
with realism >= 1 (Kynkäänniemi et al.'s eq. 3 on the manifold of the reals with radius at most
the median), Vendi (q = 1, cosine kernel), authenticity, C_T (``--n-cells`` k-means cells, cells
with >= 21 fakes) and copies (fakes at most the 1st percentile of the reals' nearest-neighbour
distances from a real).

Claims checked (PASS/FAIL; the exit status is 0 only when all required ones pass):
- collapse: Vendi <= 0.75x and recall <= 0.5x the baseline's;
- copies: authenticity <= 0.5x the baseline's, C_T <= -5 (strongly negative), and copies > 0
  with at least half of the set flagged while the baseline has at most 5% flagged;
- noise: precision <= 0.5x the baseline's;
- C_T as in Meehan et al.: |C_T| of the baseline (an independent sample) below 2, and C_T of the
  blurred set (underfitting) above 0. (In feature space: blur moves images *away* from the
  training set. In pixel space it does the opposite -- a blurred set's C_T against Fashion-MNIST
  pixels is -3 to -5, closer than fresh samples -- so this claim is one about the features.)
Shown beside, not required: the share of noisy fakes with realism >= 1 at most 0.5x the
baseline's. (Measured: precision of noisy sets can stop falling at about half the baseline's --
0.80 -> 0.40 at sigma 32 with seed 0, 0.41 at sigma 48; 0.80 -> 0.21 with seed 1 -- because a few
outlying reals have k-NN balls wide enough to hold noisy images; the realism test prunes those
balls and falls to 0.)

Part 2 (``--memory``). Random float32 features, ``--mem-n`` fakes and reals and ``--mem-test``
held-out reals at ``--mem-d`` dimensions, through every metric of this family in one process the
way an evaluation would chain them (one within-real pass and one fake-to-real pass shared by
realism, authenticity and copies; then C_T; Vendi of both sets). Prints the time of each step and
the process's peak resident memory after it (``ru_maxrss``), and checks the peak against 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch

import imgdist
from imgdist import metrics as M
from imgdist.formatting import format_table
from imgdist.pairs.perturbations import add_noise, blur

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fashion_mnist import CLASSES, DATA_DIR, load_split  # noqa: E402

# thresholds of the PASS/FAIL lines (fixed before the run)
VENDI_DROP = 0.75
RECALL_DROP = 0.5
AUTH_DROP = 0.5
CT_COPYING = -5.0
COPIES_MIN_FRACTION = 0.5
BASELINE_COPIES_MAX_FRACTION = 0.05
PRECISION_DROP = 0.5
CT_INDEPENDENT = 2.0
MEMORY_LIMIT = 4 * 2**30
CONDITIONS = ("baseline", "collapsed", "copies", "noisy", "blurred")


# ---------------------------------------------------------------- data

def build_sets(args) -> tuple[dict, list[str]]:
    train_x, train_y = load_split(args.data, "train")
    test_x, _ = load_split(args.data, "t10k")
    n = args.n
    if 2 * n > len(test_x):
        raise SystemExit(f"--n {n}: baseline and held-out sets need {2 * n} test images, there are {len(test_x)}")
    rng = np.random.default_rng(args.seed)
    real_idx = rng.permutation(len(train_x))[:n]
    test_idx = rng.permutation(len(test_x))[:2 * n]
    real = train_x[real_idx]
    base = test_x[test_idx[:n]]
    unused = np.setdiff1d(np.flatnonzero(train_y == args.collapse_class), real_idx)
    if len(unused) < n:
        raise SystemExit(f"--n {n}: class {args.collapse_class} has only {len(unused)} unused training images")
    sets = {
        "real": real,
        "held-out": test_x[test_idx[n:]],
        "baseline": base,
        "collapsed": train_x[unused[rng.permutation(len(unused))[:n]]],
        "copies": add_noise(real, args.copy_sigma, args.seed + 1),
        "noisy": add_noise(base, args.noise_sigma, args.seed + 2),
        "blurred": np.stack([blur(im, args.blur_radius) for im in base]),
    }
    notes = [f"collapsed: {n} training-split images of class {args.collapse_class} "
             f"({CLASSES[args.collapse_class]}) outside the real set"]
    return sets, notes


def extract(sets: dict, args, log) -> tuple[dict, dict, str]:
    """Features per set (float32 N x d), seconds per set, and the preprocessing description.

    With ``--feature-dir``, each set's features are kept in a .npy file named after everything that
    made them, and reused on the next run.
    """
    feats, seconds, prep = {}, {}, ""
    for name, images in sets.items():
        path = None
        if args.feature_dir:
            params = {"copies": f"s{args.copy_sigma}", "noisy": f"s{args.noise_sigma}",
                      "blurred": f"r{args.blur_radius}", "collapsed": f"c{args.collapse_class}"}.get(name, "")
            path = os.path.join(args.feature_dir, f"{args.backbone}-{name}{params}-n{args.n}-seed{args.seed}.npy")
            if os.path.exists(path):
                feats[name], seconds[name] = np.load(path), 0.0
                log(f"{name}: features from {path}")
                continue
        t0 = time.perf_counter()
        result = imgdist.extract_features(images, backbone=args.backbone, batch_size=args.batch_size,
                                          progress=False)
        seconds[name] = time.perf_counter() - t0
        feats[name] = result.features
        prep = result.provenance.preprocessing
        log(f"{name}: {len(images)} images in {seconds[name]:.1f} s ({len(images) / seconds[name]:.1f} img/s)")
        if path:
            os.makedirs(args.feature_dir, exist_ok=True)
            np.save(path, feats[name])
    return feats, seconds, prep


def evaluate(feats: dict, args, log) -> tuple[dict, dict]:
    real, held_out = feats["real"], feats["held-out"]
    nb = M.real_neighbours(real, k=3)
    values, seconds = {}, {}
    for name in CONDITIONS:
        fake = feats[name]
        t0 = time.perf_counter()
        pr = M.precision_recall(real, fake, k=3)
        _, coverage = M.density_coverage(real, fake, k=5)
        r = M.realism(real, fake, k=3, real_radii=nb.radii)
        near = (r.nearest_real, r.distance)
        values[name] = {
            "FD": M.fid_from_features(real, fake),
            "precision": pr[0],
            "recall": pr[1],
            "coverage": coverage,
            "realism>=1": float(np.mean(r.realism >= 1)),
            "Vendi": M.vendi_score(fake),
            "authenticity": M.authenticity(real, fake, real_nn=nb, fake_nearest=near).value,
            "C_T": M.ct_score(real, held_out, fake, n_cells=args.n_cells, seed=args.seed).value,
            "copies": M.copies(real, fake, real_nn=nb, fake_nearest=near).count,
        }
        seconds[name] = time.perf_counter() - t0
        log(f"{name}: metrics in {seconds[name]:.1f} s")
    return values, seconds


def ratio(value: float, base: float) -> float:
    return value / base if base > 0 else math.nan


def run_fashion(args, log) -> int:
    start = time.perf_counter()
    sets, notes = build_sets(args)
    feats, extract_s, prep = extract(sets, args, log)
    values, metric_s = evaluate(feats, args, log)
    vendi_real = M.vendi_score(feats["real"])
    total = time.perf_counter() - start
    n, d = args.n, feats["real"].shape[1]

    out = [f"imgdist diversity/memorization on Fashion-MNIST: real = {n} training images, each fake set "
           f"and the held-out real set = {n} images (seed {args.seed})",
           f"features: {args.backbone} ({prep or 'from --feature-dir'}), d = {d}"]
    out += [f"note: {x}" for x in notes]
    out.append(f"note: Vendi of the real set itself: {vendi_real:.4g}; FD at N = {n} <= d = {d} is biased "
               "upwards (comparable across rows, not with published numbers)")
    headers = ["fake set", "FD", "precision", "recall", "coverage", "realism>=1", "Vendi", "authenticity", "C_T",
               "copies"]
    rows = [[name] + [values[name][h] for h in headers[1:]] for name in CONDITIONS]
    out.append("")
    out.append(format_table(headers, rows))
    desc = {"copies": f"real images + noise sigma {args.copy_sigma}", "noisy": f"noise sigma {args.noise_sigma}",
            "blurred": f"blur radius {args.blur_radius}", "collapsed": f"one class ({args.collapse_class})",
            "baseline": "test images"}
    out.append("(" + "; ".join(f"{k}: {v}" for k, v in desc.items()) + ")")

    b, v = values["baseline"], values
    frac = {name: v[name]["copies"] / n for name in CONDITIONS}
    claims = {
        "collapse: Vendi and recall fall": (
            ratio(v["collapsed"]["Vendi"], b["Vendi"]) <= VENDI_DROP
            and ratio(v["collapsed"]["recall"], b["recall"]) <= RECALL_DROP,
            f"Vendi x{ratio(v['collapsed']['Vendi'], b['Vendi']):.3g} (need <= {VENDI_DROP}), recall "
            f"x{ratio(v['collapsed']['recall'], b['recall']):.3g} (need <= {RECALL_DROP})"),
        "copies: authenticity falls": (
            ratio(v["copies"]["authenticity"], b["authenticity"]) <= AUTH_DROP,
            f"{v['copies']['authenticity']:.3g} vs baseline {b['authenticity']:.3g} (need <= {AUTH_DROP}x)"),
        "copies: C_T strongly negative": (
            v["copies"]["C_T"] <= CT_COPYING, f"{v['copies']['C_T']:.3g} (need <= {CT_COPYING})"),
        "copies: copies found": (
            v["copies"]["copies"] > 0 and frac["copies"] >= COPIES_MIN_FRACTION
            and frac["baseline"] <= BASELINE_COPIES_MAX_FRACTION,
            f"{v['copies']['copies']} of {n} flagged (need >= {COPIES_MIN_FRACTION:.0%}); baseline "
            f"{v['baseline']['copies']} (need <= {BASELINE_COPIES_MAX_FRACTION:.0%})"),
        "noise: precision falls": (
            ratio(v["noisy"]["precision"], b["precision"]) <= PRECISION_DROP,
            f"x{ratio(v['noisy']['precision'], b['precision']):.3g} (need <= {PRECISION_DROP})"),
        "baseline: C_T about 0 (independent sample)": (
            abs(b["C_T"]) < CT_INDEPENDENT, f"{b['C_T']:.3g} (need |C_T| < {CT_INDEPENDENT})"),
        "blurred: C_T > 0 (underfit)": (v["blurred"]["C_T"] > 0, f"{v['blurred']['C_T']:.3g} (need > 0)"),
    }
    beside = {
        "noise: share of fakes with realism >= 1 falls (pruned manifold)": (
            ratio(v["noisy"]["realism>=1"], b["realism>=1"]) <= PRECISION_DROP,
            f"{v['noisy']['realism>=1']:.3g} vs baseline {b['realism>=1']:.3g} (<= {PRECISION_DROP}x)"),
    }
    out.append("")
    out.append("claims")
    for text, (ok, detail) in claims.items():
        out.append(f"{'PASS' if ok else 'FAIL'}  {text}: {detail}")
    for text, (ok, detail) in beside.items():
        out.append(f"{'PASS' if ok else 'FAIL'}  (beside) {text}: {detail}")
    ext = sum(extract_s.values())
    out.append("")
    out.append(f"runtime {total:.0f} s: extraction {ext:.0f} s for {len(sets) * n} images"
               + (f" ({len(sets) * n / ext:.1f} img/s)" if ext > 0 else "")
               + f", metrics {sum(metric_s.values()):.0f} s; torch threads {torch.get_num_threads()}; "
               "shared 2-core machine, timings indicative only")
    print("\n".join(out))
    if args.json:
        doc = {"n": n, "seed": args.seed, "backbone": args.backbone, "preprocessing": prep, "dim": d,
               "values": values, "vendi_real": vendi_real,
               "claims": {k: bool(ok) for k, (ok, _) in claims.items()},
               "beside": {k: bool(ok) for k, (ok, _) in beside.items()},
               "extract_s": extract_s, "metrics_s": metric_s, "runtime_s": total}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0 if all(ok for ok, _ in claims.values()) else 1


# ---------------------------------------------------------------- memory

def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def random_features(rng, n: int, d: int) -> np.ndarray:
    # float32 like extracted features; non-negative like pooled CNN features
    x = rng.standard_normal((n, d), dtype=np.float32)
    np.abs(x, out=x)
    return x


def run_memory(args, log) -> int:
    n, d, nt = args.mem_n, args.mem_d, args.mem_test
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    real, fake, test = random_features(rng, n, d), random_features(rng, n, d), random_features(rng, nt, d)
    steps = [("features (float32)", time.perf_counter() - t0, peak_rss())]
    log(f"features ready, peak RSS {steps[-1][2] / 2**30:.2f} GiB")

    def step(name, fn):
        t = time.perf_counter()
        result = fn()
        steps.append((name, time.perf_counter() - t, peak_rss()))
        log(f"{name}: {steps[-1][1]:.1f} s, peak RSS {steps[-1][2] / 2**30:.2f} GiB")
        return result

    step("Vendi (fake, d x d route)", lambda: M.vendi_score(fake))
    step("Vendi (real)", lambda: M.vendi_score(real))
    nb = step("real_neighbours (k = 3, one within-real pass)", lambda: M.real_neighbours(real, k=3))
    r = step("realism (one fake x real pass)", lambda: M.realism(real, fake, k=3, real_radii=nb.radii))
    near = (r.nearest_real, r.distance)
    step("authenticity (reusing both passes)", lambda: M.authenticity(real, fake, real_nn=nb, fake_nearest=near))
    step("copies (reusing both passes)", lambda: M.copies(real, fake, real_nn=nb, fake_nearest=near))
    step(f"C_T ({args.n_cells} cells, held-out {nt})",
         lambda: M.ct_score(real, test, fake, n_cells=args.n_cells, seed=args.seed))
    peak = max(p for _, _, p in steps)
    rows = [[name, f"{s:.1f}", f"{p / 2**30:.2f}"] for name, s, p in steps]
    print(f"memory check: {n} fakes x {n} reals (+ {nt} held-out reals for C_T), d = {d}, random float32 "
          f"features ({(2 * n + nt) * d * 4 / 2**30:.2f} GiB of inputs); one process, steps in order")
    print(format_table(["step", "seconds", "peak RSS so far (GiB)"], rows))
    print(f"{'PASS' if peak <= MEMORY_LIMIT else 'FAIL'}  peak RSS {peak / 2**30:.2f} GiB (limit 4 GiB); "
          f"torch threads {torch.get_num_threads()}; shared 2-core machine, timings indicative only")
    return 0 if peak <= MEMORY_LIMIT else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per set (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collapse-class", type=int, default=0, choices=range(10))
    parser.add_argument("--copy-sigma", type=float, default=2.0, help="noise on the copies (0..255 scale)")
    parser.add_argument("--noise-sigma", type=float, default=32.0, help="noise of the noisy set (0..255 scale)")
    parser.add_argument("--blur-radius", type=float, default=1.5, help="Pillow GaussianBlur radius")
    parser.add_argument("--n-cells", type=int, default=20, help="C_T's k-means cells (default 20)")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--feature-dir", default=None, help="keep/reuse each set's features as .npy here")
    parser.add_argument("--data", default=DATA_DIR, help=f"Fashion-MNIST IDX files (default {DATA_DIR})")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the numbers as JSON")
    parser.add_argument("--memory", action="store_true", help="run the memory check instead")
    parser.add_argument("--mem-n", type=int, default=50_000)
    parser.add_argument("--mem-d", type=int, default=2048)
    parser.add_argument("--mem-test", type=int, default=10_000)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.memory:
        return run_memory(args, log)
    if args.n < 50:
        parser.error("--n must be at least 50 (C_T needs cells of >= 21 fakes)")
    return run_fashion(args, log)


if __name__ == "__main__":
    raise SystemExit(main())
