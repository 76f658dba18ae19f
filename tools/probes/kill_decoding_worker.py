"""SIGKILL one decoding process of ``imgdist eval|stats ... --workers 2``, N times, and tally how
each run ended (issue 23, item 3): the promised one line suggesting ``--workers 0``, a traceback, or
anything else.

    python tools/probes/kill_decoding_worker.py WORKDIR [N=20] [eval|stats]

WORKDIR receives two folders of 300 random 96 x 96 PNGs on the first run. Each run extracts
EfficientNet-Lite0 features (offline weights) in batches of 4 while two processes decode, and one of
them is killed 0.2-1.5 s after both have started (the delay drawn per run from a fixed seed).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
from PIL import Image


def make_sets(root: str) -> None:
    for name, seed in (("real", 1), ("fake", 2)):
        folder = os.path.join(root, name)
        if os.path.isdir(folder):
            continue
        os.makedirs(folder)
        rng = np.random.default_rng(seed)
        for i in range(300):
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:04d}.png"))


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def one_run(root: str, command: str, rep: int) -> str:
    common = ["--backbone", "efficientnet-lite0", "--workers", "2", "--batch-size", "4", "--no-cache", "--no-progress"]
    if command == "eval":
        argv = ["eval", f"{root}/real", f"{root}/fake", "--metrics", "fid", *common]
    else:
        argv = ["stats", f"{root}/real", "-o", f"{root}/out.npz", *common]
    proc = subprocess.Popen([sys.executable, "-m", "imgdist", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    kids, start = [], time.monotonic()
    while len(kids) < 2 and time.monotonic() - start < 60 and proc.poll() is None:
        time.sleep(0.05)
        kids = children(proc.pid)
    time.sleep(random.Random(rep).uniform(0.2, 1.5))
    killed = proc.poll() is None and bool(kids)
    if killed:
        os.kill(kids[rep % len(kids)], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err:
        return "traceback: " + lines[-1][:100]
    if proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("imgdist: error:") and "--workers 0" in lines[0]:
        return "one line"
    if proc.returncode == 0:
        return "exit 0 despite the kill" if killed else "finished before the kill"
    return f"exit {proc.returncode}: {lines[-1][:100] if lines else ''}"


def main() -> None:
    root = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    command = sys.argv[3] if len(sys.argv) > 3 else "eval"
    make_sets(root)
    tally = Counter()
    for rep in range(runs):
        outcome = one_run(root, command, rep)
        tally[outcome] += 1
        print(rep, outcome, flush=True)
    print(dict(tally))


if __name__ == "__main__":
    main()
