"""Deterministic stand-in weights for the FID Inception-v3.

The official ``pt_inception-2015-12-05-6726825d.pth`` cannot be downloaded in the test
environment. Parity with the reference tools does not need it: any weights do, as long as every
tool gets the same tensors and the activations stay in a sane range through all 94 conv layers.

Key names, shapes and order come from ``fixtures/pt_inception_keys.json``, which
``tools/peers/make_inception_fixtures.py`` wrote from pytorch-fid's own model, so this module
does not depend on imgdist. Values come from ``numpy.random.default_rng(seed)`` drawn in that key
order (float64, then cast), so the tensors do not depend on the torch version.

Recipe:

* conv weights: He-scaled normal, ``std = sqrt(2 / fan_in)``, which keeps the second moment of
  ReLU activations roughly constant from layer to layer;
* BatchNorm: ``running_mean ~ N(0, 0.1^2)``, ``running_var ~ U(0.6, 1.4)``,
  ``weight ~ U(0.8, 1.2)``, ``bias ~ N(0, 0.2^2)``: close to the identity, different per channel;
* fc: ``std = 1 / sqrt(2048)`` weights (logits of order one), ``N(0, 0.1^2)`` bias.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

KEYS_FILE = Path(__file__).resolve().parent / "fixtures" / "pt_inception_keys.json"


def inception_keys() -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every state-dict entry, in pytorch-fid's order."""
    data = json.loads(KEYS_FILE.read_text())
    return [(name, tuple(shape), dtype) for name, shape, dtype in data["keys"]]


def _values(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("fc."):
        if leaf == "weight":
            return rng.standard_normal(shape) / np.sqrt(shape[1])
        return 0.1 * rng.standard_normal(shape)
    if name.endswith("conv.weight"):
        fan_in = int(np.prod(shape[1:]))
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    if leaf == "running_mean":
        return 0.1 * rng.standard_normal(shape)
    if leaf == "running_var":
        return rng.uniform(0.6, 1.4, shape)
    if leaf == "weight":  # BatchNorm gamma
        return rng.uniform(0.8, 1.2, shape)
    if leaf == "bias":  # BatchNorm beta
        return 0.2 * rng.standard_normal(shape)
    raise KeyError(f"no stand-in recipe for {name}")


def inception_stand_in_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with pytorch-fid's FID Inception keys and shapes, filled deterministically."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape, dtype in inception_keys():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        values = np.asarray(_values(rng, name, shape), dtype=np.float32)
        state[name] = torch.from_numpy(values)
    return state


def save_stand_in(path: str | Path, seed: int = 0) -> Path:
    """Write the stand-in weights as a ``.pth`` file (a plain state dict, like the official one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(inception_stand_in_state_dict(seed), path)
    return path


# sizes (height, width) of the parity images: smaller, equal and larger than 299, non-square
PARITY_IMAGE_SIZES = ((48, 64), (299, 299), (300, 500), (200, 128), (33, 37), (410, 320))


def parity_images(seed: int = 1) -> list[np.ndarray]:
    """Deterministic uint8 H x W x 3 test images: smooth waves and blobs plus pixel noise.

    Shared by ``tools/peers/make_inception_fixtures.py`` (which saves them as PNG for the
    reference tools) and the tests (which feed them to imgdist), so the fixture need not store them.
    """
    rng = np.random.default_rng(seed)
    images = []
    for height, width in PARITY_IMAGE_SIZES:
        yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
        channels = []
        for _ in range(3):
            fx, fy = rng.uniform(1, 8, 2)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            ramp = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
            value = 128 + 60 * wave + 70 * blob - 40 + 30 * ramp
            channels.append(value + rng.normal(0, 12, (height, width)))
        images.append(np.clip(np.rint(np.stack(channels, -1)), 0, 255).astype(np.uint8))
    return images
