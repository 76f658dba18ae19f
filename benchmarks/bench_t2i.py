"""What the CLIP score adds to an FID run, measured as one run against the other.

    python benchmarks/bench_t2i.py [--n 64] [--size 256] [--clip clip-vit-b32] [--repeats 1]

Two sets of ``--n`` photo crops (imgdist's built-in photos, ``--size`` px) and one prompt per fake;
stand-in weights for Inception and the CLIP network (speed does not depend on the values). Each
variant is a fresh ``imgdist eval`` process (``--no-cache``, default workers), timed whole:

* ``fid``                     Inception only;
* ``fid,clip-score@CLIP``     the same decode fed to Inception and to CLIP's image tower, plus the
                              prompts through CLIP's text tower;
* ``clip-score@CLIP`` alone   (``imgdist score`` on the fakes).

The ratio ``fid,clip-score / fid`` is the cost of adding the CLIP score; it is dominated by the CLIP
image tower (ViT-B/32: 4.4 G multiply-adds per image, ViT-L/14: 81 G, Inception: 5.7 G). The
machine may be shared: read the ratios from one run, not the seconds.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from stand_in_weights import save_stand_in  # noqa: E402
from text_stand_in import builtin_photos, stand_in_state_dict  # noqa: E402

from imgdist.formatting import format_table  # noqa: E402

ARCH = {"clip-vit-b32": "clip_b32_full", "clip-vit-l14": "clip_l14_full"}


def _sets(root: Path, n: int, size: int) -> None:
    photos = builtin_photos()
    rng = np.random.default_rng(0)
    rows = []
    for side in ("real", "fake"):
        (root / side).mkdir()
        for i in range(n):
            photo = photos[i % len(photos)]
            y, x = rng.integers(0, max(1, min(photo.shape[:2]) - size), 2)
            crop = Image.fromarray(np.ascontiguousarray(photo[y:y + size, x:x + size])).resize((size, size))
            crop.save(root / side / f"{i:04d}.png")
            if side == "fake":
                rows.append((f"{i:04d}.png", f"a photo number {i} of a cat sitting beside a cup of coffee"))
    with open(root / "prompts.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "prompt"])
        writer.writerows(rows)


def _time(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "imgdist", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--clip", choices=tuple(ARCH), default="clip-vit-b32")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _sets(root, args.n, args.size)
        inception = save_stand_in(root / "inception.pth")
        clip = root / "clip.pt"
        torch.save(stand_in_state_dict(ARCH[args.clip]), clip)
        common = ["--no-progress", "--no-cache", "--weights", f"inception={inception}",
                  "--weights", f"{args.clip}={clip}"]
        variants = {
            "fid": ["eval", str(root / "real"), str(root / "fake"), "--metrics", "fid", *common[:2],
                    "--weights", str(inception)],
            f"fid,clip-score@{args.clip}": ["eval", str(root / "real"), str(root / "fake"), "--metrics",
                                            f"fid,clip-score@{args.clip}", "--prompts", str(root / "prompts.csv"),
                                            *common],
            f"score clip-score ({args.clip})": ["score", str(root / "fake"), "--metrics", "clip-score",
                                                "--backbone", args.clip, "--weights", str(clip), "--prompts",
                                                str(root / "prompts.csv"), "--no-progress", "--no-cache"],
        }
        seconds = {name: min(_time(cmd) for _ in range(args.repeats)) for name, cmd in variants.items()}
    base = seconds["fid"]
    rows = [[name, f"{s:.1f}", f"{s / base:.2f}"] for name, s in seconds.items()]
    print(f"{args.n} + {args.n} images at {args.size} px, {os.cpu_count()} cores, torch {torch.__version__}")
    print(format_table(["variant", "seconds (fresh process)", "vs fid"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
