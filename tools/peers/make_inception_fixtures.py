"""Regenerate the FID Inception parity fixtures with the reference tools themselves.

Run in the peers environment (pytorch-fid, torch-fidelity, clean-fid; see DESIGN.md):

    /tmp/peers-venv/bin/python tools/peers/make_inception_fixtures.py

It writes

* ``tests/fixtures/pt_inception_keys.json``: name, shape and dtype of every entry of
  ``pytorch_fid.inception.fid_inception_v3().state_dict()``, in order (the stand-in weights
  generator and the key test read it);
* ``tests/fixtures/inception_peers.npz``: features the reference tools compute on the parity
  images (``tests/stand_in_weights.parity_images``, saved as PNG and read back the way each tool
  reads files) with the stand-in weights (``tests/stand_in_weights.py``) loaded into each tool:

  - ``ptfid_pool64/192/768/pool``: pytorch-fid ``get_activations`` with ``InceptionV3([block])``
    (its own resize and 2x-1 scaling), weights placed where its ``load_state_dict_from_url``
    looks (the torch hub cache);
  - ``tfid_64/192/768/2048/logits_unbiased/logits``: torch-fidelity's ``inception-v3-compat``
    extractor (TF1 bilinear resize, (x-128)/128), weights via ``feature_extractor_weights_path``;
  - ``clean_pool``: clean-fid's ``get_files_features(mode="clean")`` (its file reading, Pillow
    bicubic resize and tensor conversion). clean-fid runs the network as a TorchScript file that
    cannot be rebuilt with other weights, so its model function here repeats that wrapper's two
    lines, ``(x - 128) / 128``, and runs pytorch-fid's FID Inception (same graph) on the result.

No imgdist code is used: the fixtures are an independent reference for ``tests/test_inception.py``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


def pytorch_fid_architecture() -> torch.nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` with its weight download turned off (random init)."""
    import pytorch_fid.inception as pfi

    fetch, load = pfi.load_state_dict_from_url, torch.nn.Module.load_state_dict
    pfi.load_state_dict_from_url = lambda *args, **kwargs: {}
    torch.nn.Module.load_state_dict = lambda self, *args, **kwargs: None
    try:
        return pfi.fid_inception_v3()
    finally:
        pfi.load_state_dict_from_url, torch.nn.Module.load_state_dict = fetch, load


def write_keys() -> None:
    state = pytorch_fid_architecture().state_dict()
    lines = [json.dumps([k, list(v.shape), str(v.dtype).removeprefix("torch.")])
             for k, v in state.items()]
    text = ('{"source": "pytorch_fid.inception.fid_inception_v3().state_dict(), pytorch-fid '
            + version("pytorch-fid") + '",\n"keys": [\n' + ",\n".join(lines) + "\n]}\n")
    (FIXTURES / "pt_inception_keys.json").write_text(text)


def weights_digest(state: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


def images_digest(images) -> str:
    h = hashlib.sha256()
    for image in images:
        h.update(repr(image.shape).encode())
        h.update(image.tobytes())
    return h.hexdigest()


def run_pytorch_fid(files, hub_dir: Path, state: dict) -> dict:
    import pytorch_fid.fid_score as fs
    from pytorch_fid.inception import InceptionV3

    torch.hub.set_dir(str(hub_dir))  # fid_inception_v3 loads FID_WEIGHTS_URL from here
    out = {}
    for dims, name in ((64, "pool64"), (192, "pool192"), (768, "pool768"), (2048, "pool")):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).eval()
        # make sure the stand-in weights are what it runs: first and last layer of its blocks
        assert torch.equal(model.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
        if dims == 2048:
            assert torch.equal(model.blocks[3][2].branch_pool.bn.running_var,
                               state["Mixed_7c.branch_pool.bn.running_var"])
        out[f"ptfid_{name}"] = fs.get_activations(files, model, batch_size=1, dims=dims,
                                                  device="cpu", num_workers=0).astype(np.float32)
    return out


def run_torch_fidelity(files, weights: Path) -> dict:
    from torch_fidelity.datasets import ImagesPathDataset
    from torch_fidelity.utils import create_feature_extractor

    names = ["64", "192", "768", "2048", "logits_unbiased", "logits"]
    model = create_feature_extractor("inception-v3-compat", names, cuda=False, verbose=False,
                                     feature_extractor_weights_path=str(weights))
    dataset = ImagesPathDataset([str(f) for f in files])
    rows = []
    with torch.no_grad():
        for i in range(len(dataset)):
            image = dataset[i]
            assert image.dtype == torch.uint8
            rows.append([t.numpy()[0] for t in model(image[None])])
    return {f"tfid_{n}": np.stack([r[j] for r in rows]).astype(np.float32)
            for j, n in enumerate(names)}


def run_clean_fid(files) -> dict:
    from cleanfid.fid import get_files_features
    from pytorch_fid.inception import InceptionV3

    network = InceptionV3([3], resize_input=False, normalize_input=False).eval()

    def model(x):  # cleanfid.inception_torchscript.InceptionV3W.forward, resize_inside=False
        assert x.shape[2] == 299 and x.shape[3] == 299
        return network((x - 128) / 128)[0].view(x.shape[0], 2048)

    feats = get_files_features([str(f) for f in files], model=model, num_workers=0, batch_size=1,
                               device=torch.device("cpu"), mode="clean", verbose=False)
    return {"clean_pool": feats.astype(np.float32)}


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    write_keys()
    sys.path.insert(0, str(ROOT / "tests"))
    from stand_in_weights import parity_images, save_stand_in

    torch.manual_seed(0)
    images = parity_images()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = save_stand_in(tmp / "hub" / "checkpoints" / WEIGHTS_NAME)
        state = torch.load(weights, weights_only=True)
        files = []
        for i, image in enumerate(images):
            files.append(tmp / "images" / f"img{i}.png")
            files[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(files[-1])
        results = {}
        results.update(run_pytorch_fid(files, tmp / "hub", state))
        results.update(run_torch_fidelity(files, weights))
        results.update(run_clean_fid(files))

    meta = {
        "versions": json.dumps({p: version(p) for p in ("pytorch-fid", "torch-fidelity",
                                                        "clean-fid", "torch", "numpy", "pillow")}),
        "weights_sha256": weights_digest(state),
        "images_sha256": images_digest(images),
    }
    np.savez_compressed(FIXTURES / "inception_peers.npz", **results,
                        **{k: np.array(v) for k, v in meta.items()})
    for key, value in results.items():
        print(f"{key:22s} {value.shape} mean {value.mean():.4f}")
    print(meta["versions"])


if __name__ == "__main__":
    main()
