"""torchvision's AlexNet, VGG16 and SqueezeNet 1.1 feature stacks in plain torch.

LPIPS and DISTS are defined on these networks' ``features`` part with torchvision's published
ImageNet weights; imgdist cannot import torchvision, so the stacks are rebuilt here layer for
layer. Each layer sits at its torchvision index, so torchvision's state dict keys
(``features.<index>.weight``, ``features.3.squeeze.bias`` ...) name the same tensors here, and the
classifier part of the published files is left unread.

Facts that decide the numbers (read from torchvision 0.28's model definitions):

* AlexNet ("one weird trick" variant, the published ``alexnet-owt`` file): 64-192-384-256-256
  channels, kernels 11 (stride 4, padding 2), 5 (padding 2), then 3s (padding 1); max pools 3/2
  without ``ceil_mode``;
* VGG16 (configuration "D"): 3x3 convolutions with padding 1, 2x2/2 max pools;
* SqueezeNet 1.1: a 3x3/2 stem without padding, max pools 3/2 **with** ``ceil_mode`` (an odd map
  keeps its last row and column), Fire modules that concatenate their 1x1 and 3x3 expansions
  (1x1 first);
* every convolution has a bias, every ReLU follows a convolution.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from .base import WeightsSpec

ARCHS = ("alexnet", "vgg16", "squeezenet1_1")

_TORCHVISION = "https://download.pytorch.org/models/"
_LICENSE = "BSD-3-Clause (torchvision)"

#: torchvision's published ImageNet weights (``IMAGENET1K_V1``), as ``torchvision.models.<arch>(
#: pretrained=True)`` loads them. The hex in each name is the start of the file's SHA-256 (torch
#: hub's convention); the full digests and sizes are the published files' (each stated by several
#: independent projects that pin them, and consistent with the name's prefix and torchvision's
#: ``_file_size`` in MiB).
WEIGHTS = {
    "alexnet": WeightsSpec(
        filename="alexnet-owt-7be5be79.pth", url=_TORCHVISION + "alexnet-owt-7be5be79.pth",
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", size=244_408_911,
        license=_LICENSE),
    "vgg16": WeightsSpec(
        filename="vgg16-397923af.pth", url=_TORCHVISION + "vgg16-397923af.pth",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", size=553_433_881,
        license=_LICENSE),
    "squeezenet1_1": WeightsSpec(
        filename="squeezenet1_1-b8a52dc0.pth", url=_TORCHVISION + "squeezenet1_1-b8a52dc0.pth",
        sha256="b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b", size=4_958_839,
        license=_LICENSE),
}

#: VGG16 configuration "D": output channels of each 3x3 convolution, "M" a 2x2 max pool
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class Fire(nn.Module):
    """SqueezeNet's module: a 1x1 squeeze, then 1x1 and 3x3 expansions side by side (channels
    concatenated, 1x1 first); every convolution followed by a ReLU."""

    def __init__(self, inputs: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inputs, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def feature_layers(arch: str, pool: Callable[[int], nn.Module] | None = None) -> list[nn.Module]:
    """The layers of torchvision's ``<arch>().features``, in index order (untrained).

    ``pool``: VGG16 only, a factory ``channels -> module`` that replaces each 2x2 max pool (DISTS
    puts an L2 pooling there); the layers keep their indices."""
    if arch == "alexnet":
        return [nn.Conv2d(3, 64, 11, stride=4, padding=2), _relu(), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), _relu(), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), _relu(),
                nn.Conv2d(384, 256, 3, padding=1), _relu(),
                nn.Conv2d(256, 256, 3, padding=1), _relu(), nn.MaxPool2d(3, 2)]
    if arch == "vgg16":
        layers, channels = [], 3
        for item in _VGG16:
            if item == "M":
                layers.append(pool(channels) if pool is not None else nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), _relu()]
                channels = item
        return layers
    if arch == "squeezenet1_1":
        def max_pool():
            return nn.MaxPool2d(3, 2, ceil_mode=True)

        return [nn.Conv2d(3, 64, 3, stride=2), _relu(), max_pool(),
                Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), max_pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), max_pool(),
                Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
                Fire(512, 64, 256, 256)]
    raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")


def slices(layers: Sequence[nn.Module], ends: Sequence[int]) -> list[nn.Sequential]:
    """``layers`` cut before each index in ``ends`` (exclusive ends, increasing), each piece an
    ``nn.Sequential`` holding its layers under their torchvision indices; layers past the last end
    are left out."""
    out, start = [], 0
    for end in ends:
        out.append(nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(start, end))))
        start = end
    return out


def min_input_size(layers: Sequence[nn.Module]) -> int:
    """The smallest height (or width) for which every layer of ``layers`` has an output of at
    least one pixel, from each layer's kernel, stride, padding and rounding."""
    def out(n: int) -> int:
        for layer in layers:
            n = _output_size(layer, n)
            if n < 1:
                return 0
        return n

    n = 1
    while out(n) < 1:
        n += 1
    return n


def _output_size(layer: nn.Module, n: int) -> int:
    """Output height of ``layer`` for input height ``n``: any layer with ``kernel_size``,
    ``stride`` and ``padding`` (convolutions, pools, DISTS's L2 pooling); others keep the size."""
    if not hasattr(layer, "kernel_size"):
        return n  # ReLU; Fire (1x1 and padded 3x3 convolutions)
    k, s, p = (v if isinstance(v, int) else v[0] for v in (layer.kernel_size, layer.stride, layer.padding))
    span = n + 2 * p - k  # may be negative: a ceil_mode pool still has one window then
    if not getattr(layer, "ceil_mode", False):
        return span // s + 1
    size = -(-span // s) + 1
    # PyTorch's rule for ceil_mode: the last window must start inside the input or its left padding
    return size - 1 if (size - 1) * s >= n + p else size


def torchvision_view(pieces: Sequence[nn.Sequential]) -> nn.Module:
    """A module whose state dict is torchvision's ``features.<index>.*`` for the layers of
    ``pieces`` (from :func:`slices`) that have parameters: loading a torchvision file into it fills
    those layers, which stay shared with ``pieces``. Layers that torchvision does not have (DISTS's
    L2 pooling, with a fixed filter) are left out."""
    layers = [(name, layer) for piece in pieces for name, layer in piece.named_children()
              if any(True for _ in layer.parameters())]
    view = nn.Module()
    view.features = nn.Sequential(OrderedDict(layers))
    return view
