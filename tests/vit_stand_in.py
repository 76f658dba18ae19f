"""Deterministic stand-in weights and test images for the DINOv2 and CLIP parity checks.

The official DINOv2 and OpenAI CLIP checkpoints cannot be downloaded in the test environment.
Parity with the reference code does not need them: any weights do, as long as every tool gets the
same tensors and different images give clearly different features. Shared by
``tools/peers/make_vit_fixtures.py`` (which loads these tensors into the authors' DINOv2 code,
clip-anytorch and torch-fidelity) and the tests (which load them into imgdist), without importing
imgdist.

Key names, shapes and dtypes come from ``fixtures/vit_keys.json``, which the fixture script wrote
from the reference models themselves (``dinov2.models.vision_transformer.vit_*`` as torch hub
builds them, and clip-anytorch's ``CLIP`` after ``convert_weights``, i.e. float16 where OpenAI's
files are float16). Values come from ``numpy.random.default_rng(seed)``, drawn in key order,
float64 then cast, so they do not depend on the torch version.

Recipe (chosen so the CLS features of different images differ by a large fraction of their norm):

* matrices (linear and patch-convolution weights): normal, ``std = 1 / sqrt(fan_in)``;
* LayerNorm weights ``U(0.7, 1.3)``, all biases ``N(0, 0.1^2)``;
* DINOv2 LayerScale ``U(0.2, 0.8)``; class token ``N(0, 1)``; position embeddings ``N(0, 0.5^2)``
  (rough, so that resampling them to another grid visibly matters); mask token ``N(0, 0.1^2)``;
* CLIP class and position embeddings ``N(0, 0.5^2)``, projection ``1 / sqrt(width)``;
* CLIP's text tower (only there so that the reference loaders accept the file): small normal values.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEYS_FILE = FIXTURES / "vit_keys.json"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def vit_keys(arch: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every tensor of ``arch`` (e.g. ``dinov2_s``, ``clip_b32``) in order."""
    data = json.loads(KEYS_FILE.read_text())
    return [(name, tuple(shape), dtype) for name, shape, dtype in data["archs"][arch]]


def _values(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith(("transformer.", "token_embedding", "ln_final", "text_projection",
                        "positional_embedding", "logit_scale")):  # CLIP text tower
        return 0.02 * rng.standard_normal(shape)
    if leaf == "gamma":
        return rng.uniform(0.2, 0.8, shape)
    if name in ("cls_token",):
        return rng.standard_normal(shape)
    if name in ("pos_embed", "visual.positional_embedding", "visual.class_embedding"):
        return 0.5 * rng.standard_normal(shape)
    if name == "mask_token":
        return 0.1 * rng.standard_normal(shape)
    if name == "visual.proj":
        return rng.standard_normal(shape) / np.sqrt(shape[0])
    if len(shape) >= 2:  # linear / convolution weights, fan-in = all but the first axis
        return rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
    if leaf == "weight":  # LayerNorm
        return rng.uniform(0.7, 1.3, shape)
    if leaf == "bias" or leaf == "in_proj_bias":
        return 0.1 * rng.standard_normal(shape)
    raise KeyError(f"no stand-in recipe for {name}")


def stand_in_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The stand-in tensors of ``arch``, in the official checkpoint's names, order and dtypes."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape, dtype in vit_keys(arch):
        values = np.asarray(_values(rng, name, shape), dtype=np.float32)
        state[name] = torch.from_numpy(values).to(getattr(torch, dtype))
    return state


def vit_peers(keys) -> dict[str, np.ndarray]:
    """The entries ``keys`` of ``fixtures/vit_peers.npz``, and only those: a test module passes the
    keys it compares (its ``PEER_KEYS``), so reading any other fails, and ``test_vit_e2e.py`` checks
    that the modules' lists together hold every entry of the file."""
    with np.load(FIXTURES / "vit_peers.npz") as data:
        return {key: data[key] for key in keys}


def weights_digest(state: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --- images -----------------------------------------------------------------------------------

def _require_fashion_mnist(name: str) -> Path:
    """The IDX file; under pytest a missing one skips the test, or fails it in CI (``needs.py``).
    The fixture scripts, which run without pytest, fail with the path."""
    if "pytest" in sys.modules:
        from needs import require_fashion_mnist

        return require_fashion_mnist(name)
    return FASHION_MNIST / name


def _idx_images(kind: str) -> np.ndarray:
    with gzip.open(_require_fashion_mnist(f"{kind}-images-idx3-ubyte.gz")) as f:
        data = f.read()
    count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)


def _idx_labels(kind: str) -> np.ndarray:
    with gzip.open(_require_fashion_mnist(f"{kind}-labels-idx1-ubyte.gz")) as f:
        return np.frombuffer(f.read(), np.uint8, offset=8)


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2)


def photos() -> list[np.ndarray]:
    """Real photographs as uint8 H x W x 3: scikit-image's coffee (shipped with imgdist) and
    scikit-learn's two sample images (china, flower), all non-square."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    coffee = np.asarray(Image.open(ROOT / "src" / "imgdist" / "data" / "coffee.jpg").convert("RGB"))
    return [coffee, load_sample_image("china.jpg"), load_sample_image("flower.jpg")]


PARITY_FASHION = (0, 1, 2)  # Fashion-MNIST training images in the parity set


def parity_images() -> list[np.ndarray]:
    """Three photographs and three Fashion-MNIST images (28 x 28, grey as RGB)."""
    train = _idx_images("train")
    return photos() + [gray_to_rgb(train[i]) for i in PARITY_FASHION]


def images_digest(images) -> str:
    h = hashlib.sha256()
    for image in images:
        h.update(repr(image.shape).encode())
        h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def raw_inputs(size: int, count: int = 2, seed: int = 7) -> torch.Tensor:
    """Already-normalised network inputs (N(0, 1) values), for network-only comparisons."""
    rng = np.random.default_rng(seed + size)
    return torch.from_numpy(rng.standard_normal((count, 3, size, size)).astype(np.float32))


# --- end-to-end folders -----------------------------------------------------------------------

E2E_COUNT = 24
E2E_FAKE_CLASSES = (5, 7, 9)  # sandals, sneakers, ankle boots: a different distribution


def e2e_sets(count: int = E2E_COUNT) -> dict[str, list[np.ndarray]]:
    """``real``: the first ``count`` Fashion-MNIST training images (all classes); ``fake``: the first
    ``count`` test images of the footwear classes only. 28 x 28 grey."""
    train = _idx_images("train")
    test, labels = _idx_images("t10k"), _idx_labels("t10k")
    fake = [test[i] for i in np.flatnonzero(np.isin(labels, E2E_FAKE_CLASSES))[:count]]
    return {"real": [train[i] for i in range(count)], "fake": fake}


def write_e2e_folders(root: str | Path, sets: dict[str, list[np.ndarray]] | None = None) -> dict[str, Path]:
    """Save each set as grey PNG files ``root/<set>/000.png ...``; returns the folders."""
    from PIL import Image

    sets = e2e_sets() if sets is None else sets
    folders = {}
    for name, images in sets.items():
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image, "L").save(folder / f"{i:03d}.png")
        folders[name] = folder
    return folders


# --- TorchScript archives ---------------------------------------------------------------------

class Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(state: dict[str, torch.Tensor], path) -> None:
    """A TorchScript archive (torch.jit.script + save) holding ``state`` under its dotted names,
    like OpenAI's files hold CLIP (those were traced; the tensors are pickled the same way)."""
    root = Holder()
    for name, tensor in state.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if part not in module._modules:
                module.add_module(part, Holder())
            module = module._modules[part]
        module.register_parameter(leaf, nn.Parameter(tensor, requires_grad=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's own deprecation
        torch.jit.script(root).save(str(path))
