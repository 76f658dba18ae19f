"""LPIPS and DISTS against the reference packages, and how their weights are read.

The references are the ``lpips`` 0.1.4 and ``DISTS_pytorch`` (dists-pytorch 0.1) packages' own
numbers (``tools/peers/make_lpips_fixtures.py``): stand-in torchvision backbones
(``tests/lpips_stand_in.py``), the packages' real v0.1 heads and alpha/beta, 30 image pairs in
three sizes. imgdist reads the same tensors from files written in the packages' layouts.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

import lpips_stand_in as S
from imgdist.errors import ImgdistError, WeightsError
from imgdist.extraction.backbones import torchvision_features as TV
from imgdist.extraction.perceptual import dists as dists_module
from imgdist.extraction.perceptual import lpips as lpips_module
from imgdist.extraction.perceptual.base import distances_to, pair_distances
from imgdist.extraction.perceptual.dists import load_dists
from imgdist.extraction.perceptual.lpips import LPIPS, load_lpips

pytestmark = pytest.mark.usefixtures("one_thread")

NETS = ("alex", "vgg", "squeeze")
RTOL = 1e-5


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Each network's stand-in weights as one state dict in its package's layout."""
    root = tmp_path_factory.mktemp("lpips")
    out = {}
    for net in NETS:
        out[net] = root / f"lpips_{net}.pth"
        torch.save(S.lpips_state_dict(net), out[net])
    out["dists"] = root / "dists.pth"
    torch.save(S.dists_state_dict(), out["dists"])
    return out


@pytest.fixture(scope="module")
def models(files):
    loaded = {net: load_lpips(net, files[net]) for net in NETS}
    loaded["dists"] = load_dists(files["dists"])
    return loaded


def _batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def _relative(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|ours - reference| / |reference|; where the reference is 0, |ours| itself."""
    diff = np.abs(ours - reference)
    return np.where(reference == 0, diff, diff / np.where(reference == 0, 1.0, np.abs(reference)))


def _worst(model, key: str) -> tuple[float, int]:
    """The largest relative difference over the pairs of different images (identical images are
    at 0 here, and at 0 or float32 rounding noise in the packages, DISTS's 1 - (sum = 1 - 1 ulp):
    compared absolutely)."""
    worst, count = 0.0, 0
    for _, a, b, reference in S.parity_pairs():
        ours = pair_distances(model, _batch(a), _batch(b)).double().numpy()
        same = np.all(a == b, axis=(1, 2, 3))
        assert np.all(ours[same] == 0) and np.all(np.abs(reference[key][same]) <= 2 * np.finfo(np.float32).eps)
        worst = max(worst, float(_relative(ours[~same], reference[key][~same]).max()))
        count += int((~same).sum())
    return worst, count


@pytest.mark.parametrize("net", NETS)
def test_lpips_parity(models, net):
    worst, count = _worst(models[net], f"lpips_{net}")
    print(f"LPIPS {net}: {count} pairs, max relative difference {worst:.2e}")
    assert count >= 20
    assert worst <= RTOL, worst


def test_dists_parity(models):
    worst, count = _worst(models["dists"], "dists")
    print(f"DISTS: {count} pairs, max relative difference {worst:.2e}")
    assert count >= 20
    assert worst <= RTOL, worst


def test_one_pair_at_a_time_is_the_reference_exactly(models):
    """One pair through the network at a time, as the packages were run: DISTS to the bit, LPIPS
    to float32 rounding (its scaling layer runs on both images here as one batch)."""
    _, a, b, reference = S.parity_pairs()[0]
    for key, model in (("dists", models["dists"]), ("lpips_squeeze", models["squeeze"])):
        with torch.inference_mode():
            ours = np.array([model(model.to_input(_batch(x[None])), model.to_input(_batch(y[None]))).item()
                             for x, y in zip(a, b)])
        if key == "dists":
            assert np.array_equal(ours[reference[key] != 0], reference[key][reference[key] != 0])
        assert _relative(ours, reference[key]).max() <= 1e-6


def test_identical_images_are_at_zero(models):
    _, a, _, _ = S.parity_pairs()[0]
    for model in models.values():
        assert np.all(pair_distances(model, _batch(a), _batch(a.copy())).numpy() == 0)
        assert np.all(distances_to(model, a[0], [a[0], a[0]]) == 0)


def test_one_image_against_many_equals_pairs(models):
    """``distances_to`` runs the first image once and broadcasts it; the pairs run both sides."""
    _, a, b, reference = S.parity_pairs()[1]
    for key, model in (("lpips_alex", models["alex"]), ("dists", models["dists"])):
        many = distances_to(model, a[0], list(b))
        paired = pair_distances(model, _batch(np.repeat(a[:1], len(b), 0)), _batch(b)).double().numpy()
        np.testing.assert_allclose(many, paired, rtol=1e-5, atol=1e-7)
        assert _relative(many[:1], reference[key][:1]).max() <= RTOL


def test_labels_carry_the_file_hash(models, files):
    for net in NETS:
        assert models[net].label == f"LPIPS[{net}:{_sha(files[net])[:8]}]"
        assert models[net].weights_sha256 == {"lpips": _sha(files[net])}
    assert models["dists"].label == f"DISTS[{_sha(files['dists'])[:8]}]"


def test_smallest_sizes():
    """The sizes below which torchvision's networks have no output at the last slice (measured on
    lpips 0.1.4 with torchvision 0.28: 30 fails, 31 works for AlexNet; 15/16 VGG; 16/17 SqueezeNet,
    whose max pools round up)."""
    assert [LPIPS(net).min_size for net in NETS] == [31, 16, 17]
    for net in NETS:
        model = LPIPS(net).eval()
        size = model.min_size
        with torch.inference_mode():
            assert model(torch.zeros(1, 3, size, size + 5), torch.ones(1, 3, size, size + 5)).shape == (1,)
            with pytest.raises(RuntimeError):
                model(torch.zeros(1, 3, size - 1, size + 5), torch.zeros(1, 3, size - 1, size + 5))
        with pytest.raises(ImgdistError, match=f"at least {size}x{size} pixels"):
            model.check_size(size - 1, 100, "tiny.png")


def test_torchvision_state_dict_layout():
    """The rebuilt stacks hold exactly torchvision's ``features`` tensors (names and shapes read
    from torchvision by the fixture script)."""
    for arch in TV.ARCHS:
        model = TV.torchvision_view(TV.slices(TV.feature_layers(arch), [len(TV.feature_layers(arch))]))
        expected = {key: shape for key, shape in S.keys()["torchvision"][arch]}
        assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected


# ------------------------------------------------------------------ the published files' route

@pytest.fixture
def published(tmp_path, monkeypatch):
    """Write a state dict into the cache under a published file's name; returns that file's spec
    with its pinned SHA-256 and size made the written file's (offline: nothing is downloaded)."""
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    folder = tmp_path / "cache" / "weights"
    folder.mkdir(parents=True)

    def place(spec, state):
        path = folder / spec.filename
        torch.save(state, path)
        return dataclasses.replace(spec, sha256=_sha(path), size=path.stat().st_size, package_path=None)

    return place


def test_published_route_lpips(published, monkeypatch):
    """torchvision's file (classifier included, left unread) and the v0.1 heads file."""
    state = {**S.stand_in_features("squeezenet1_1"), "classifier.1.weight": torch.zeros(1000, 512, 1, 1),
             "classifier.1.bias": torch.zeros(1000)}
    monkeypatch.setitem(TV.WEIGHTS, "squeezenet1_1", published(TV.WEIGHTS["squeezenet1_1"], state))
    monkeypatch.setitem(lpips_module.HEADS, "squeeze", published(lpips_module.HEADS["squeeze"],
                                                                 S.lpips_heads("squeeze")))
    model = load_lpips("squeeze")
    assert model.label == "LPIPS[squeeze]" and set(model.weights_sha256) == {"backbone", "heads"}
    _, a, b, reference = S.parity_pairs()[0]
    ours = pair_distances(model, _batch(a), _batch(b)).double().numpy()
    assert _relative(ours, reference["lpips_squeeze"]).max() <= RTOL


def test_published_route_dists(published, monkeypatch):
    """torchvision's VGG16 file and the package's weights.pt (alpha and beta)."""
    state = S.dists_state_dict()
    monkeypatch.setitem(TV.WEIGHTS, "vgg16", published(TV.WEIGHTS["vgg16"], S.stand_in_features("vgg16")))
    monkeypatch.setattr(dists_module, "WEIGHTS", published(dists_module.WEIGHTS,
                                                           {"alpha": state["alpha"], "beta": state["beta"]}))
    model = load_dists()
    assert model.label == "DISTS"
    _, a, b, reference = S.parity_pairs()[2]
    assert _relative(pair_distances(model, _batch(a), _batch(b)).double().numpy(), reference["dists"]).max() <= RTOL


def test_a_file_other_than_the_pinned_one_is_labelled(published, monkeypatch):
    """A heads file that is not the published one (here: found where the package file would be,
    which is not hash-checked on the way) labels the results with its own hash."""
    monkeypatch.setitem(TV.WEIGHTS, "squeezenet1_1", published(TV.WEIGHTS["squeezenet1_1"],
                                                               S.stand_in_features("squeezenet1_1")))
    heads = S.lpips_heads("squeeze")
    heads["lin0.model.1.weight"] = heads["lin0.model.1.weight"] * 2
    spec = dataclasses.replace(published(lpips_module.HEADS["squeeze"], heads), sha256="0" * 64, size=None)
    monkeypatch.setitem(lpips_module.HEADS, "squeeze", spec)
    monkeypatch.setattr("imgdist.extraction.weights.package_file",
                        lambda s: _cache_path(s) if s.filename == spec.filename else None)
    model = load_lpips("squeeze")
    assert model.label == f"LPIPS[squeeze:{_sha(_cache_path(spec))[:8]}]"


def _cache_path(spec):
    from imgdist.extraction.weights import weights_dir

    return weights_dir() / spec.filename


def test_offline_without_weights_names_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    with pytest.raises(WeightsError) as error:
        load_lpips("alex")
    text = str(error.value)
    assert "LPIPS v0.1 alex heads weights not found (offline" in text and "--lpips-weights PATH" in text
    assert "efficientnet-lite0" not in text and "--weights PATH" not in text.replace("--lpips-weights", "")
    with pytest.raises(WeightsError, match="--dists-weights PATH"):
        load_dists()


# ------------------------------------------------------------------ files that are not the weights

def test_refused_files(files, tmp_path):
    torch.save(S.stand_in_features("alexnet"), tmp_path / "torchvision.pth")
    with pytest.raises(WeightsError, match="not LPIPS alex .* weights: it holds none of the 17 tensors"):
        load_lpips("alex", tmp_path / "torchvision.pth")
    with pytest.raises(WeightsError, match="lpips_squeeze.pth: not LPIPS alex"):
        load_lpips("alex", files["squeeze"])
    state = S.lpips_state_dict("squeeze")
    state["lins.0.model.1.weight"] = state["lins.0.model.1.weight"] * 2
    torch.save(state, tmp_path / "twins.pth")
    with pytest.raises(WeightsError, match="lins.0.model.1.weight and lin0.model.1.weight differ"):
        load_lpips("squeeze", tmp_path / "twins.pth")
    state = S.lpips_state_dict("squeeze")
    state["scaling_layer.scale"] = torch.ones(1, 3, 1, 1)
    torch.save(state, tmp_path / "v00.pth")
    with pytest.raises(WeightsError, match="scaling_layer.scale is .* not LPIPS v0.1's"):
        load_lpips("squeeze", tmp_path / "v00.pth")
    state = S.dists_state_dict()
    state["stage2.4.filter"] = state["stage2.4.filter"] + 1
    torch.save(state, tmp_path / "filter.pth")
    with pytest.raises(WeightsError, match="stage2.4.filter differs from DISTS's fixed value"):
        load_dists(tmp_path / "filter.pth")
    state = S.lpips_state_dict("squeeze")
    state["net.slice1.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match="non-finite"):
        load_lpips("squeeze", tmp_path / "nan.pth")
    with pytest.raises(ImgdistError, match="lpips \\(--lpips\\) 'banana': choose from alex, vgg, squeeze"):
        load_lpips("banana")


def test_dists_fixed_tensors_are_the_packages():
    """The L2 pooling's window, the normalisation: equal to what DISTS_pytorch's state dict holds."""
    reference = S.dists_state_dict()
    ours = dists_module.DISTS().state_dict()
    for key in ("mean", "std", "stage2.4.filter", "stage3.9.filter", "stage4.16.filter", "stage5.23.filter"):
        assert torch.equal(ours[key], reference[key]), key
