"""DISTS (Ding, Ma, Wang, Simoncelli, "Image Quality Assessment: Unifying Structure and Texture
Similarity", IEEE TPAMI 2020), as the ``DISTS_pytorch`` package (``dists-pytorch`` 0.1) computes
``DISTS()(x, y)`` on inputs in [0, 1].

For each image: ImageNet normalisation, then torchvision's VGG16 feature stack with each 2x2 max
pool replaced by an L2 pooling (the square root of a 3x3 Hanning-window blur of the squares,
stride 2, padding 1: ``sqrt(conv(x^2) + 1e-12)``), read after relu1_2, relu2_2, relu3_3, relu4_3
and relu5_3; the input image itself is a sixth "layer" (3 channels). For a pair, per channel of
every layer, with means, variances and the covariance taken over the map's positions (the
covariance as E[xy] - E[x]E[y], as the package computes it):

* structure/luminance term ``S1 = (2 mx my + c1) / (mx^2 + my^2 + c1)``;
* texture term ``S2 = (2 cov + c2) / (vx + vy + c2)``, ``c1 = c2 = 1e-6``;

and ``DISTS = 1 - sum(alpha S1 + beta S2)`` over all 1,475 channels, with the learned ``alpha`` and
``beta`` divided by their joint sum. Identical images give 0 (up to rounding).

Images enter as torchvision's ``ToTensor`` makes them (``v / 255`` in float32), at their own
size: the package's ``prepare_image`` resizes to 256 px only when asked to, and imgdist does not.

Weights: ``weights=PATH``, one state dict in the package's layout (``torch.save(DISTS().state_dict(),
PATH)``: ``stage<k>.<index>.*``, the pools' ``filter``, ``mean``, ``std``, ``alpha``, ``beta``),
results then print as ``DISTS[<8 hex digits>]``; by default the published ones, ``DISTS``:
torchvision's VGG16 file and the package's ``weights.pt`` (``alpha``, ``beta``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import WeightsError
from ..backbones.base import WeightsSpec, load_weights_strict
from ..backbones.torchvision_features import WEIGHTS as TORCHVISION_WEIGHTS
from ..backbones.torchvision_features import feature_layers, min_input_size, slices, torchvision_view
from .base import PerceptualNet
from .weights import identify, load_package_state, params_view, resolve

#: the VGG16 indices where the five stages end (after relu1_2 ... relu5_3), as in LPIPS's vgg
ENDS = (4, 9, 16, 23, 30)
#: channels of the six compared "layers": the image, then the five stages
CHANNELS = (3, 64, 128, 256, 512, 512)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
C1 = C2 = 1e-6

#: the package's learned alpha and beta (1 x 1475 x 1 x 1 each), as the dists-pytorch 0.1 wheel
#: ships them (SHA-256 and size measured there; torchmetrics ships a byte-identical copy)
WEIGHTS = WeightsSpec(
    filename="dists-weights.pt", url="https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt",
    sha256="f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218", size=12288,
    package_path="DISTS_pytorch/weights.pt", license="MIT (DISTS)")


def hanning_filter() -> torch.Tensor:
    """The L2 pooling's 3x3 window: the inner three values of a 5-point Hanning window (0.5, 1,
    0.5), outer product, divided by its sum: [1, 2, 1]^T [1, 2, 1] / 16 (exact in float32)."""
    a = torch.tensor([1.0, 2.0, 1.0])
    return (a[:, None] * a[None, :]) / 16.0


class L2Pooling(nn.Module):
    """``sqrt(depthwise_conv(x^2, window) + 1e-12)``, window 3x3, stride 2, padding 1."""

    kernel_size, stride, padding = 3, 2, 1

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filter", hanning_filter()[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x ** 2, self.filter, stride=self.stride, padding=self.padding, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(PerceptualNet):
    """DISTS; untrained until :func:`load_dists` (or a ``load_state_dict`` of the package's
    layout) fills it. ``forward(x, y)`` takes float ``N x 3 x H x W`` images in [0, 1]."""

    key = "dists"
    bytes_per_pixel = 1024  # rounded up from the measured 780 (benchmarks/bench_lpips.py --memory)

    def __init__(self):
        super().__init__()
        layers = feature_layers("vgg16", pool=L2Pooling)
        # attribute names are the package's, so that its state dicts load as they are
        for k, piece in enumerate(slices(layers, ENDS), 1):
            self.add_module(f"stage{k}", piece)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, -1, 1, 1))
        self.alpha = nn.Parameter(torch.zeros(1, sum(CHANNELS), 1, 1), requires_grad=False)
        self.beta = nn.Parameter(torch.zeros(1, sum(CHANNELS), 1, 1), requires_grad=False)
        self.min_size = min_input_size(layers[:ENDS[-1]])
        self.label = "DISTS"

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"stage{k}") for k in range(1, len(ENDS) + 1)]

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous().float().div(255)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.mean) / self.std
        out = [x]
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        total = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / total, CHANNELS, dim=1)
        beta = torch.split(self.beta / total, CHANNELS, dim=1)
        structure = texture = 0
        for k, (x, y) in enumerate(zip(fa, fb)):
            mx, my = x.mean([2, 3], keepdim=True), y.mean([2, 3], keepdim=True)
            s1 = (2 * mx * my + C1) / (mx ** 2 + my ** 2 + C1)
            structure = structure + (alpha[k] * s1).sum(1, keepdim=True)
            vx = ((x - mx) ** 2).mean([2, 3], keepdim=True)
            vy = ((y - my) ** 2).mean([2, 3], keepdim=True)
            cov = (x * y).mean([2, 3], keepdim=True) - mx * my
            s2 = (2 * cov + C2) / (vx + vy + C2)
            texture = texture + (beta[k] * s2).sum(1, keepdim=True)
        return (1 - (structure + texture)).flatten()

    # --- weights ----------------------------------------------------------------------------

    def load_published(self, backbone: str | Path, alpha_beta: str | Path) -> None:
        """torchvision's VGG16 file (its ``features.*``) and the package's ``weights.pt``."""
        load_weights_strict(torchvision_view(self.stages), backbone, "torchvision vgg16", only="features.")
        load_weights_strict(params_view({}, {"alpha": self.alpha, "beta": self.beta}), alpha_beta,
                            "DISTS alpha/beta")

    def load_dists_file(self, path: str | Path) -> None:
        """One state dict in the package's layout (see the module docstring)."""
        load_package_state(self, path, "DISTS weights (the DISTS_pytorch package's state dict)",
                           "DISTS (the state dict of DISTS_pytorch's DISTS())",
                           check=lambda state: self._check_fixed(state, path))

    def _check_fixed(self, state: dict, path) -> None:
        """The normalisation and the blur filters are DISTS's constants: other values mean other weights."""
        fixed = {key: value for key, value in self.state_dict().items()
                 if key in ("mean", "std") or key.endswith(".filter")}
        for key, value in fixed.items():
            if not torch.equal(state[key].float(), value):
                raise WeightsError(f"{path}: {key} differs from DISTS's fixed value; these are not DISTS weights")


def load_dists(weights: str | Path | None = None, *, device: str = "cpu", progress: bool = True) -> DISTS:
    """DISTS, ready on ``device``. ``weights``: one state dict in the package's layout; None: the
    published VGG16 backbone and alpha/beta, found or downloaded with their pinned SHA-256 and size."""
    model = DISTS()
    flag = "--dists-weights"
    if weights is not None:
        path = resolve(None, weights, "DISTS", flag)
        model.load_dists_file(path)
        files, pinned = {"dists": path}, {}
    else:
        alpha_beta = resolve(WEIGHTS, None, "DISTS alpha/beta", flag)
        backbone = resolve(TORCHVISION_WEIGHTS["vgg16"], None, "DISTS backbone (torchvision vgg16)", flag,
                           progress=progress)
        model.load_published(backbone, alpha_beta)
        files = {"backbone": backbone, "alpha_beta": alpha_beta}
        pinned = {"backbone": TORCHVISION_WEIGHTS["vgg16"], "alpha_beta": WEIGHTS}
    model.weights_sha256, tag = identify(files, pinned)
    model.label = f"DISTS[{tag}]" if tag else "DISTS"
    return model.eval().to(device)


__all__ = ["DISTS", "WEIGHTS", "load_dists"]
