"""Deterministic image folders for the end-to-end parity check against ``python -m pytorch_fid``.

Shared by ``tools/peers/make_e2e_fixtures.py`` (which writes the folders, runs pytorch-fid's
command line on them and stores its printed FID) and ``tests/test_e2e_pytorch_fid.py`` (which
writes the same folders again and runs ``imgdist eval`` on them), so the fixture need not store
any image. :func:`images_digest` lets the test detect a generator that drifted from the one the
fixture was made with.

Two sets of ``E2E_COUNT`` RGB images of ``E2E_SIZE`` x ``E2E_SIZE`` pixels, all drawn from
``numpy.random.default_rng`` (float64, then rounded to uint8), so they do not depend on torch:

* ``"real"``: smooth scenes -- a background colour, a sum of low-frequency plane waves and one
  Gaussian blob per channel, a little pixel noise;
* ``"fake"``: the same family with a perturbed distribution -- higher frequencies, a warmer colour
  balance, two blobs, more pixel noise -- so the two Gaussians are clearly apart (the FID is a
  sizeable fraction of the covariance traces, not a small difference of large numbers).

Every image has dozens of independent random parameters, so with more images than feature
dimensions (e.g. 72 images, 64 dims) the sample covariances are full rank.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

E2E_SIZE = 64        # pytorch-fid's default collate needs one size per folder
E2E_COUNT = 72       # per set: more than 64, so the pool64 covariances are full rank
E2E_SEED = 20240607

SETS = ("real", "fake")


def _scene(rng: np.random.Generator, size: int, fake: bool) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, size), np.linspace(0.0, 1.0, size), indexing="ij")
    base = rng.uniform(60, 190, 3)
    if fake:
        base = base + np.array([25.0, 0.0, -25.0])  # warmer colour balance
    freq_hi = 9.0 if fake else 4.0
    channels = []
    for c in range(3):
        value = np.full((size, size), base[c])
        for _ in range(3):
            fx, fy = rng.uniform(-freq_hi, freq_hi, 2)
            phase = rng.uniform(0, 2 * np.pi)
            value += rng.uniform(10, 40) * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
        for _ in range(2 if fake else 1):
            cx, cy = rng.uniform(0.15, 0.85, 2)
            r = rng.uniform(0.06, 0.25)
            value += rng.uniform(-80, 80) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        value += rng.normal(0.0, 14.0 if fake else 5.0, (size, size))
        channels.append(value)
    return np.clip(np.rint(np.stack(channels, -1)), 0, 255).astype(np.uint8)


def e2e_images(count: int = E2E_COUNT, size: int = E2E_SIZE,
               seed: int = E2E_SEED) -> dict[str, list[np.ndarray]]:
    """``{"real": [...], "fake": [...]}``: ``count`` uint8 ``size x size x 3`` arrays each."""
    rng = np.random.default_rng(seed)
    return {name: [_scene(rng, size, fake=(name == "fake")) for _ in range(count)] for name in SETS}


def images_digest(images: dict[str, list[np.ndarray]]) -> str:
    """SHA-256 of the pixel arrays (shape and bytes, in set and index order).

    Pixels, not PNG bytes: the encoder's output may change with the Pillow / zlib version while
    the (lossless) pixels stay the same.
    """
    h = hashlib.sha256()
    for name in SETS:
        h.update(name.encode())
        for image in images[name]:
            h.update(repr(image.shape).encode())
            h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def write_e2e_folders(root: str | Path, images: dict[str, list[np.ndarray]] | None = None
                      ) -> dict[str, Path]:
    """Save the sets as ``root/real/000.png ...`` and ``root/fake/000.png ...``; returns the folders."""
    from PIL import Image

    images = e2e_images() if images is None else images
    folders = {}
    for name in SETS:
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images[name]):
            Image.fromarray(image, "RGB").save(folder / f"{i:03d}.png")
        folders[name] = folder
    return folders


def weights_digest(state: dict) -> str:
    """SHA-256 of a state dict's names and tensor bytes, in order (independent of the file format)."""
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
