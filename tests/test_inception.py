"""The FID Inception-v3 backbone: architecture, weight loading, and parity with the reference tools.

Reference values come from the tools themselves (``tests/fixtures/inception_peers.npz``, written
by ``tools/peers/make_inception_fixtures.py`` with pytorch-fid 0.3.0, torch-fidelity 0.4.0 and
clean-fid 0.1.35 running on the same stand-in weights and images), never from imgdist.

Feature comparisons use the relative error ``max |ours - theirs| / max |theirs|`` over the whole
array (all images, all dimensions), tolerance 1e-5. The stand-in network separates the test
images by several percent of the feature norm, so the tolerance is far below any real change.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from imgdist.extraction import backbones
from imgdist.extraction.backbones import inception
from imgdist.errors import WeightsError
from imgdist.extraction.preprocess import Preprocessing
from stand_in_weights import (KEYS_FILE, inception_keys, inception_stand_in_state_dict,
                              parity_images, save_stand_in)

FIXTURE = KEYS_FILE.parent / "inception_peers.npz"
TOL = 1e-5


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def peers():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def images():
    return parity_images()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return save_stand_in(tmp_path_factory.mktemp("weights") / "stand_in.pth")


@pytest.fixture(scope="module")
def model(weights_file):
    return inception.build(weights_file)


@pytest.fixture(scope="module")
def outputs(model, images):
    """Every output for every mode, computed once: {mode: {name: array or list}}."""
    names = ("pool", "pool64", "pool192", "pool768", "logits", "logits_unbiased", "spatial")
    result = {}
    with torch.no_grad():
        for mode in ("pytorch-fid", "tf", "clean"):
            out = model(inception.SPEC.preprocessing(mode)(images), names)
            result[mode] = {k: (v if k == "spatial" else v.numpy()) for k, v in out.items()}
    return result


# --------------------------------------------------------------------------------------------
# (a) architecture and weights


def test_state_dict_matches_pytorch_fid_keys_and_shapes():
    expected = [(name, shape) for name, shape, _ in inception_keys()]
    ours = [(name, tuple(t.shape)) for name, t in inception.FIDInceptionV3().state_dict().items()]
    assert ours == expected
    assert len(expected) == 566


def test_fixtures_were_made_from_these_weights_and_images(peers, images):
    """The npz holds what the peers computed on exactly the tensors and images made here."""
    h = hashlib.sha256()
    for name, tensor in inception_stand_in_state_dict().items():
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    assert str(peers["weights_sha256"]) == h.hexdigest()
    h = hashlib.sha256()
    for image in images:
        h.update(repr(image.shape).encode())
        h.update(image.tobytes())
    assert str(peers["images_sha256"]) == h.hexdigest()
    versions = json.loads(str(peers["versions"]))
    assert versions["pytorch-fid"] == "0.3.0" and versions["torch-fidelity"] == "0.4.0"


def test_build_loads_weights_strictly_in_eval_mode(model):
    state = inception_stand_in_state_dict()
    ours = model.state_dict()
    for name in ("Conv2d_1a_3x3.conv.weight", "Mixed_6c.branch7x7dbl_4.bn.running_var", "fc.bias"):
        assert torch.equal(ours[name], state[name])
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.spec is inception.SPEC


def test_build_without_weights_gives_random_network():
    model = inception.build(None)
    assert not model.training and model.spec.name == "inception"


def test_missing_key_is_a_weights_error_naming_file_and_key(tmp_path):
    state = inception_stand_in_state_dict()
    del state["Mixed_5b.branch5x5_2.conv.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        inception.build(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "Mixed_5b.branch5x5_2.conv.weight" in message
    assert "missing" in message


def test_unexpected_and_misshapen_keys_are_weights_errors(tmp_path):
    state = inception_stand_in_state_dict()
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="unexpected.*AuxLogits.fc.weight"):
        inception.build(path)

    state = inception_stand_in_state_dict()
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's 1000-class head
    torch.save(state, path)
    with pytest.raises(WeightsError, match="wrong shape.*fc.weight"):
        inception.build(path)


def test_not_a_weights_file_is_a_weights_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="junk.pth"):
        inception.build(path)
    with pytest.raises(WeightsError, match="no such file"):
        inception.build(tmp_path / "absent.pth")


def test_files_without_batchnorm_counters_load(tmp_path):
    """Files saved by old PyTorch versions lack ``num_batches_tracked``; they still load."""
    state = {k: v for k, v in inception_stand_in_state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    model = inception.build(path)
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])


# --------------------------------------------------------------------------------------------
# stand-in weights are a meaningful test network


def test_stand_in_weights_are_deterministic_and_sane(outputs):
    a, b = inception_stand_in_state_dict(0), inception_stand_in_state_dict(0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], inception_stand_in_state_dict(1)["fc.weight"])

    pool = outputs["pytorch-fid"]["pool"]
    assert np.isfinite(pool).all()
    assert 0.1 < pool.mean() < 10 and pool.max() < 100
    norms = np.linalg.norm(pool, axis=1)
    dists = np.linalg.norm(pool[:, None] - pool[None], axis=-1) / norms.mean()
    off_diagonal = dists[~np.eye(len(pool), dtype=bool)]
    assert off_diagonal.min() > 0.01  # different images: clearly different features (1000 x TOL)
    logits = outputs["pytorch-fid"]["logits"]
    assert 0.3 < logits.std() < 10


# --------------------------------------------------------------------------------------------
# (b) pytorch-fid mode against pytorch-fid


@pytest.mark.parametrize("ours,theirs", [("pool", "ptfid_pool"), ("pool64", "ptfid_pool64"),
                                         ("pool192", "ptfid_pool192"),
                                         ("pool768", "ptfid_pool768")])
def test_pytorch_fid_mode_matches_pytorch_fid(outputs, peers, ours, theirs):
    assert rel_err(outputs["pytorch-fid"][ours], peers[theirs]) < TOL


# --------------------------------------------------------------------------------------------
# (c) tf mode against torch-fidelity's inception-v3-compat


@pytest.mark.parametrize("ours,theirs", [("pool", "tfid_2048"), ("pool64", "tfid_64"),
                                         ("pool192", "tfid_192"), ("pool768", "tfid_768"),
                                         ("logits", "tfid_logits"),
                                         ("logits_unbiased", "tfid_logits_unbiased")])
def test_tf_mode_matches_torch_fidelity(outputs, peers, ours, theirs):
    assert rel_err(outputs["tf"][ours], peers[theirs]) < TOL


# --------------------------------------------------------------------------------------------
# (d) clean mode against clean-fid


def test_clean_mode_matches_clean_fid(outputs, peers):
    assert rel_err(outputs["clean"]["pool"], peers["clean_pool"]) < TOL


def test_modes_really_differ(outputs, peers):
    """The three recipes give measurably different features: the fixtures can tell them apart."""
    for a, b in (("pytorch-fid", "tf"), ("pytorch-fid", "clean"), ("tf", "clean")):
        assert rel_err(outputs[a]["pool"], outputs[b]["pool"]) > 100 * TOL
    assert rel_err(outputs["tf"]["pool"], peers["ptfid_pool"]) > 100 * TOL


# --------------------------------------------------------------------------------------------
# the other outputs


def test_logits_are_the_fc_layer_on_pool(model, outputs):
    out = outputs["tf"]
    w, b = model.fc.weight.double().numpy(), model.fc.bias.double().numpy()
    pool = out["pool"].astype(np.float64)
    assert rel_err(out["logits"], pool @ w.T + b) < TOL
    assert rel_err(out["logits_unbiased"], pool @ w.T) < TOL


def test_spatial_maps(outputs):
    out = outputs["pytorch-fid"]
    maps = out["spatial"]
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 147, 147), (288, 35, 35), (768, 17, 17),
                                                  (2048, 8, 8)]
    assert rel_err(maps[3].mean(dim=(2, 3)).numpy(), out["pool"]) < TOL
    assert rel_err(maps[2].mean(dim=(2, 3)).numpy(), out["pool768"]) < TOL


def test_forward_stops_after_the_deepest_requested_block(model, images, outputs):
    ran = []
    hooks = [getattr(model, name).register_forward_hook(lambda *_, name=name: ran.append(name))
             for name in ("Conv2d_3b_1x1", "Mixed_5b", "Mixed_7a")]
    try:
        x = inception.SPEC.preprocessing("pytorch-fid")(images[:1])
        with torch.no_grad():
            out = model(x, ("pool64",))
            assert list(out) == ["pool64"] and ran == []
            out = model(x, ("pool192",))
            assert list(out) == ["pool192"] and ran == ["Conv2d_3b_1x1"]
            out = model(x, ("pool768",))
            assert ran[-1] == "Mixed_5b" and "Mixed_7a" not in ran
    finally:
        for hook in hooks:
            hook.remove()
    assert rel_err(out["pool768"].numpy(), outputs["pytorch-fid"]["pool768"][:1]) < TOL


def test_unknown_output_is_refused(model):
    with pytest.raises(ValueError, match="unknown output"):
        model(torch.zeros(1, 3, 299, 299), ("pool", "features"))


# --------------------------------------------------------------------------------------------
# (e) the spec


def test_spec_registration_and_fields():
    spec = inception.SPEC
    assert backbones.get_spec("inception") is spec
    assert (spec.feature_dim, spec.input_size, spec.num_classes) == (2048, 299, 1008)
    assert spec.default_mode == "pytorch-fid" and spec.has_logits
    assert spec.feature_layers == {64: "pool64", 192: "pool192", 768: "pool768"}
    assert spec.output_for_dim(None) == spec.output_for_dim(2048) == "pool"
    assert spec.output_for_dim(768) == "pool768"
    assert spec.modes == {
        "pytorch-fid": Preprocessing("pytorch-fid", 299, "bilinear", 0.5, 0.5, 1 / 255),
        "tf": Preprocessing("tf", 299, "tf1-bilinear", 128, 128),
        "clean": Preprocessing("clean", 299, "pil-bicubic", 128, 128),
    }
    w = spec.weights
    assert w.filename == "pt_inception-2015-12-05-6726825d.pth"
    assert w.url.endswith("/" + w.filename) and w.url.startswith("https://github.com/mseitzer/")
    assert w.filename.split("-")[-1].startswith(w.sha256)


def test_mode_value_scaling_on_a_299_image(images):
    """No resize at 299: the modes reduce to their documented value maps."""
    image = images[1]
    assert image.shape == (299, 299, 3)
    v = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    spec = inception.SPEC
    torch.testing.assert_close(spec.preprocessing("pytorch-fid")([image]).double(),
                               2 * (v / 255) - 1, rtol=0, atol=1e-6)
    for mode in ("tf", "clean"):
        torch.testing.assert_close(spec.preprocessing(mode)([image]).double(), (v - 128) / 128,
                                   rtol=0, atol=1e-6)
