"""Regenerate the sFID spatial-map fixture with torch-fidelity's Inception.

ADM's sFID reads ``mixed_6/conv`` of the 2015 Inception graph: the first 1x1 convolution of
``mixed_6`` after batch norm and ReLU, 17 x 17 x 192. In torch-fidelity's ``inception-v3-compat``
extractor (the same graph ported, TF1 bilinear resize and (x - 128) / 128 inside) that module is
``Mixed_6d.branch1x1`` (a ``BasicConv2d``: conv, BN, ReLU). Run in the peers environment:

    /tmp/peers-venv/bin/python tools/peers/make_spatial_fixtures.py

It loads the stand-in weights (``tests/stand_in_weights.py``) into torch-fidelity the way
``make_inception_fixtures.py`` does, feeds it the parity images (saved as PNG and read back with
torch-fidelity's own dataset class), hooks ``Mixed_6d.branch1x1`` and writes
``tests/fixtures/inception_spatial_peers.npz``:

* ``tfid_mixed_6_conv``: the hooked output, N x 192 x 17 x 17, float32 (torch's N, C, H, W);
* ``tfid_2048``: the pool features of the same run (to show the hook saw the same forward pass
  that ``inception_peers.npz`` holds);
* ``weights_sha256``, ``images_sha256``, ``versions``.

No imgdist code is used.
"""

from __future__ import annotations

import json
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "inception_spatial_peers.npz"


def run_torch_fidelity_hooked(files, weights: Path) -> dict:
    from torch_fidelity.datasets import ImagesPathDataset
    from torch_fidelity.utils import create_feature_extractor

    # "2048" makes the extractor run past Mixed_6d; it returns early for shallower features
    model = create_feature_extractor("inception-v3-compat", ["2048"], cuda=False, verbose=False,
                                     feature_extractor_weights_path=str(weights))
    seen = []
    # clone: BasicConv2d applies ReLU in place, and later layers must not alias the stored map
    hook = model.Mixed_6d.branch1x1.register_forward_hook(
        lambda module, inputs, output: seen.append(output.detach().clone()))
    dataset = ImagesPathDataset([str(f) for f in files])
    pools = []
    with torch.no_grad():
        for i in range(len(dataset)):
            image = dataset[i]
            assert image.dtype == torch.uint8
            (pool,) = model(image[None])
            pools.append(pool.numpy()[0])
    hook.remove()
    maps = torch.cat(seen).numpy().astype(np.float32)
    assert maps.shape == (len(files), 192, 17, 17), maps.shape
    return {"tfid_mixed_6_conv": maps, "tfid_2048": np.stack(pools).astype(np.float32)}


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_inception_fixtures import WEIGHTS_NAME, images_digest, weights_digest
    from stand_in_weights import parity_images, save_stand_in

    images = parity_images()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = save_stand_in(tmp / WEIGHTS_NAME)
        state = torch.load(weights, weights_only=True)
        files = []
        for i, image in enumerate(images):
            files.append(tmp / "images" / f"img{i}.png")
            files[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(files[-1])
        results = run_torch_fidelity_hooked(files, weights)

    meta = {
        "versions": json.dumps({p: version(p) for p in ("torch-fidelity", "torch", "numpy",
                                                        "pillow")}),
        "weights_sha256": weights_digest(state),
        "images_sha256": images_digest(images),
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **results, **{k: np.array(v) for k, v in meta.items()})
    for key, value in results.items():
        print(f"{key:20s} {value.shape} mean {value.mean():.4f} max {value.max():.4f}")
    print(meta["versions"], f"{FIXTURE.stat().st_size} bytes")


if __name__ == "__main__":
    main()
