"""End to end: FID of two folders of PNGs, imgdist's variants against the peer tools, in one run.

    python benchmarks/bench_e2e.py [--n 500] [--peers-python /tmp/peers-venv/bin/python]
                                   [--variants default,workers0,...] [--repeats 1] [--batch-size B]
                                   [--device cpu|cuda] [--peer-batch same|own]
                                   [--images fashion-mnist|photos] [--size 256] [--data DIR] [--json OUT]

Data: ``--n`` Fashion-MNIST training images (the real folder) and ``--n`` test images (the fake
folder) as 28 x 28 greyscale PNGs, from Debian's dataset-fashion-mnist; or with ``--images photos``
two sets of ``--size`` px random crops of the photos built into imgdist (two seeds; the images
``bench_pipeline.py`` times), written by all cores. Network: the FID
Inception-v3 with the stand-in weights of ``tests/stand_in_weights.py`` (the official file cannot
be downloaded here), given identically to every tool: pytorch-fid finds it in its torch hub cache,
torch-fidelity and torchmetrics take it as ``feature_extractor_weights_path``.

Every tool runs on ``--device`` (default cpu; ``cuda`` for the GPU side by side of the GPU issue).
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
* ``bf16``        ``--precision bf16`` (GPUs, CPUs with bf16 instructions)
* ``tf32``        ``--precision tf32`` (GPUs: TF32 convolutions and matrix products, as peers run)
* ``cpu``         the default on the CPU whatever ``--device`` says: with ``--device cuda`` its
                  |dFID|/FID is the strict-fp32 GPU-vs-CPU parity
* ``tf``          ``--resize-mode tf``: the TensorFlow resize torch-fidelity and torchmetrics use
                  (the default ``pytorch-fid`` mode is pytorch-fid's), so each peer has a twin
* ``torchrun2``   the default under ``torchrun --standalone --nproc_per_node 2`` (gloo, one thread
                  per rank): each rank extracts every second image
* ``pytorch-fid`` ``python -m pytorch_fid REAL FAKE --device DEVICE`` (its defaults: batch 50,
                  ``min(8, cores)`` workers), with ``scipy.linalg.sqrtm`` wrapped to drop its
                  ``disp`` argument: pytorch-fid 0.3.0 passes ``disp=False``, which SciPy 1.18
                  removed (it crashes after extracting otherwise); the table says so
* ``torch-fidelity``  ``calculate_metrics(input1=REAL, input2=FAKE, fid=True, cuda=DEVICE is cuda)``
* ``torchmetrics``    ``FrechetInceptionDistance`` fed uint8 batches by a ``DataLoader`` with
                  ``min(8, cores)`` workers (pinned memory on a GPU)

Batch size: imgdist's variants take ``--batch-size``, or without it imgdist's own default; the
peers take it too with ``--peer-batch same`` (the default; 50 without ``--batch-size``), their own
defaults with ``--peer-batch own`` (pytorch-fid 50, torch-fidelity 64; torchmetrics has no loader
of its own: ``--batch-size``, else 250 as in the GPU issue's table).
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
                    "tf32", "tf", "cpu", "torchrun2")
PRELOADS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
PEERS = ("pytorch-fid", "torch-fidelity", "torchmetrics")
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"

# pytorch-fid 0.3.0 ends with scipy.linalg.sqrtm(..., disp=False), an argument SciPy 1.18 removed:
# sqrtm is wrapped to drop it (and to give the (root, error estimate) pair disp=False returned)
PYTORCH_FID = textwrap.dedent("""
    import runpy, sys, scipy.linalg
    plain = scipy.linalg.sqrtm
    def sqrtm(a, disp=True, **kw):
        root = plain(a, **kw)
        return root if disp else (root, 0.0)
    scipy.linalg.sqrtm = sqrtm
    sys.argv = ["pytorch_fid"] + sys.argv[1:]
    runpy.run_module("pytorch_fid", run_name="__main__")
""")
PYTORCH_FID_NOTE = "pytorch-fid: scipy.linalg.sqrtm wrapped to drop disp=False (removed in SciPy 1.18)"
TORCH_FIDELITY = textwrap.dedent("""
    import sys, torch_fidelity
    own = sys.argv[4] == "own"
    m = torch_fidelity.calculate_metrics(input1=sys.argv[1], input2=sys.argv[2], fid=True,
                                         cuda=sys.argv[5].startswith("cuda"),
                                         feature_extractor_weights_path=sys.argv[3], verbose=False,
                                         **({} if own else {"batch_size": int(sys.argv[4])}))
    print("FID", repr(m["frechet_inception_distance"]))
""")
TORCHMETRICS = textwrap.dedent("""
    import os, sys, numpy as np, torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Folder(Dataset):
        def __init__(self, folder):
            self.files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        def __len__(self):
            return len(self.files)
        def __getitem__(self, i):
            image = np.array(Image.open(self.files[i]).convert("RGB"))
            return torch.from_numpy(image).permute(2, 0, 1)

    device = sys.argv[5]
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=sys.argv[3]).to(device)
    for real, folder in ((True, sys.argv[1]), (False, sys.argv[2])):
        loader = DataLoader(Folder(folder), batch_size=int(sys.argv[4]), num_workers=min(8, os.cpu_count()),
                            pin_memory=device.startswith("cuda"))
        for batch in loader:
            fid.update(batch.to(device, non_blocking=True), real=real)
    print("FID", repr(float(fid.compute())))
""")
IMGDIST_API = textwrap.dedent("""
    import sys
    from imgdist.evaluation.run import evaluate
    from imgdist.extraction.features import FeatureExtractor
    batch = {} if sys.argv[4] == "default" else {"batch_size": int(sys.argv[4])}
    ex = FeatureExtractor("inception", weights=sys.argv[3], progress=False, fuse=False, cache=False, **batch)
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


def _photo_chunk(job) -> None:
    from bench_pipeline import write_images

    folder, start, stop, size, seed = job
    scratch = Path(f"{folder}.part{start}")
    write_images(scratch, stop - start, size, seed=seed)
    for i, png in enumerate(sorted(scratch.iterdir())):
        png.rename(Path(folder) / f"{start + i:06d}.png")
    scratch.rmdir()


def write_photo_folders(root: Path, n: int, size: int) -> tuple[Path, Path]:
    """Two folders of ``n`` ``size``-px crops of imgdist's photos (bench_pipeline's images), in chunks
    on every core: 20,000 PNGs of 256 px take one core minutes."""
    from concurrent.futures import ProcessPoolExecutor

    sys.path.insert(0, str(ROOT / "benchmarks"))
    jobs, folders = [], []
    for name, seed in (("real", 1), ("fake", 2)):
        folder = root / name
        folder.mkdir(parents=True)
        jobs += [(str(folder), lo, min(n, lo + 250), size, seed * 100_003 + lo) for lo in range(0, n, 250)]
        folders.append(folder)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_photo_chunk, jobs))
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
             batch: int | None, peers_python: str | None, device: str = "cpu",
             peer_batch: str = "same") -> tuple[list[str], dict] | None:
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_MAX_", None)
    py = sys.executable
    cli = [py, "-m", "imgdist", "eval", str(real), str(fake), "--backbone", "inception", "--weights", str(weights),
           "--metrics", "fid", "--json", "--no-progress", *([] if batch is None else ["--batch-size", str(batch)]),
           "--cache-dir", str(tmp / f"cache-{variant}-{time.monotonic_ns()}"),
           "--device", "cpu" if variant == "cpu" else device]
    if variant in ("default", "cpu"):
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
        return [py, "-c", IMGDIST_API, str(real), str(fake), str(weights), str(batch or "default")], env
    if variant in ("bf16", "tf32"):
        return cli + ["--precision", variant], env
    if variant == "tf":
        return cli + ["--resize-mode", "tf"], env
    if variant == "torchrun2":
        return [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *cli[1:]], \
            dict(env, OMP_NUM_THREADS="1")
    if peers_python is None:
        return None
    own, peer_batch = peer_batch == "own", batch or 50
    if variant == "pytorch-fid":
        env = dict(env, TORCH_HOME=str(torch_home))
        env.pop("XDG_CACHE_HOME", None)
        return [peers_python, "-c", PYTORCH_FID, str(real), str(fake), "--device", device,
                *([] if own else ["--batch-size", str(peer_batch)])], env
    if variant == "torch-fidelity":
        return [peers_python, "-c", TORCH_FIDELITY, str(real), str(fake), str(weights),
                "own" if own else str(peer_batch), device], env
    if variant == "torchmetrics":
        loader_batch = batch or (250 if own else peer_batch)
        return [peers_python, "-c", TORCHMETRICS, str(real), str(fake), str(weights), str(loader_batch), device], env
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
    ap.add_argument("--batch-size", type=int, default=None, help="imgdist's batch (default: its own)")
    ap.add_argument("--device", default="cpu", help="every tool's device: cpu (default) or cuda")
    ap.add_argument("--peer-batch", choices=("same", "own"), default="same",
                    help="the peers' batch: --batch-size (same, default) or their own defaults (own)")
    ap.add_argument("--images", choices=("fashion-mnist", "photos"), default="fashion-mnist")
    ap.add_argument("--size", type=int, default=256, help="--images photos: side in pixels (default 256)")
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    with tempfile.TemporaryDirectory(prefix="imgdist-e2e-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        if args.images == "photos":
            real, fake = write_photo_folders(tmp / "images", args.n, args.size)
        else:
            real, fake = write_folders(tmp / "images", args.n, args.data)
        print(f"data: {2 * args.n} PNGs in {time.perf_counter() - t:.1f} s", flush=True)
        torch_home = tmp / "torch_home"
        weights = save_stand_in(torch_home / "hub" / "checkpoints" / WEIGHTS_NAME)
        rows: dict[str, list[dict]] = {v: [] for v in variants}
        for round_ in range(args.repeats):
            for variant in variants:
                spec = commands(variant, real, fake, weights, torch_home, tmp, args.batch_size, args.peers_python,
                                args.device, args.peer_batch)
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
        table.append([f"{v} (sqrtm patched)" if v == "pytorch-fid" else v, f"{r['wall']:.1f}", f"{r['user']:.1f}", f"{r['sys']:.1f}", f"{r['rss_mb']:.0f}",
                      repr(r["fid"]), "-" if ref is None else f"{abs(r['fid'] - ref) / ref:.1e}",
                      "-" if fastest_peer is None else f"{fastest_peer / r['wall']:.2f}x"])
    what = "Fashion-MNIST" if args.images == "fashion-mnist" else f"{args.size}-px photo-crop"
    peers_batch = "peers at their own batch sizes" if args.peer_batch == "own" else "the peers too"
    gpu = ""
    if args.device.startswith("cuda"):
        import torch

        gpu = f", {torch.cuda.get_device_name(0)}"
    print(f"\n{args.n} + {args.n} {what} PNGs, stand-in Inception weights, device {args.device}{gpu}, batch "
          f"{args.batch_size or 'imgdist default'} ({peers_batch}), {os.cpu_count()} cores; best of {args.repeats} round(s)")
    if "pytorch-fid" in best:
        print(PYTORCH_FID_NOTE)
    print(format_table(["variant", "wall s", "user s", "sys s", "peak RSS MB", "FID", "|dFID|/FID",
                        "speed vs fastest peer"], table))
    if args.json:
        Path(args.json).write_text(json.dumps({v: [{k: x[k] for k in ("wall", "user", "sys", "rss_mb", "fid")}
                                                    for x in rs] for v, rs in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
