"""Regenerate genuine pytorch-fid statistics files for the statistics-file gate's tests.

Run in the peers environment (pytorch-fid; see DESIGN.md):

    /work/peers-venv/bin/python tools/peers/make_stats_fixtures.py

Writes the ``real`` image folder of ``tests/e2e_images.py`` (72 images) and the stand-in
Inception weights of ``tests/stand_in_weights.py`` into a temporary folder (``TORCH_HOME``, as
``make_e2e_fixtures.py`` explains), then runs pytorch-fid's own command line

    python -m pytorch_fid --save-stats REAL OUT.npz --device cpu --dims D --num-workers 0

for D = 64 (72 images > 64 dimensions: a full-rank covariance) and D = 192 (72 < 192: a singular
one, whose smallest eigenvalues come out as rounding noise around zero). The files are copied
unchanged to ``tests/fixtures/pytorch_fid_stats_{D}.npz``: exactly what users feed to
``imgdist eval``. No imgdist code is used.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # the name in pytorch_fid.inception.FID_WEIGHTS_URL
DIMS = (64, 192)

sys.path.insert(0, str(TESTS))
from e2e_images import e2e_images, write_e2e_folders  # noqa: E402
from stand_in_weights import inception_stand_in_state_dict  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="imgdist-stats-") as tmp:
        tmp = Path(tmp)
        folders = write_e2e_folders(tmp / "images", e2e_images())
        checkpoint = tmp / "torch_home" / "hub" / "checkpoints" / WEIGHTS_NAME
        checkpoint.parent.mkdir(parents=True)
        torch.save(inception_stand_in_state_dict(0), checkpoint)
        env = {"TORCH_HOME": str(tmp / "torch_home"), "PATH": "/usr/bin:/bin"}
        for dims in DIMS:
            out = tmp / f"stats_{dims}.npz"
            cmd = [sys.executable, "-m", "pytorch_fid", "--save-stats", str(folders["real"]), str(out),
                   "--device", "cpu", "--dims", str(dims), "--num-workers", "0"]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, env=env, check=True)
            target = TESTS / "fixtures" / f"pytorch_fid_stats_{dims}.npz"
            shutil.copyfile(out, target)
            print(f"wrote {target.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
