"""LPIPS v0.1 (Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", CVPR 2018), as the ``lpips`` package 0.1.4 computes
``lpips.LPIPS(net=...)(x, y)`` on inputs in [-1, 1].

For each image: the scaling layer ``(x - shift) / scale`` (ImageNet's statistics on the [-1, 1]
scale); torchvision's AlexNet, VGG16 or SqueezeNet 1.1 feature stack, read at the end of 5, 5 or 7
slices (AlexNet: after each ReLU; VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; SqueezeNet:
after the stem's ReLU, then after Fire modules 4, 7, 9, 10, 11, 12); each map divided by its
channel vector's length plus 1e-10. For a pair: per slice the squared difference of the two unit
maps, weighted over channels by the learned 1x1 head (non-negative weights, no bias), averaged over
the map's positions; the slices' values summed. Identical images give 0; the value is not bounded
by 1 but stays well below it for natural images.

Images enter as ``lpips.im2tensor`` makes them: ``v / 127.5 - 1`` from 0..255, computed in
float64 and stored in float32. Nothing is resized: both images of a pair have one size, at least
the network's smallest (AlexNet 31, VGG16 16, SqueezeNet 17 pixels on each side).

Weights, in the order they are looked for:

* ``weights=PATH``: one state dict in the ``lpips`` package's layout, what
  ``torch.save(lpips.LPIPS(net=...).state_dict(), PATH)`` writes: ``scaling_layer.shift/scale``,
  the backbone under ``net.slice<k>.<torchvision index>.*``, the heads under
  ``lin<k>.model.1.weight`` (and again, the same tensors, under ``lins.<k>.model.1.weight``).
  Results then print as ``LPIPS[alex:<first 8 hex digits of the file's SHA-256>]``.
* the published ones, ``LPIPS[alex]``: torchvision's ImageNet backbone file and the v0.1 heads
  (from an installed ``lpips`` package, the cache, or a verified download).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import ImgdistError, WeightsError
from ..backbones.base import WeightsSpec, load_weights_strict
from ..backbones.torchvision_features import WEIGHTS as TORCHVISION_WEIGHTS
from ..backbones.torchvision_features import feature_layers, min_input_size, slices, torchvision_view
from .names import LPIPS_NETS
from .base import PerceptualNet
from .weights import identify, load_package_state, params_view, resolve


@dataclass(frozen=True)
class LpipsNet:
    """One of LPIPS's networks: torchvision's architecture, where the slices end (exclusive
    torchvision indices) and each slice's channels."""

    arch: str
    ends: tuple[int, ...]
    channels: tuple[int, ...]


NETS = dict(zip(LPIPS_NETS, (
    LpipsNet("alexnet", (2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
    LpipsNet("vgg16", (4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
    LpipsNet("squeezenet1_1", (2, 5, 8, 10, 11, 12, 13), (64, 128, 256, 384, 384, 512, 512)),
), strict=True))

#: lpips.ScalingLayer: ImageNet's mean and standard deviation, moved to the [-1, 1] scale
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: lpips.normalize_tensor's guard against an all-zero channel vector
EPS = 1e-10

_HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
#: the v0.1 heads (``lin<k>.model.1.weight``), as the lpips 0.1.4 wheel ships them and the
#: authors' repository publishes them (SHA-256 and size measured on the wheel's files; torchmetrics
#: ships byte-identical copies)
HEADS = {
    "alex": WeightsSpec(filename="lpips-v0.1-alex.pth", url=_HEADS_URL + "alex.pth",
                        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", size=6009,
                        package_path="lpips/weights/v0.1/alex.pth", license="BSD-2-Clause (lpips)"),
    "vgg": WeightsSpec(filename="lpips-v0.1-vgg.pth", url=_HEADS_URL + "vgg.pth",
                       sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", size=7289,
                       package_path="lpips/weights/v0.1/vgg.pth", license="BSD-2-Clause (lpips)"),
    "squeeze": WeightsSpec(filename="lpips-v0.1-squeeze.pth", url=_HEADS_URL + "squeeze.pth",
                           sha256="4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76", size=10811,
                           package_path="lpips/weights/v0.1/squeeze.pth", license="BSD-2-Clause (lpips)"),
}


def check_net(net) -> str:
    """``alex``, ``vgg`` or ``squeeze``, else a one-line error naming the option."""
    if net not in NETS:
        raise ImgdistError(f"lpips (--lpips) {net!r}: choose from {', '.join(NETS)}")
    return net


class _Scaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT, dtype=torch.float32)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float32)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _Head(nn.Module):
    """A learned 1x1 convolution to one channel, without bias. lpips keeps a training-time
    dropout at index 0 of ``model``; its weight is ``model.1.weight``, and so is this one's."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.ModuleDict({"1": nn.Conv2d(channels, 1, 1, bias=False)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model["1"](x)


class LPIPS(PerceptualNet):
    """LPIPS v0.1 on one of :data:`NETS`; untrained until :func:`load_lpips` (or a
    ``load_state_dict`` of the lpips package's layout) fills it. ``forward(x, y)`` takes float
    ``N x 3 x H x W`` images in [-1, 1] like ``lpips.LPIPS``; :meth:`to_input` makes them from uint8."""

    key = "lpips"
    #: peak memory per input pixel of a batch, rounded up from the measured 78 (alex), 861 (vgg)
    #: and 254 (squeeze) bytes (benchmarks/bench_lpips.py --memory, 256 px, float32, CPU)
    BYTES_PER_PIXEL = {"alex": 128, "vgg": 1024, "squeeze": 384}

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net_name = check_net(net)
        spec = NETS[net]
        layers = feature_layers(spec.arch)
        # attribute names are the lpips package's, so that its state dicts load as they are
        self.scaling_layer = _Scaling()
        self.net = nn.Module()
        for k, piece in enumerate(slices(layers, spec.ends), 1):
            self.net.add_module(f"slice{k}", piece)
        for k, channels in enumerate(spec.channels):
            self.add_module(f"lin{k}", _Head(channels))
        self.min_size = min_input_size(layers[:spec.ends[-1]])
        self.bytes_per_pixel = self.BYTES_PER_PIXEL[net]
        self.label = f"LPIPS[{net}]"
        # lpips.im2tensor's scaling, v / (255 / 2) - 1 in float64, then float32
        self.register_buffer("_lut", torch.from_numpy((np.arange(256) / 127.5 - 1.0).astype(np.float32)),
                             persistent=False)

    @property
    def slices(self) -> list[nn.Sequential]:
        return list(self.net.children())

    @property
    def heads(self) -> list[_Head]:
        return [getattr(self, f"lin{k}") for k in range(len(NETS[self.net_name].channels))]

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        return self._lut[images.long()].contiguous()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each slice's output divided by the length of its channel vector (+ 1e-10)."""
        h = self.scaling_layer(x)
        out = []
        for piece in self.slices:
            h = piece(h)
            out.append(h / (torch.sqrt(torch.sum(h ** 2, dim=1, keepdim=True)) + EPS))
        return out

    def compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for head, a, b in zip(self.heads, fa, fb):
            total = total + head((a - b) ** 2).mean([2, 3], keepdim=True)
        return total.flatten()

    # --- weights ----------------------------------------------------------------------------

    def load_published(self, backbone: str | Path, heads: str | Path) -> None:
        """torchvision's backbone file (its ``features.*``) and the v0.1 heads file
        (``lin<k>.model.1.weight``); either refused in one line when it holds something else."""
        arch = NETS[self.net_name].arch
        load_weights_strict(torchvision_view(self.slices), backbone, f"torchvision {arch}", only="features.")
        load_weights_strict(params_view({f"lin{k}": h for k, h in enumerate(self.heads)}), heads,
                            f"LPIPS v0.1 {self.net_name} heads")

    def load_lpips_file(self, path: str | Path) -> None:
        """One state dict in the lpips package's layout (see the module docstring)."""
        name = f"LPIPS {self.net_name}"
        load_package_state(self, path, f"{name} weights (the lpips package's state dict)",
                           f"{name} (the state dict of lpips.LPIPS(net={self.net_name!r}))",
                           prepare=lambda state: _fold_duplicate_heads(state, path, name),
                           check=lambda state: _check_scaling(state, path))


def _check_scaling(state: dict, path) -> None:
    """The scaling layer is fixed in v0.1: other values mean other weights."""
    for key, value in (("scaling_layer.shift", SHIFT), ("scaling_layer.scale", SCALE)):
        if not torch.equal(state[key].float().flatten(), torch.tensor(value, dtype=torch.float32)):
            raise WeightsError(f"{path}: {key} is {state[key].flatten().tolist()}, not LPIPS v0.1's {list(value)}; "
                               "these are not v0.1 weights")


def _fold_duplicate_heads(state: dict, path, name: str) -> dict:
    """lpips registers each head twice (``lin<k>`` and ``lins.<k>``, one tensor): keep one name,
    and refuse a file whose two copies differ."""
    out = {}
    for key, value in state.items():
        if not key.startswith("lins."):
            out[key] = value
            continue
        k, _, rest = key[len("lins."):].partition(".")
        twin = f"lin{k}.{rest}"
        if twin in state and not torch.equal(state[twin], value):
            raise WeightsError(f"{path}: {key} and {twin} differ; the lpips package keeps one tensor under both "
                               f"names, so this is not a saved {name} state dict")
        out.setdefault(twin, value)
    return out


def load_lpips(net: str = "alex", weights: str | Path | None = None, *, device: str = "cpu",
               progress: bool = True) -> LPIPS:
    """LPIPS v0.1 on ``net`` (``alex``, ``vgg`` or ``squeeze``), ready on ``device``.

    ``weights``: one state dict in the lpips package's layout (see the module docstring); None:
    the published backbone and heads, found or downloaded with their pinned SHA-256 and size.
    """
    check_net(net)
    model = LPIPS(net)
    flag = "--lpips-weights"
    if weights is not None:
        path = resolve(None, weights, f"LPIPS {net}", flag)
        model.load_lpips_file(path)
        files = {"lpips": path}
        pinned = {}
    else:
        heads = resolve(HEADS[net], None, f"LPIPS v0.1 {net} heads", flag)
        arch = NETS[net].arch
        backbone = resolve(TORCHVISION_WEIGHTS[arch], None, f"LPIPS {net} backbone (torchvision {arch})", flag,
                           progress=progress)
        model.load_published(backbone, heads)
        files = {"backbone": backbone, "heads": heads}
        pinned = {"backbone": TORCHVISION_WEIGHTS[arch], "heads": HEADS[net]}
    model.weights_sha256, tag = identify(files, pinned)
    model.label = f"LPIPS[{net}:{tag}]" if tag else f"LPIPS[{net}]"
    return model.eval().to(device)


__all__ = ["LPIPS", "NETS", "HEADS", "load_lpips", "check_net"]
