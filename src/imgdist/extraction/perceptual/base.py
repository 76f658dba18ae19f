"""What LPIPS and DISTS share: a network that maps two images of one size to one distance, its
weights' identity, and batched evaluation on a device.

A :class:`PerceptualNet` splits its distance in two halves, :meth:`~PerceptualNet.features` (one
image at a time) and :meth:`~PerceptualNet.compare` (two lists of feature maps, broadcast over the
batch), so that one image compared with many is run through the network once, and a set's pairs
run in batches.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import ImgdistError

#: input pixels (height x width, summed over the images of a batch, both sides of each pair) that
#: one batch may hold; the activation memory per pixel of each network is its ``bytes_per_pixel``
BATCH_BYTES = 1 << 30


class PerceptualNet(nn.Module):
    """A learned distance between two images of one size; see the module docstring.

    ``label`` names the number as it prints: ``LPIPS[alex]`` with the published weights,
    ``LPIPS[alex:1a2b3c4d]`` (the first hex digits of the file's SHA-256) with others.
    ``weights_sha256``: each weights file's role -> SHA-256.
    """

    #: the name results carry (``Comparison.values()``, JSON keys, ``--sort-by``)
    key: ClassVar[str] = ""
    #: peak memory per input pixel of a batch in float32, network and comparison (measured by
    #: benchmarks/bench_lpips.py --memory; each network sets its own)
    bytes_per_pixel: ClassVar[int] = 1024

    def __init__(self):
        super().__init__()
        self.label = self.key
        self.weights_sha256: dict[str, str] = {}
        self.min_size = 1

    # --- the distance ---------------------------------------------------------------------

    def to_input(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """uint8 ``N x 3 x H x W`` (0..255) -> the float input the reference package is given."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        """One distance per image pair (``N``); either side may have batch size 1 (broadcast)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The distance of each pair, from float inputs as :meth:`to_input` makes them."""
        return self.compare(self.features(x), self.features(y))

    # --- sizes ----------------------------------------------------------------------------

    def check_size(self, height: int, width: int, name: str) -> None:
        """A one-line error naming the image when the network has no output for its size."""
        if min(height, width) < self.min_size:
            raise ImgdistError(f"{name}: {width}x{height} is too small for {self.label}, which needs images of at "
                               f"least {self.min_size}x{self.min_size} pixels")

    def batch_images(self, height: int, width: int) -> int:
        """Images of this size per network batch (at least 1)."""
        return max(1, BATCH_BYTES // (self.bytes_per_pixel * height * width))


def as_uint8_batch(images) -> torch.Tensor:
    """H x W x 3 uint8 arrays (or one N x H x W x 3 array) -> uint8 ``N x 3 x H x W``."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    array = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images)
    if not array.flags.writeable:  # Pillow-backed arrays: torch would warn about sharing them
        array = array.copy()
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected uint8 H x W x 3 images, got {array.dtype} {array.shape}")
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def _zero_where_identical(distances: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Identical images are at distance 0, as the reference packages compute it (each image alone
    through the network, so both sides round alike). Batched here, the two sides may go through
    differently sized batches, whose convolutions round differently (2e-14 instead of 0)."""
    same = (a == b).flatten(1).all(1)
    return torch.where(same, torch.zeros_like(distances), distances)


class Anchor:
    """``image`` (H x W x 3 uint8) compared by ``model`` with any number of others of its size, in
    as many calls as the caller's batches: ``image`` runs through the network once, on the first
    call that has others."""

    def __init__(self, model: PerceptualNet, image, device: str | torch.device = "cpu"):
        self.model, self.device = model, device
        self._image = as_uint8_batch(image)
        self._features: list[torch.Tensor] | None = None

    @torch.inference_mode()
    def distances(self, others) -> np.ndarray:
        """The distance to each of ``others``, float64."""
        from ..precision import fp32_mode

        model = self.model
        others = list(others)
        if not others:
            return np.zeros(0)
        size = model.batch_images(*self._image.shape[-2:])
        out = []
        with fp32_mode("fp32"):
            if self._features is None:
                self._image = self._image.to(self.device)
                self._features = model.features(model.to_input(self._image))
            a, fa = self._image, self._features
            for start in range(0, len(others), size):
                b = as_uint8_batch(others[start:start + size]).to(self.device)
                d = model.compare(fa, model.features(model.to_input(b)))
                out.append(_zero_where_identical(d, a, b).double().cpu())
        return torch.cat(out).numpy()


def distances_to(model: PerceptualNet, image, others, device: str | torch.device = "cpu") -> np.ndarray:
    """``model``'s distance from ``image`` (H x W x 3 uint8) to each of ``others`` (same size),
    float64; ``image`` runs through the network once."""
    return Anchor(model, image, device).distances(others)


@torch.inference_mode()
def pair_distances(model: PerceptualNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``model``'s distance of each pair ``(a[i], b[i])``, uint8 ``N x 3 x H x W`` tensors already on
    the model's device, in one pass: both sides through the network as one batch."""
    from ..precision import fp32_mode

    n = len(a)
    with fp32_mode("fp32"):
        feats = model.features(model.to_input(torch.cat([a, b])))
        return _zero_where_identical(model.compare([f[:n] for f in feats], [f[n:] for f in feats]), a, b)
