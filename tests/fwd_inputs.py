"""Deterministic image sets for the FWD parity fixtures (``tests/fixtures/fwd_peers.npz``).

Shared by ``tools/peers/make_fwd_fixtures.py`` (which runs pytorchfwd 1.0.1 on them) and
``tests/test_fwd.py`` (which runs imgdist on them), so the fixture stores digests and results,
not images. The images come out bit-identical in both environments: crops of scikit-learn's two
sample photographs (decoded by the same Pillow), Debian's Fashion-MNIST bytes, and
``numpy.random.default_rng`` draws, shaped with integer arithmetic only.

Each set is ``(real, fake, resize)``: uint8 arrays ``N x H x W x 3`` and pytorchfwd's
``--resize`` (None: native size).
64 images of 64 x 64 keep each level-4 packet's covariance (``D = 3 x 4 x 4 = 48``) full rank.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct

import numpy as np

SEED = 2025
N = 64
FASHION = "/usr/share/datasets/fashion-mnist"


def photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(im, dtype=np.uint8) for im in load_sample_images().images]


def crops(rng: np.random.Generator, pictures: list[np.ndarray], n: int, height: int, width: int) -> np.ndarray:
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        pic = pictures[int(rng.integers(len(pictures)))]
        top = int(rng.integers(pic.shape[0] - height + 1))
        left = int(rng.integers(pic.shape[1] - width + 1))
        out[i] = pic[top:top + height, left:left + width]
    return out


def box_blur(images: np.ndarray) -> np.ndarray:
    """3 x 3 box blur with edge replication, in integers (rounded down)."""
    padded = np.pad(images.astype(np.uint16), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    total = sum(padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return (total // 9).astype(np.uint8)


def fashion(name: str, count: int) -> np.ndarray:
    """The first ``count`` images of a Fashion-MNIST IDX file (only those are decompressed)."""
    with gzip.open(os.path.join(FASHION, name), "rb") as fh:
        header = fh.read(16)
        rows, cols = struct.unpack(">II", header[8:16])
        data = fh.read(count * rows * cols)
    return np.frombuffer(data, np.uint8).reshape(count, rows, cols)


def has_fashion() -> bool:
    return os.path.exists(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))


def make_sets(with_fashion: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray, int | None]]:
    """name -> (real, fake, resize). ``with_fashion=False`` leaves out the Fashion-MNIST set."""
    rng = np.random.default_rng(SEED)
    pics = photos()
    sets = {}
    # photographs against blurred photographs
    sets["photos_blur"] = (crops(rng, pics, N, 64, 64), box_blur(crops(rng, pics, N, 64, 64)), None)
    # photographs against uniform noise: far off the real distribution
    noise = rng.integers(0, 256, size=(N, 64, 64, 3), dtype=np.uint8)
    sets["photos_noise"] = (crops(rng, pics, N, 64, 64), noise, None)
    # non-square crops of two sizes, both resized to 64 x 64 by Pillow's bilinear filter
    real = crops(rng, pics, N, 80, 96)
    fake = crops(rng, pics, N, 72, 72)
    fake = np.clip(fake.astype(np.int16) + rng.integers(-12, 13, size=fake.shape), 0, 255).astype(np.uint8)
    sets["resized"] = (real, fake, 64)
    # odd sides: 45 -> 23 -> 12 -> 6 -> 3, so two of the four splits reflect a sample (D = 27)
    sets["odd45"] = (crops(rng, pics, N, 45, 45), crops(rng, pics[::-1], N, 45, 45)[:, ::-1].copy(), None)
    if with_fashion:
        # 28 x 28 grayscale, tinted with a colour per image (so that the channels are not copies
        # of each other and each packet's covariance keeps full rank), resized up to 64 x 64
        def tinted(gray):
            colours = rng.integers(96, 256, size=(len(gray), 1, 1, 3)).astype(np.uint16)
            return (gray[..., None].astype(np.uint16) * colours // 255).astype(np.uint8)
        train = fashion("train-images-idx3-ubyte.gz", N)
        test = fashion("t10k-images-idx3-ubyte.gz", N)
        sets["fashion"] = (tinted(train), tinted(test), 64)
    return sets


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def write_pngs(images: np.ndarray, folder: str) -> str:
    """``images`` as ``000.png``, ``001.png`` ... in ``folder`` (made if missing); returns it."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(folder, f"{i:03d}.png"))
    return folder


def coefficient_input() -> np.ndarray:
    """2 x 3 x 23 x 17 float64 in [0, 1) for the packet-transform fixture (odd sides at every level)."""
    return np.random.default_rng(SEED + 1).random((2, 3, 23, 17))
