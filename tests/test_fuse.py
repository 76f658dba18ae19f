"""BatchNorm folded into the preceding convolution, for inference (``Backbone.fuse``).

References: the same network unfused (features and Fréchet distance), and for the folding
arithmetic itself ``bn(conv(x))`` in float64.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from imgdist.extraction.backbones import get_spec, load_backbone
from imgdist.extraction.backbones.base import fold_batchnorm
from imgdist.extraction.backbones.inception import ConvBN
from imgdist.extraction.features import FeatureExtractor
from imgdist.metrics import fid_from_features
from stand_in_weights import parity_images, save_stand_in

pytestmark = pytest.mark.usefixtures("one_thread")


def test_folding_is_bn_of_conv_in_float64():
    torch.manual_seed(0)
    parent = nn.Module()
    parent.conv = nn.Conv2d(3, 5, 3, bias=True).double()
    parent.bn = nn.BatchNorm2d(5, eps=1e-3).double().eval()
    with torch.no_grad():
        parent.bn.running_mean.normal_(0, 0.3)
        parent.bn.running_var.uniform_(0.2, 3.0)
        parent.bn.weight.uniform_(0.5, 1.5)
        parent.bn.bias.normal_(0, 0.5)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    expected = parent.bn(parent.conv(x))
    fold_batchnorm(parent, "conv", "bn")
    assert isinstance(parent.bn, nn.Identity)
    torch.testing.assert_close(parent.conv(x), expected, rtol=1e-12, atol=1e-12)
    fold_batchnorm(parent, "conv", "bn")  # a second time changes nothing
    torch.testing.assert_close(parent.conv(x), expected, rtol=1e-12, atol=1e-12)


def _features(model, prep, images):
    with torch.inference_mode():
        out = model(prep(images).contiguous(memory_format=torch.channels_last), outputs=("pool", "logits"))
    return out["pool"].double().numpy(), out["logits"].double().numpy()


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    return save_stand_in(tmp_path_factory.mktemp("w") / "stand_in.pth")


@pytest.mark.parametrize("name", ["inception", "efficientnet-lite0"])
def test_fused_network_differs_by_rounding_only(name, inception_weights):
    weights = inception_weights if name == "inception" else None
    plain = load_backbone(name, weights)
    fused = copy.deepcopy(plain).fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == len(list(plain.conv_bn_pairs()))
    prep = get_spec(name).preprocessing()
    images = parity_images()
    f0, l0 = _features(plain, prep, images)
    f1, l1 = _features(fused, prep, images)
    assert np.abs(f1 - f0).max() <= 5e-6 * np.abs(f0).max()
    assert np.abs(l1 - l0).max() <= 5e-6 * np.abs(l0).max()
    assert (l1.argmax(1) == l0.argmax(1)).all()
    assert np.abs(f1 - f0).max() > 0  # really another computation


def test_fused_fd_moves_by_less_than_1e6_relative(tmp_path):
    """The issue's bar for a default: FD on the offline backbone's real ImageNet weights."""
    rng = np.random.default_rng(0)
    base = parity_images()
    real = [np.clip(im.astype(float) + rng.normal(0, 8, im.shape), 0, 255).astype(np.uint8)
            for im in base for _ in range(3)]
    fake = [np.clip(im.astype(float) * 0.8 + rng.normal(0, 20, im.shape), 0, 255).astype(np.uint8)
            for im in base for _ in range(3)]
    fds = []
    for fuse in (False, True):
        ex = FeatureExtractor("efficientnet-lite0", progress=False, fuse=fuse)
        assert any(isinstance(m, nn.BatchNorm2d) for m in ex.model.modules()) is not fuse
        fds.append(fid_from_features(ex.embed_images(real)[0], ex.embed_images(fake)[0]))
    assert abs(fds[1] - fds[0]) <= 1e-6 * fds[0]


def test_networks_without_batchnorm_are_unchanged():
    model = load_backbone("pixels")
    assert list(model.conv_bn_pairs()) == [] and model.fuse() is model


def test_in_place_activations_leave_spatial_outputs_intact(inception_weights):
    """The spatial maps handed out must be the layers' outputs, not overwritten by later layers."""
    model = load_backbone("inception", inception_weights).fuse()
    x = get_spec("inception").preprocessing()(parity_images()[:2])
    with torch.inference_mode():
        spatial = model(x, outputs=("spatial",))["spatial"]
        first = model.Conv2d_2b_3x3(model.Conv2d_2a_3x3(model.Conv2d_1a_3x3(x)))
    torch.testing.assert_close(spatial[0], first, rtol=0, atol=0)
    assert all(isinstance(m.bn, nn.Identity) for m in model.modules() if isinstance(m, ConvBN))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_conv_activation_gives_the_bits_of_conv_then_activation(dtype, activation, monkeypatch):
    import imgdist.extraction.backbones.base as base

    torch.manual_seed(1)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2).to(dtype).eval()
    x = (torch.randn(3, 8, 17, 15) * 3).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = conv(x)
        expected = y.relu() if activation == "relu" else y.clamp(0, 6)
        got = base.conv_activation(conv, x, activation)
        monkeypatch.setattr(base, "_POINTWISE", None)  # a torch without the fused op
        monkeypatch.setattr(base, "_fused_ok", None)
        fallback = base.conv_activation(conv, x, activation)
    assert torch.equal(got, expected) and torch.equal(fallback, expected)


def test_the_fused_call_is_used_where_torch_has_it():
    import imgdist.extraction.backbones.base as base

    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch without oneDNN")
    assert base._fused_conv_works()
