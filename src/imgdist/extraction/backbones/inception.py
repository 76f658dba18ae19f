"""The FID Inception-v3: the TensorFlow graph ``inception-2015-12-05`` as a PyTorch module.

FID, KID, Inception Score and precision/recall numbers in the literature come from this one
network, so it is reproduced layer for layer, including what sets it apart from the Inception-v3
of the paper and of torchvision:

* every convolution is followed by BatchNorm with ``eps = 0.001`` and a ReLU, without conv bias;
* the pooling branch of the 35x35, 17x17 and first 8x8 mixed blocks averages over the pixels
  inside the image only (TensorFlow's ``SAME`` average pooling, ``count_include_pad=False``);
* the pooling branch of the last mixed block (``Mixed_7c``) takes the maximum, not the average;
* the classifier has 1008 outputs (1000 ImageNet classes plus 8 unused ones).

The parameter names follow the published PyTorch port of the graph
(``pt_inception-2015-12-05-6726825d.pth``), so that file loads with ``strict=True``.

The module takes an already normalised ``N x 3 x 299 x 299`` batch; resizing and value scaling are
the :class:`~imgdist.extraction.preprocess.Preprocessing` recipes registered below (one per reference tool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess import Preprocessing
from .registry import register
from .base import Backbone, BackboneSpec, WeightsSpec, conv_activation, load_weights_strict

# ---------------------------------------------------------------------------------------------
# building blocks


class ConvBN(nn.Module):
    """Convolution (no bias) -> BatchNorm(eps=1e-3) -> ReLU; children named ``conv`` and ``bn``."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.bn, nn.Identity):  # folded (Backbone.fuse): one fused call where torch has it
            return conv_activation(self.conv, x, "relu")
        # in place: the BatchNorm output is a fresh tensor, and not allocating another activation
        # per layer saves memory traffic and allocations
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    # 3x3 stride 1 'SAME' average as TensorFlow computes it: padded pixels are not counted
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


def _max_pool_valid(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=2)


class Mixed35(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, cin: int, pool_channels: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_channels, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_same(x))
        return torch.cat((a, b, c, d), 1)


class Reduce35(nn.Module):
    """35x35 -> 17x17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat((a, b, _max_pool_valid(x)), 1)


class Mixed17(nn.Module):
    """17x17 block (Mixed_6b..e) with factorised 7x7 convolutions and an avgpool branch."""

    def __init__(self, cin: int, mid: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, mid, 1)
        self.branch7x7_2 = ConvBN(mid, mid, **row)
        self.branch7x7_3 = ConvBN(mid, 192, **col)
        self.branch7x7dbl_1 = ConvBN(cin, mid, 1)
        self.branch7x7dbl_2 = ConvBN(mid, mid, **col)
        self.branch7x7dbl_3 = ConvBN(mid, mid, **row)
        self.branch7x7dbl_4 = ConvBN(mid, mid, **col)
        self.branch7x7dbl_5 = ConvBN(mid, 192, **row)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg_pool_same(x))
        return torch.cat((a, b, c, d), 1)


class Reduce17(nn.Module):
    """17x17 -> 8x8 (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat((a, b, _max_pool_valid(x)), 1)


class Mixed8(nn.Module):
    """8x8 block (Mixed_7b/c) with split 1x3/3x1 outputs; ``pool`` is 'avg' (7b) or 'max' (7c)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = _avg_pool_same if pool == "avg" else _max_pool_same
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat((self.branch3x3_2a(b), self.branch3x3_2b(b)), 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat((self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)), 1)
        d = self.branch_pool(self.pool(x))
        return torch.cat((a, b, c, d), 1)


# ---------------------------------------------------------------------------------------------
# the network

# which stage (0..3) each output needs; the forward pass stops after the deepest one asked for
_STAGE_OF = {"pool64": 0, "pool192": 1, "pool768": 2, "pool": 3, "logits": 3,
             "logits_unbiased": 3, "spatial": 3, "sfid": 2}
OUTPUTS = tuple(_STAGE_OF)


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


#: channels of ``mixed_6/conv`` the ADM evaluator keeps for sFID (``spatial[..., :7]``)
SFID_CHANNELS = 7


def sfid_features(branch: torch.Tensor) -> torch.Tensor:
    """N x C x H x W (``Mixed_6d.branch1x1``) -> N x (H * W * 7): the first 7 channels in
    (height, width, channel) order, as ADM flattens TensorFlow's NHWC tensor. A (c, h, w) order
    has the same Fréchet distance between two sets computed alike, but not against stored
    ``mu_s`` / ``sigma_s`` (a PyTorch port printed sFID 299 that way).

    Recomputing the branch beside ``Mixed_6d`` costs one 768 -> 192 1x1 convolution at 17 x 17
    (about 0.2 % of the network) and keeps the block's forward unchanged."""
    return branch[:, :SFID_CHANNELS].permute(0, 2, 3, 1).reshape(len(branch), -1)


class FIDInceptionV3(Backbone):
    """The FID Inception-v3 with named outputs.

    ``forward(x, outputs)`` returns a dict with any of

    * ``"pool"``      N x 2048  global average of ``Mixed_7c`` (the FID features)
    * ``"pool64"``    N x 64    global average after the first max pool
    * ``"pool192"``   N x 192   global average after the second max pool
    * ``"pool768"``   N x 768   global average of ``Mixed_6e``
    * ``"logits"``    N x 1008  ``fc(pool)``
    * ``"logits_unbiased"``  N x 1008  ``pool @ fc.weight.T`` without the bias: what the original
      TensorFlow Inception Score code (and torch-fidelity's ``isc``) applies the softmax to
    * ``"spatial"``   list of maps after ``Conv2d_2b_3x3`` (64 x 147 x 147), ``Mixed_5d``
      (288 x 35 x 35), ``Mixed_6e`` (768 x 17 x 17) and ``Mixed_7c`` (2048 x 8 x 8) for 299 inputs
    * ``"sfid"``      N x 2023  the sFID features of the ADM evaluator: ``Mixed_6d.branch1x1`` after
      its BatchNorm and ReLU (the graph's ``mixed_6/conv``, 17 x 17 x 192), first 7 channels,
      flattened in (height, width, channel) order as TensorFlow's NHWC tensor is
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Mixed35(192, 32)
        self.Mixed_5c = Mixed35(256, 64)
        self.Mixed_5d = Mixed35(288, 64)
        self.Mixed_6a = Reduce35(288)
        self.Mixed_6b = Mixed17(768, 128)
        self.Mixed_6c = Mixed17(768, 160)
        self.Mixed_6d = Mixed17(768, 160)
        self.Mixed_6e = Mixed17(768, 192)
        self.Mixed_7a = Reduce17(768)
        self.Mixed_7b = Mixed8(1280, "avg")
        self.Mixed_7c = Mixed8(2048, "max")
        self.fc = nn.Linear(2048, 1008)

    def conv_bn_pairs(self):
        return [(m, "conv", "bn") for m in self.modules() if isinstance(m, ConvBN)]

    def forward(self, x: torch.Tensor, outputs: Iterable[str] = ("pool",)) -> dict:
        wanted = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        unknown = [name for name in wanted if name not in _STAGE_OF]
        if unknown:
            raise ValueError(f"unknown output(s) {unknown}; the inception backbone offers "
                             f"{OUTPUTS}")
        last = max((_STAGE_OF[name] for name in wanted), default=-1)
        out: dict = {}
        spatial: list[torch.Tensor] = []

        if last < 0:
            return out
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        spatial.append(x)
        x = _max_pool_valid(x)
        if "pool64" in wanted:
            out["pool64"] = _global_pool(x)
        if last == 0:
            return out

        x = _max_pool_valid(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        if "pool192" in wanted:
            out["pool192"] = _global_pool(x)
        if last == 1:
            return out

        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        spatial.append(x)
        x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))
        if "sfid" in wanted:
            out["sfid"] = sfid_features(self.Mixed_6d.branch1x1(x))
        x = self.Mixed_6e(self.Mixed_6d(x))
        spatial.append(x)
        if "pool768" in wanted:
            out["pool768"] = _global_pool(x)
        if last == 2:
            return out

        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        spatial.append(x)
        pool = _global_pool(x)
        if "pool" in wanted:
            out["pool"] = pool
        if "logits" in wanted:
            out["logits"] = self.fc(pool)
        if "logits_unbiased" in wanted:
            out["logits_unbiased"] = pool.mm(self.fc.weight.t())
        if "spatial" in wanted:
            out["spatial"] = spatial
        return out


# ---------------------------------------------------------------------------------------------
# weights


def build(weights_path: Path | str | None = None) -> FIDInceptionV3:
    """The network in eval mode with ``.spec`` set; ``weights_path`` None keeps random weights."""
    model = FIDInceptionV3()
    if weights_path is not None:
        load_weights_strict(model, weights_path, "FID Inception")
    model.spec = SPEC
    return model.eval().requires_grad_(False)


SPEC = register(BackboneSpec(
    name="inception",
    feature_dim=2048,
    input_size=299,
    modes={
        # pytorch-fid: ToTensor (v/255), bilinear with half-pixel centres, then 2x-1
        "pytorch-fid": Preprocessing("pytorch-fid", 299, "bilinear", mean=0.5, std=0.5,
                                     pre_scale=1 / 255),
        # torch-fidelity inception-v3-compat / the TensorFlow graph: TF1 bilinear on 0..255
        "tf": Preprocessing("tf", 299, "tf1-bilinear", mean=128.0, std=128.0),
        # clean-fid: Pillow bicubic (antialiased) on float channels, clipped, (x-128)/128
        "clean": Preprocessing("clean", 299, "pil-bicubic", mean=128.0, std=128.0),
    },
    default_mode="pytorch-fid",
    build=build,
    weights=WeightsSpec(
        filename="pt_inception-2015-12-05-6726825d.pth",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        sha256="6726825d",
        license="Apache-2.0 (TensorFlow models)",
    ),
    num_classes=1008,
    feature_layers={64: "pool64", 192: "pool192", 768: "pool768"},
    extra_outputs={"sfid": 2023, "logits_unbiased": 1008},
    memory_mb_per_image=16.0,  # 13.5 measured (batches of 4 and 32, channels-last), plus margin
    description="FID Inception-v3 (TensorFlow 2015-12-05 graph), the network behind published FIDs",
))
