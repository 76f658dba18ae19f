"""Regenerate the end-to-end FID fixture with pytorch-fid's own command line.

Run in the peers environment (pytorch-fid; see DESIGN.md):

    /tmp/peers-venv/bin/python tools/peers/make_e2e_fixtures.py

It writes the two image folders of ``tests/e2e_images.py`` (``real``, ``fake``: PNG files) and the
stand-in Inception weights of ``tests/stand_in_weights.py`` into a temporary folder, then runs

    python -m pytorch_fid REAL FAKE --device cpu --dims D --batch-size B --num-workers 0

as a subprocess, once per ``D``, with ``TORCH_HOME`` pointing at a folder whose
``hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` is the stand-in file: that is where
``pytorch_fid.inception.fid_inception_v3`` (``load_state_dict_from_url(FID_WEIGHTS_URL)``) looks
before downloading, and there is no network to download from, so the stand-in is what it runs.
The ``FID:  <value>`` line it prints is parsed and stored in ``tests/fixtures/e2e_pytorch_fid.npz``:

* ``dims`` (int array) and ``fid`` (float64 array, same order): pytorch-fid's printed value per
  feature dimension (NaN where it failed; ``errors`` then holds its last stderr line);
* ``count``, ``size``, ``seed``: the image sets (``count`` images per folder);
* ``images_sha256``: ``e2e_images.images_digest`` of the generated pixels;
* ``weights_sha256``: ``e2e_images.weights_digest`` of the stand-in state dict; ``weights_seed``;
* ``batch_size``; ``pytorch_fid_version``, ``torch_version``, ``numpy_version``, ``scipy_version``.

Only 64 dimensions are full rank with ``count`` = 72 images per set; for 192, 768 and 2048 both
covariances are singular, where pytorch-fid's ``scipy.linalg.sqrtm`` of their product could in
principle be fragile (on these sets it agrees with imgdist to ~1e-7; see
``tests/test_e2e_pytorch_fid.py``). Runtime: a few minutes on two CPU cores (the 2048-dims
``sqrtm`` alone takes about a minute).

No imgdist code is used.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
FIXTURE = TESTS / "fixtures" / "e2e_pytorch_fid.npz"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # the name in pytorch_fid.inception.FID_WEIGHTS_URL
DIMS = (64, 192, 768, 2048)
BATCH_SIZE = 24
WEIGHTS_SEED = 0

sys.path.insert(0, str(TESTS))
from e2e_images import (E2E_COUNT, E2E_SEED, E2E_SIZE, e2e_images, images_digest,  # noqa: E402
                        weights_digest, write_e2e_folders)
from stand_in_weights import inception_stand_in_state_dict  # noqa: E402

FID_LINE = re.compile(r"^FID:\s+(\S+)\s*$", re.MULTILINE)


def run_pytorch_fid(real: Path, fake: Path, dims: int, torch_home: Path) -> tuple[float, str]:
    env = dict(os.environ, TORCH_HOME=str(torch_home))
    env.pop("XDG_CACHE_HOME", None)
    cmd = [sys.executable, "-m", "pytorch_fid", str(real), str(fake), "--device", "cpu",
           "--dims", str(dims), "--batch-size", str(BATCH_SIZE), "--num-workers", "0"]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    found = FID_LINE.findall(proc.stdout)
    if proc.returncode != 0 or len(found) != 1:
        last = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        print(f"  pytorch-fid failed (exit {proc.returncode}): {last}", flush=True)
        return float("nan"), last
    for line in proc.stdout.splitlines():  # e.g. the 'adding eps to diagonal' notice
        if not FID_LINE.match(line):
            print("  |", line, flush=True)
    value = float(found[0])
    print(f"  FID {value!r} ({elapsed:.1f} s)", flush=True)
    return value, ""


def main() -> None:
    images = e2e_images()
    state = inception_stand_in_state_dict(WEIGHTS_SEED)
    with tempfile.TemporaryDirectory(prefix="imgdist-e2e-") as tmp:
        tmp = Path(tmp)
        folders = write_e2e_folders(tmp / "images", images)
        torch_home = tmp / "torch_home"
        checkpoint = torch_home / "hub" / "checkpoints" / WEIGHTS_NAME
        checkpoint.parent.mkdir(parents=True)
        torch.save(state, checkpoint)
        values, errors = [], []
        for dims in DIMS:
            value, error = run_pytorch_fid(folders["real"], folders["fake"], dims, torch_home)
            values.append(value)
            errors.append(error)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(FIXTURE,
             dims=np.array(DIMS, dtype=np.int64),
             fid=np.array(values, dtype=np.float64),
             errors=np.array(errors),
             count=np.int64(E2E_COUNT), size=np.int64(E2E_SIZE), seed=np.int64(E2E_SEED),
             images_sha256=np.array(images_digest(images)),
             weights_sha256=np.array(weights_digest(state)),
             weights_seed=np.int64(WEIGHTS_SEED),
             batch_size=np.int64(BATCH_SIZE),
             pytorch_fid_version=np.array(version("pytorch-fid")),
             torch_version=np.array(torch.__version__),
             numpy_version=np.array(np.__version__),
             scipy_version=np.array(version("scipy")))
    print(f"wrote {FIXTURE.relative_to(ROOT)}: "
          + ", ".join(f"dims {d}: {v!r}" for d, v in zip(DIMS, values)))


if __name__ == "__main__":
    main()
