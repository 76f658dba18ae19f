"""End to end: FID of two folders of PNGs, imgdist's variants against the peer tools, in one run.

    python benchmarks/bench_e2e.py [--n 500] [--peers-python /tmp/peers-venv/bin/python]
                                   [--variants default,workers0,...] [--repeats 1] [--batch-size 50]
                                   [--data DIR] [--json OUT]

Data: ``--n`` Fashion-MNIST training images (the real folder) and ``--n`` test images (the fake
folder) as 28 x 28 greyscale PNGs, from Debian's dataset-fashion-mnist. Network: the FID
Inception-v3 with the stand-in weights of ``tests/stand_in_weights.py`` (the official file cannot
be downloaded here), given identically to every tool: pytorch-fid finds it in its torch hub cache,
torch-fidelity and torchmetrics take it as ``feature_extractor_weights_path``.

Each variant is a fresh process (start-up and weight loading included), timed by the kernel
(``wait4``: wall, user and system CPU seconds, peak RSS of the process and its workers). Variants:

* ``default``     ``imgdist eval REAL FAKE --metrics fid`` with every default (automatic workers,
                  fused network, memory kept between batches, a new empty feature cache)
* ``workers0``/``workers1``/``workers2``  the same with ``--workers N``
* ``churn``       the default with glibc's own allocator settings (``MALLOC_MMAP_MAX_=65536``,
                  glibc's default, is a user setting imgdist leaves alone): activation buffers go
                  back to the OS after every batch, as before issue 11
* ``jemalloc``/``tcmalloc``  the default with that allocator preloaded (``LD_PRELOAD``; Debian's
                  libjemalloc2 / libtcmalloc-minimal4; imgdist then leaves glibc's settings alone)
* ``unfused``     the default with BatchNorm kept separate (Python API, ``fuse=False``)
* ``bf16``        ``--precision bf16`` (CPUs with bf16 instructions)
* ``tf``          ``--resize-mode tf``: the TensorFlow resize torch-fidelity and torchmetrics use
                  (the default ``pytorch-fid`` mode is pytorch-fid's), so each peer has a twin
* ``torchrun2``   the default under ``torchrun --standalone --nproc_per_node 2`` (gloo, one thread
                  per rank): each rank extracts every second image
* ``pytorch-fid`` ``python -m pytorch_fid REAL FAKE --device cpu`` (its defaults: batch 50,
                  ``min(8, cores)`` workers)
* ``torch-fidelity``  ``calculate_metrics(input1=REAL, input2=FAKE, fid=True, cuda=False)``
* ``torchmetrics``    ``FrechetInceptionDistance`` fed uint8 batches of 50 read with Pillow

The peers need their own environment (``shared/tools/peers-venv.sh``); without
``--peers-python`` their rows are skipped. The table gives each variant's FID, its relative
difference from imgdist's default, and its time relative to the fastest peer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from stand_in_weights import save_stand_in  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
IMGDIST_VARIANTS = ("default", "workers0", "workers1", "workers2", "churn", "jemalloc", "tcmalloc", "unfused", "bf16",
                    "tf", "torchrun2")
PRELOADS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
PEERS = ("pytorch-fid", "torch-fidelity", "torchmetrics")
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"

TORCH_FIDELITY = textwrap.dedent("""
    import sys, torch_fidelity
    m = torch_fidelity.calculate_metrics(input1=sys.argv[1], input2=sys.argv[2], fid=True, cuda=False,
                                         feature_extractor_weights_path=sys.argv[3], verbose=False,
                                         batch_size=int(sys.argv[4]))
    print("FID", repr(m["frechet_inception_distance"]))
""")
TORCHMETRICS = textwrap.dedent("""
    import os, sys, numpy as np, torch
    from PIL import Image
    from torchmetrics.image.fid import FrechetInceptionDistance
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=sys.argv[3])
    batch = int(sys.argv[4])
    for real, folder in ((True, sys.argv[1]), (False, sys.argv[2])):
        files = sorted(os.listdir(folder))
        for i in range(0, len(files), batch):
            images = [np.asarray(Image.open(os.path.join(folder, f)).convert("RGB")) for f in files[i:i + batch]]
            fid.update(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), real=real)
    print("FID", repr(float(fid.compute())))
""")
IMGDIST_API = textwrap.dedent("""
    import sys
    from imgdist.evaluation import evaluate
    from imgdist.features import FeatureExtractor
    ex = FeatureExtractor("inception", weights=sys.argv[3], batch_size=int(sys.argv[4]), progress=False,
                          fuse=False, cache=False)
    print(evaluate(sys.argv[1], sys.argv[2], metrics="fid", extractor=ex).to_json())
""")


def read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)


def write_folders(root: Path, n: int, data_dir: str) -> tuple[Path, Path]:
    from PIL import Image

    folders = []
    for name, kind in (("real", "train"), ("fake", "t10k")):
        images = read_idx(os.path.join(data_dir, f"{kind}-images-idx3-ubyte.gz"))[:n]
        folder = root / name
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image, "L").save(folder / f"{i:05d}.png")
        folders.append(folder)
    return folders[0], folders[1]


def run(cmd: list[str], env: dict) -> dict:
    """Run a command: wall time, and from ``wait4`` its (and its children's) CPU seconds and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # read both pipes while waiting, so a chatty child cannot block on a full pipe
    chunks = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda s=stream, k=key: chunks[k].append(s.read()))
               for key, stream in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"code": proc.returncode, "out": "".join(chunks["out"]), "err": "".join(chunks["err"]), "wall": wall,
            "user": usage.ru_utime, "sys": usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def commands(variant: str, real: Path, fake: Path, weights: Path, torch_home: Path, tmp: Path,
             batch: int, peers_python: str | None) -> tuple[list[str], dict] | None:
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_MAX_", None)
    py = sys.executable
    cli = [py, "-m", "imgdist", "eval", str(real), str(fake), "--backbone", "inception", "--weights", str(weights),
           "--metrics", "fid", "--json", "--no-progress", "--batch-size", str(batch),
           "--cache-dir", str(tmp / f"cache-{variant}-{time.monotonic_ns()}")]
    if variant == "default":
        return cli, env
    if variant.startswith("workers"):
        return cli + ["--workers", variant.removeprefix("workers")], env
    if variant == "churn":
        return cli, dict(env, MALLOC_MMAP_MAX_="65536")
    if variant in PRELOADS:
        found = [path for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
                 if (path := Path(d) / PRELOADS[variant]).exists()]
        return (cli, dict(env, LD_PRELOAD=str(found[0]))) if found else None
    if variant == "unfused":
        return [py, "-c", IMGDIST_API, str(real), str(fake), str(weights), str(batch)], env
    if variant == "bf16":
        return cli + ["--precision", "bf16"], env
    if variant == "tf":
        return cli + ["--resize-mode", "tf"], env
    if variant == "torchrun2":
        return [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *cli[1:]], \
            dict(env, OMP_NUM_THREADS="1")
    if peers_python is None:
        return None
    if variant == "pytorch-fid":
        env = dict(env, TORCH_HOME=str(torch_home))
        env.pop("XDG_CACHE_HOME", None)
        return [peers_python, "-m", "pytorch_fid", str(real), str(fake), "--device", "cpu",
                "--batch-size", str(batch)], env
    if variant == "torch-fidelity":
        return [peers_python, "-c", TORCH_FIDELITY, str(real), str(fake), str(weights), str(batch)], env
    if variant == "torchmetrics":
        return [peers_python, "-c", TORCHMETRICS, str(real), str(fake), str(weights), str(batch)], env
    raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(IMGDIST_VARIANTS + PEERS)}")


def parse_fid(variant: str, out: str) -> float:
    if variant in IMGDIST_VARIANTS:
        metrics = json.loads(out)["metrics"]
        return float(next(iter(metrics.values()))["value"])
    found = re.findall(r"FID:?\s+" + NUMBER, out)
    return float(found[-1]) if found else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="images per folder (default 500)")
    ap.add_argument("--variants", default="default,workers0,churn,unfused,pytorch-fid,torch-fidelity,torchmetrics")
    ap.add_argument("--peers-python", default=None, help="python of the peers' environment")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over all variants (each round in turn)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    with tempfile.TemporaryDirectory(prefix="imgdist-e2e-") as tmp:
        tmp = Path(tmp)
        real, fake = write_folders(tmp / "images", args.n, args.data)
        torch_home = tmp / "torch_home"
        weights = save_stand_in(torch_home / "hub" / "checkpoints" / WEIGHTS_NAME)
        rows: dict[str, list[dict]] = {v: [] for v in variants}
        for round_ in range(args.repeats):
            for variant in variants:
                spec = commands(variant, real, fake, weights, torch_home, tmp, args.batch_size, args.peers_python)
                if spec is None:
                    print(f"skip {variant}: " + ("library not installed" if variant in PRELOADS else "no --peers-python"), flush=True)
                    continue
                r = run(*spec)
                if r["code"] != 0:
                    print(f"{variant} failed (exit {r['code']}): {r['err'].strip().splitlines()[-1:]}", flush=True)
                    continue
                r["fid"] = parse_fid(variant, r["out"])
                rows[variant].append(r)
                print(f"round {round_ + 1} {variant:15s} {r['wall']:7.1f} s wall {r['user']:7.1f} user "
                      f"{r['sys']:6.1f} sys  FID {r['fid']!r}", flush=True)

    from imgdist.formatting import format_table

    best = {v: min(rs, key=lambda r: r["wall"]) for v, rs in rows.items() if rs}
    peers = [best[v]["wall"] for v in PEERS if v in best]
    fastest_peer = min(peers) if peers else None
    ref = best.get("default", {}).get("fid")
    table = []
    for v, r in best.items():
        table.append([v, f"{r['wall']:.1f}", f"{r['user']:.1f}", f"{r['sys']:.1f}", f"{r['rss_mb']:.0f}",
                      repr(r["fid"]), "-" if ref is None else f"{abs(r['fid'] - ref) / ref:.1e}",
                      "-" if fastest_peer is None else f"{fastest_peer / r['wall']:.2f}x"])
    print(f"\n{args.n} + {args.n} Fashion-MNIST PNGs, stand-in Inception weights, batch {args.batch_size}, "
          f"{os.cpu_count()} cores; best of {args.repeats} round(s)")
    print(format_table(["variant", "wall s", "user s", "sys s", "peak RSS MB", "FID", "|dFID|/FID",
                        "speed vs fastest peer"], table))
    if args.json:
        Path(args.json).write_text(json.dumps({v: [{k: x[k] for k in ("wall", "user", "sys", "rss_mb", "fid")}
                                                    for x in rs] for v, rs in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
