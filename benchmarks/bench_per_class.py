"""How long ``--per-class`` takes with many small classes, from features (no images, no network).

    python benchmarks/bench_per_class.py [--classes 10000] [--per-class 1] [--dim 2048]
                                         [--metrics fid,kid,prdc vendi ...] [--seed 0]

Each class holds ``--per-class`` real and as many fake images; the features are random
``--dim``-dimensional float32 rows (their values do not change the cost). For each metric list
the table gives the seconds of ``evaluate_per_class`` and the milliseconds per class. The folders
are only named (``class_names`` reads paths), never read.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from imgdist.extraction.features import Features
from imgdist.formatting import format_table
from imgdist.evaluation.options import MetricOptions
from imgdist.evaluation.plan import parse_metrics
from imgdist.evaluation.per_class import evaluate_per_class
from imgdist.extraction.provenance import Provenance
from imgdist.extraction.sources import FileSource
from imgdist.extraction.stats import GaussianStats


def _side(root: str, side: str, classes: int, per: int, dim: int, rng) -> tuple[Features, FileSource]:
    folder = os.path.join(root, side)
    os.makedirs(folder, exist_ok=True)
    names = [os.path.join(folder, f"c{c:05d}", f"{i}.png") for c in range(classes) for i in range(per)]
    x = rng.standard_normal((len(names), dim)).astype(np.float32)
    prov = Provenance(backbone="efficientnet-lite0", feature_layer="pool", resize_mode="bilinear")
    stats = GaussianStats(provenance=prov).update(x)
    return Features(names=names, stats=stats, provenance=prov, features=x), FileSource(names, folder)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=10000)
    p.add_argument("--per-class", type=int, default=1)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--metrics", nargs="+", default=["fid,kid,prdc", "vendi", "fid,vendi"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        real, real_src = _side(root, "real", args.classes, args.per_class, args.dim, rng)
        fake, fake_src = _side(root, "fake", args.classes, args.per_class, args.dim, rng)
        for metrics in args.metrics:
            chosen = parse_metrics(metrics)
            start = time.perf_counter()
            results, _intra, _notes = evaluate_per_class(real, fake, real_src, fake_src, chosen, MetricOptions())
            seconds = time.perf_counter() - start
            rows.append([metrics, args.classes, args.per_class, args.dim, len(results), seconds,
                         1000 * seconds / args.classes])
    print(format_table(["metrics", "classes", "images/class", "dim", "classes with a value", "seconds",
                        "ms/class"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
