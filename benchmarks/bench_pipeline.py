"""Where the time of a feature extraction goes: images per second per stage, and end to end.

    python benchmarks/bench_pipeline.py [--n 500] [--size 256] [--backbone inception] [--weights W]
                                        [--device cpu|cuda] [--batch-size N] [--precision fp32]
                                        [--mode MODE] [--workers-sweep 0,1,2] [--cache] [--json OUT]

Images: ``--n`` PNGs of ``--size`` x ``--size`` pixels, random crops of the photos built into
imgdist (``--size 28`` and below: Fashion-MNIST-like greyscale crops), written once to a
temporary folder. Network: ``--backbone`` (for ``inception`` without ``--weights``, the
deterministic stand-in weights of ``tests/stand_in_weights.py``: speed does not depend on the
values).

Stages, each timed on its own, batch by batch in batches of ``--batch-size`` (on CUDA with
``torch.cuda.synchronize`` around each), in one thread of work (no decoding workers), with the
memory setting extraction uses (``imgdist.extraction.allocator``):

* ``hash``       SHA-256 of each file's bytes (the feature cache's key; skipped when it is off)
* ``decode``     reading and decoding the file to uint8 RGB (Pillow)
* ``prepare``    the decoding-side part of the resize recipe (crops, Pillow kernels)
* ``transfer``   uint8 batch to the device from pinned memory (accelerators only)
* ``resize``     the device-side part: tensor resize kernels, scaling, normalisation
* ``forward``    the network
* ``copy back``  features to pinned host memory (accelerators only; a run needs it only for kept
  features, logits or the cache)
* ``statistics (device)`` the float64 mean and scatter update where the features are (what
  extraction does, :class:`imgdist.extraction.stats.DeviceStats`)
* ``statistics (host)``   the same update in numpy on the host, after a copy back (the old path)

then ``end to end``: :meth:`FeatureExtractor.extract` on the folder with the defaults
(automatic workers; the chosen number is shown), and with each ``--workers-sweep`` setting, and
with ``--cache`` also with a fresh feature cache (hashing and writing included).
This is the script a GPU run uses: ``--device cuda``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from imgdist.extraction.features import FeatureExtractor  # noqa: E402
from imgdist.formatting import format_table  # noqa: E402
from imgdist.extraction.sources import open_source  # noqa: E402
from imgdist.extraction.features import fp32_mode  # noqa: E402
from imgdist.extraction.stats import DeviceStats, GaussianStats  # noqa: E402

PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")


def write_images(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    data = ROOT / "src" / "imgdist" / "data"
    photos = [np.asarray(Image.open(data / name).convert("RGB")) for name in PHOTOS]
    folder.mkdir(parents=True)
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BICUBIC)
        if size <= 28:
            crop = crop.convert("L")
        crop.save(folder / f"{i:06d}.png")
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_times(ex: FeatureExtractor, folder: Path) -> dict[str, float]:
    """Seconds per stage over every image, each stage on its own, batch by batch (with the
    extractor's memory setting, so that no stage pays for returning its buffers to the OS)."""
    from imgdist.extraction.allocator import retained_memory

    source = open_source(str(folder))
    n, size, device = len(source), ex.batch_size, ex.device
    out = dict.fromkeys(("hash", "decode", "prepare", "transfer", "resize", "forward", "copy back",
                         "statistics (device)", "statistics (host)"), 0.0)
    t = time.perf_counter()
    ex._hashes(source)
    out["hash"] = time.perf_counter() - t
    stats, device_stats = GaussianStats(), DeviceStats()

    def network_input(batch):  # the device-side part of FeatureExtractor._launch
        return ex.prep.finish(batch).to(ex.dtype).contiguous(memory_format=torch.channels_last)

    with retained_memory(ex.retained_bytes()), torch.inference_mode(), fp32_mode(ex.precision):
        warm = True
        for start in range(0, n, size):
            t = time.perf_counter()
            images = [source.load(i) for i in range(start, min(start + size, n))]
            t1 = time.perf_counter()
            batch = torch.stack([ex.prep.prepare(im) for im in images])
            if device.type == "cuda":
                batch = batch.pin_memory()
            t2 = time.perf_counter()
            on_device = batch.to(device, non_blocking=True)
            sync(device)
            copied = time.perf_counter()
            if warm:  # kernel selection and first allocations on the first batch, not counted
                ex.model(network_input(on_device), outputs=(ex.layer,))
                sync(device)
                warm = False
            t3 = time.perf_counter()
            x = network_input(on_device)
            sync(device)
            t4 = time.perf_counter()
            feats = ex.model(x, outputs=(ex.layer,))[ex.layer].float()
            sync(device)
            t5 = time.perf_counter()
            device_stats.update(feats)
            sync(device)
            t6 = time.perf_counter()
            host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=device.type == "cuda")
            host.copy_(feats, non_blocking=True)
            sync(device)
            t7 = time.perf_counter()
            stats.update(host.numpy())
            t8 = time.perf_counter()
            for key, seconds in (("decode", t1 - t), ("prepare", t2 - t1), ("transfer", copied - t2),
                                 ("resize", t4 - t3), ("forward", t5 - t4), ("statistics (device)", t6 - t5),
                                 ("copy back", t7 - t6), ("statistics (host)", t8 - t7)):
                out[key] += seconds
    if device.type == "cpu":
        out["transfer"] = out["copy back"] = float("nan")
    return out


def end_to_end(ex: FeatureExtractor, folder: Path, workers, cache_dir=None) -> tuple[float, int, object]:
    ex.workers = workers
    ex.cache_dir = cache_dir
    ex._cache_given_up = False
    sync(ex.device)
    t = time.perf_counter()
    feats = ex.extract(str(folder), keep_features=False)
    sync(ex.device)
    return time.perf_counter() - t, feats.timing.workers, feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--backbone", default="inception")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--mode", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default: imgdist's automatic choice")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--workers-sweep", default="0", help="fixed worker counts to time end to end too")
    ap.add_argument("--cache", action="store_true", help="also end to end with a fresh feature cache")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="imgdist-pipeline-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        folder = write_images(tmp / "images", args.n, args.size)
        print(f"wrote {args.n} PNGs of {args.size} px in {time.perf_counter() - t:.1f} s", flush=True)
        weights = args.weights
        if weights is None and args.backbone == "inception":
            from stand_in_weights import save_stand_in

            weights = str(save_stand_in(tmp / "stand_in.pth"))
        ex = FeatureExtractor(args.backbone, weights=weights, mode=args.mode, device=args.device,
                              batch_size=args.batch_size, precision=args.precision, progress=False)
        stages = stage_times(ex, folder)
        rows = [[name, "-" if np.isnan(sec) else f"{sec:.2f}", "-" if np.isnan(sec) else f"{args.n / sec:,.0f}"]
                for name, sec in stages.items()]
        results = {"stages": stages, "end_to_end": {}}
        e2e = []
        runs = [("auto", None)] + [(f"workers {w}", int(w)) for w in args.workers_sweep.split(",") if w.strip()]
        for label, workers in runs:
            seconds, chosen, feats = end_to_end(ex, folder, workers)
            e2e.append((label, seconds, chosen))
            results["end_to_end"][label] = {"seconds": seconds, "workers": chosen,
                                            "timing": vars(feats.timing)}
            print(f"end to end, {label}: {seconds:.1f} s ({args.n / seconds:,.1f} images/s, {chosen} workers)",
                  flush=True)
        if args.cache:
            seconds, chosen, feats = end_to_end(ex, folder, None, str(tmp / "cache"))
            e2e.append(("auto, fresh cache", seconds, chosen))
            results["end_to_end"]["cache"] = {"seconds": seconds, "workers": chosen, "timing": vars(feats.timing)}
            print(f"end to end with a fresh cache: {seconds:.1f} s, of which hashing {feats.timing.hash:.2f} s",
                  flush=True)
    for label, seconds, chosen in e2e:
        rows.append([f"end to end ({label}; {chosen} workers)", f"{seconds:.2f}", f"{args.n / seconds:,.1f}"])
    print(f"\n{args.n} PNGs of {args.size} x {args.size}, {args.backbone} ({ex.prep.name}), {ex.device}, "
          f"{args.precision}, batch {ex.batch_size}, {torch.get_num_threads()} threads")
    print(format_table(["stage", "seconds", "images/s"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
