"""Deterministic stand-in backbone weights for the LPIPS and DISTS parity checks.

torchvision's ImageNet files cannot be downloaded in the test environment. Parity with the
``lpips`` and ``DISTS_pytorch`` packages does not need them: any backbone weights do, as long as
both sides get the same tensors. The heads (LPIPS v0.1) and alpha/beta (DISTS) are the real,
published ones; ``tools/peers/make_lpips_fixtures.py`` copies them from the packages into
``fixtures/lpips_parity.npz``.

Shared by that script (which loads these tensors into torchvision's networks inside the two
packages) and the tests (which load them into imgdist), without importing imgdist. Key names and
shapes come from ``fixtures/lpips_keys.json``, which the script wrote from torchvision's own
models; values from ``numpy.random.default_rng(seed)``, drawn in key order in float64 and cast to
float32, so they do not depend on the torch version: convolution weights normal with
``std = sqrt(2 / fan_in)`` (He et al. 2015, which keeps the activations' scale through ReLUs),
biases normal with ``std = 0.05``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEYS = FIXTURES / "lpips_keys.json"
PARITY = FIXTURES / "lpips_parity.npz"
SEEDS = {"alexnet": 101, "vgg16": 102, "squeezenet1_1": 103}
NET_ARCH = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def keys() -> dict:
    return json.loads(KEYS.read_text())


def stand_in_features(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ``<arch>().features`` state dict (``features.<index>.*`` keys), stand-in values."""
    rng = np.random.default_rng(SEEDS[arch])
    out = {}
    for key, shape in keys()["torchvision"][arch]:
        if key.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            values = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        else:
            values = rng.normal(0.0, 0.05, shape)
        out[key] = torch.from_numpy(values.astype(np.float32))
    return out


def slice_key_to_torchvision(key: str) -> str:
    """``...slice<k>.<index>.<rest>`` / ``stage<k>.<index>.<rest>`` -> ``features.<index>.<rest>``."""
    parts = key.split(".")
    at = next(i for i, p in enumerate(parts) if p.startswith(("slice", "stage")))
    return ".".join(["features", *parts[at + 1:]])


def lpips_state_dict(net: str) -> dict[str, torch.Tensor]:
    """What ``lpips.LPIPS(net=net).state_dict()`` holds with the stand-in backbone and the real
    v0.1 heads: every key the package writes (``lins.*`` duplicates included)."""
    backbone = stand_in_features(NET_ARCH[net])
    with np.load(PARITY) as fixture:
        out = {}
        for key, _ in keys()["lpips_state"][net]:
            if key.startswith("net."):
                out[key] = backbone[slice_key_to_torchvision(key)]
            elif key.startswith("lin"):
                first, second = key.split(".")[:2]
                k = second if first == "lins" else first[len("lin"):]
                out[key] = torch.from_numpy(fixture[f"heads_{net}_{k}"])
            else:
                out[key] = torch.from_numpy(fixture[f"lpips_buffer__{net}__{key}"])
    return out


def lpips_heads(net: str) -> dict[str, torch.Tensor]:
    """The v0.1 heads file's content (``lin<k>.model.1.weight``)."""
    with np.load(PARITY) as fixture:
        count = len([k for k in fixture.files if k.startswith(f"heads_{net}_")])
        return {f"lin{k}.model.1.weight": torch.from_numpy(fixture[f"heads_{net}_{k}"]) for k in range(count)}


def dists_state_dict() -> dict[str, torch.Tensor]:
    """What ``DISTS_pytorch.DISTS_pt.DISTS().state_dict()`` holds with the stand-in VGG16 and the
    real alpha/beta."""
    backbone = stand_in_features("vgg16")
    with np.load(PARITY) as fixture:
        out = {}
        for key, _ in keys()["dists_state"]:
            if key.startswith("stage") and not key.endswith(".filter"):
                out[key] = backbone[slice_key_to_torchvision(key)]
            elif key in ("alpha", "beta"):
                out[key] = torch.from_numpy(fixture[f"dists_{key}"])
            else:
                out[key] = torch.from_numpy(fixture[f"dists_buffer__{key}"])
    return out


def parity_pairs() -> list[tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """``(group, a, b, references)`` per size group: uint8 N x H x W x 3 images and the packages'
    values per pair (``lpips_alex``, ``lpips_vgg``, ``lpips_squeeze``, ``dists``)."""
    with np.load(PARITY) as fixture:
        groups = sorted({k.split("__")[1] for k in fixture.files if k.startswith("a__")})
        return [(g, fixture[f"a__{g}"], fixture[f"b__{g}"],
                 {name: fixture[f"{name}__{g}"] for name in ("lpips_alex", "lpips_vgg", "lpips_squeeze", "dists")})
                for g in groups]
