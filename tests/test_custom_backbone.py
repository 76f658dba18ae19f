"""Custom backbones: a user's ``nn.Module`` or TorchScript file as the feature network.

Expected features are computed here by hand: images already at the input size (no resize), scaled
``(x / 255 - mean) / std`` per channel, run through the module, feature maps averaged over H, W.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import imgdist
from imgdist import metrics as M
from imgdist.extraction.backbones.custom import IMAGENET_MEAN, IMAGENET_STD
from imgdist.cli import main
from imgdist.errors import WeightsError

SIZE = 8
pytestmark = pytest.mark.filterwarnings("ignore:.torch\\.jit:DeprecationWarning")


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyNet(nn.Module):
    """Conv -> ReLU -> conv: returns a 6-channel feature map."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 6, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


class VectorNet(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10] * 2.0


class DictNet(nn.Module):
    def forward(self, x):
        return {"pool": x.mean(dim=(2, 3)), "logits": x.flatten(1)[:, :4], "extra": x}


def _images(n, seed, brightness=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120 + brightness, 40, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _by_hand(module, images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = module(x)
    return (out.mean(dim=(2, 3)) if out.ndim == 4 else out).numpy().astype(np.float64)


def test_feature_map_is_average_pooled():
    net = TinyNet().eval()
    backbone = imgdist.custom_backbone(net, input_size=SIZE)
    assert backbone.spec.feature_dim == 6 and backbone.spec.input_size == SIZE
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        out = backbone(x, outputs=("pool", "spatial"))
        fmap = net(x)
    assert out["pool"].shape == (3, 6)
    torch.testing.assert_close(out["pool"], fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(out["spatial"][0], fmap)


def test_extraction_equals_hand_computation():
    net = TinyNet().eval()
    images = _images(5, 1)
    feats = imgdist.extract_features(images, imgdist.custom_backbone(net, input_size=SIZE), progress=False)
    np.testing.assert_allclose(feats.features, _by_hand(net, images), rtol=1e-5, atol=1e-6)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)
    feats = imgdist.extract_features(images, imgdist.custom_backbone(net, input_size=SIZE, mean=mean, std=std),
                                     progress=False)
    np.testing.assert_allclose(feats.features, _by_hand(net, images, mean, std), rtol=1e-5, atol=1e-6)


def test_vector_and_dict_outputs():
    images = _images(3, 2)
    vec = imgdist.extract_features(images, imgdist.custom_backbone(VectorNet(), input_size=SIZE), progress=False)
    assert vec.features.shape == (3, 10)
    np.testing.assert_allclose(vec.features, _by_hand(VectorNet(), images), rtol=1e-6, atol=1e-6)
    backbone = imgdist.custom_backbone(DictNet(), input_size=SIZE)
    assert backbone.spec.feature_dim == 3
    out = backbone(torch.zeros(2, 3, SIZE, SIZE), outputs=("pool",))
    assert set(out) == {"pool"}


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_file_gives_the_same_features(tmp_path, how):
    net = TinyNet(seed=3).eval()
    path = tmp_path / f"net_{how}.pt"
    compiled = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.zeros(1, 3, SIZE, SIZE))
    compiled.save(str(path))
    images = _images(4, 5)
    from_file = imgdist.custom_backbone(path, input_size=SIZE)
    from_module = imgdist.custom_backbone(net, input_size=SIZE)
    assert from_file.spec.feature_dim == 6
    a = imgdist.extract_features(images, from_file, progress=False)
    b = imgdist.extract_features(images, from_module, progress=False)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.features, _by_hand(net, images), rtol=1e-5, atol=1e-6)
    assert str(path) in from_file.spec.description
    assert a.provenance.weights_sha256 == b.provenance.weights_sha256  # same weights, same fingerprint


@pytest.mark.parametrize("content", [b"", b"definitely not a torchscript archive\n" * 20, None])
def test_bad_file_is_a_one_line_weights_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        imgdist.custom_backbone(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "TorchScript" in message


def test_a_plain_state_dict_is_refused(tmp_path):
    path = tmp_path / "state.pth"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(WeightsError, match="TorchScript"):
        imgdist.custom_backbone(path)


def test_provenance_names_the_custom_backbone():
    images = _images(6, 7)
    net = TinyNet(seed=1).eval()
    feats = imgdist.extract_features(images, imgdist.custom_backbone(net, input_size=SIZE, name="tiny"),
                                     progress=False)
    prov = feats.provenance
    assert prov.backbone == "tiny" and prov.resize_mode == "custom" and prov.feature_layer == "pool"
    assert feats.stats.provenance == prov
    other = imgdist.extract_features(images, imgdist.custom_backbone(TinyNet(seed=2).eval(), input_size=SIZE,
                                                                     name="tiny"), progress=False)
    assert other.provenance.weights_sha256 != prov.weights_sha256  # other weights, other fingerprint
    with pytest.raises(imgdist.ProvenanceError, match="weights_sha256"):
        feats.stats.frechet_distance(other.stats)


def test_evaluate_with_custom_backbone():
    net = TinyNet().eval()
    real, fake = _images(40, 1), _images(40, 2, brightness=30)
    result = imgdist.evaluate(real, fake, metrics="fid,kid", backbone=imgdist.custom_backbone(net, input_size=SIZE),
                              kid_subsets=5, kid_subset_size=20, progress=False)
    xr, xf = _by_hand(net, real), _by_hand(net, fake)
    assert result["fid"] == pytest.approx(M.fid_from_features(xr, xf), rel=1e-4)
    assert result.labels == {"fid": "FD[custom]", "kid": "KD[custom]"}
    assert result.provenance.backbone == "custom"


def test_weights_beside_a_built_backbone_are_refused(tmp_path):
    # they would be ignored, and the result would look as if they had been used
    images = _images(6, 7)
    with pytest.raises(imgdist.ImgdistError, match=r"weights \(--weights\) other\.pth: the backbone tiny is "
                                                   r"already built and carries its own weights"):
        imgdist.extract_features(images, imgdist.custom_backbone(TinyNet().eval(), input_size=SIZE, name="tiny"),
                                 weights="other.pth", progress=False)


def test_cli_with_torchscript_backbone(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "cache"))
    from PIL import Image

    net = TinyNet().eval()
    path = tmp_path / "tiny.pt"
    torch.jit.script(net).save(str(path))
    real, fake = _images(30, 1), _images(30, 2, brightness=30)
    for name, images in (("real", real), ("fake", fake)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img).save(tmp_path / name / f"{i:02d}.png")
    code = main(["eval", str(tmp_path / "real"), str(tmp_path / "fake"), "--backbone", str(path),
                 "--input-size", str(SIZE), "--metrics", "fid", "--json", "--no-progress", "--no-cache",
                 "--workers", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert list(data["metrics"]) == ["FD[custom:tiny.pt]"]
    expected = M.fid_from_features(_by_hand(net, real), _by_hand(net, fake))
    assert data["metrics"]["FD[custom:tiny.pt]"]["value"] == pytest.approx(expected, rel=1e-4)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    code = main(["eval", str(tmp_path / "real"), str(tmp_path / "fake"), "--backbone", str(tmp_path / "junk.pt"),
                 "--no-progress", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "junk.pt" in err
