"""``imgdist robustness``: pixel distances explode under a 1-pixel shift, feature distances do not.

The photos are scikit-image's astronaut (the image) and coffee (the other image). Pixel distances
and the shift are recomputed here with numpy; the feature cosine with the extraction engine
(a different code path from the pair embedder the command uses).
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

import imgdist
from imgdist.cli import main
from imgdist.pairs.perturbations import add_noise, blur, shift
from needs import require_module

data = require_module("skimage.data")

PERTURBATIONS = ["shift1", "shift2", "shift4", "shift8", "noise5", "noise10", "noise20", "blur1", "blur2", "blur4"]
METRICS = {"sum_abs_diff", "mse", "1-ssim", "feature_l2", "feature_cosine", "feature_spatial"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _my_shift(img, k):
    """Content moves right by k; the first k columns repeat column 0."""
    return np.concatenate([np.repeat(img[:, :1], k, axis=1), img[:, :-k]], axis=1)


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    astronaut, coffee = data.astronaut(), data.coffee()
    Image.fromarray(astronaut).save(root / "astronaut.png")
    Image.fromarray(coffee).save(root / "coffee.png")
    small = np.asarray(Image.fromarray(astronaut).resize((128, 128), Image.LANCZOS))
    Image.fromarray(small).save(root / "small.png")  # for the runs that check plumbing only
    return {"astronaut": astronaut, "coffee": coffee, "root": root, "small": small,
            "astronaut_path": root / "astronaut.png", "coffee_path": root / "coffee.png",
            "small_path": root / "small.png"}


@pytest.fixture(scope="module")
def report(photos):
    plot = photos["root"] / "ratios.png"
    code, out, err = _run("robustness", photos["astronaut_path"], photos["coffee_path"], "--json", "--plot", plot)
    assert code == 0, err
    return {"data": json.loads(out), "plot": plot}


def test_json_layout(report):
    data_ = report["data"]
    assert data_["backbone"] == "efficientnet-lite0"
    assert data_["resize_mode"]  # the preprocessing is stated
    assert list(data_["perturbations"]) == PERTURBATIONS
    assert set(data_["reference"]) == METRICS
    for name, entries in data_["perturbations"].items():
        assert set(entries) == METRICS, name
        for metric, entry in entries.items():
            assert set(entry) == {"distance", "ratio"}
            assert entry["ratio"] == pytest.approx(entry["distance"] / data_["reference"][metric], rel=1e-12)
    assert "resized to 512x512" in data_["other"]


def test_pixel_distances_recomputed(report, photos):
    astronaut = photos["astronaut"].astype(np.int64)
    coffee = np.asarray(Image.fromarray(photos["coffee"]).resize((512, 512), Image.BICUBIC)).astype(np.int64)
    ref = report["data"]["reference"]
    assert ref["sum_abs_diff"] == np.abs(astronaut - coffee).sum()
    assert ref["mse"] == pytest.approx(((astronaut - coffee) ** 2).mean(), rel=1e-12)
    for k in (1, 2, 4, 8):
        moved = _my_shift(photos["astronaut"], k).astype(np.int64)
        entry = report["data"]["perturbations"][f"shift{k}"]
        assert entry["sum_abs_diff"]["distance"] == np.abs(astronaut - moved).sum()
        assert entry["mse"]["distance"] == pytest.approx(((astronaut - moved) ** 2).mean(), rel=1e-12)


def test_one_pixel_shift_features_vs_pixels(report):
    shift1 = report["data"]["perturbations"]["shift1"]
    pixel_ratio = shift1["sum_abs_diff"]["ratio"]
    feature_ratio = shift1["feature_cosine"]["ratio"]
    assert 0 < feature_ratio and 5 * feature_ratio <= pixel_ratio
    # larger shifts move both further
    ratios = [report["data"]["perturbations"][f"shift{k}"]["sum_abs_diff"]["ratio"] for k in (1, 2, 4, 8)]
    assert ratios == sorted(ratios)
    assert all(0 < r < 1 for r in ratios)


def test_feature_cosine_matches_extraction_engine(report, photos):
    img = photos["astronaut"]
    feats = imgdist.extract_features([img, _my_shift(img, 1)], "efficientnet-lite0", progress=False).features
    a, b = feats.astype(np.float64)
    cosine = 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    got = report["data"]["perturbations"]["shift1"]["feature_cosine"]["distance"]
    assert got == pytest.approx(cosine, rel=1e-3, abs=1e-6)


def test_plot_is_a_png(report):
    with Image.open(report["plot"]) as im:
        assert im.format == "PNG"
        assert im.size[0] > 300 and im.size[1] > 200


def test_shift_moves_right_with_edge_padding():
    img = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    out = shift(img, 2)
    assert out.shape == img.shape and out.dtype == img.dtype
    np.testing.assert_array_equal(out[:, 2:], img[:, :3])
    np.testing.assert_array_equal(out[:, 0], img[:, 0])
    np.testing.assert_array_equal(out[:, 1], img[:, 0])
    np.testing.assert_array_equal(out, _my_shift(img, 2))
    np.testing.assert_array_equal(shift(img, 1)[0, :, 0], [0, 0, 3, 6, 9])


def test_noise_and_blur():
    img = np.full((40, 40, 3), 128, np.uint8)
    noisy = add_noise(img, 10, seed=1)
    np.testing.assert_array_equal(noisy, add_noise(img, 10, seed=1))
    assert not np.array_equal(noisy, add_noise(img, 10, seed=2))
    assert noisy.dtype == np.uint8
    assert np.std(noisy.astype(float) - 128) == pytest.approx(10, rel=0.1)
    edge = np.zeros((20, 20, 3), np.uint8)
    edge[:, 10:] = 255
    soft = blur(edge, 2)
    assert soft.shape == edge.shape and soft.dtype == np.uint8
    assert 0 < soft[5, 9, 0] < 255 and soft[5, 0, 0] == 0 and soft[5, 19, 0] == 255
    np.testing.assert_array_equal(blur(img, 3), img)  # a flat image stays flat


def test_table_has_reference_row_of_ones(photos):
    code, out, err = _run("robustness", photos["small_path"], photos["coffee_path"], "--backbone", "none")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("(other image)"))
    assert row.split()[2:] == ["1", "1", "1"]
    assert "backbone: none" in out and "device" not in out  # no network ran


def test_builtin_other_image(photos):
    code, out, err = _run("robustness", photos["small_path"], "--json")
    assert code == 0, err
    result = json.loads(out)
    from imgdist.checks import resolve_device

    assert result["backbone"] == "efficientnet-lite0" and result["device"] == resolve_device("auto")  # said
    assert result["other"].startswith("built-in coffee.jpg")
    from importlib import resources

    with resources.as_file(resources.files("imgdist") / "data" / "coffee.jpg") as path:
        coffee = np.array(Image.open(path).convert("RGB"))
    coffee = np.asarray(Image.fromarray(coffee).resize((128, 128), Image.BICUBIC)).astype(np.int64)
    assert result["reference"]["sum_abs_diff"] == np.abs(photos["small"].astype(np.int64) - coffee).sum()
    shift1 = result["perturbations"]["shift1"]
    assert 5 * shift1["feature_cosine"]["ratio"] <= shift1["sum_abs_diff"]["ratio"]


def test_too_small_image_is_an_error(tmp_path):
    Image.fromarray(np.zeros((8, 30, 3), np.uint8)).save(tmp_path / "small.png")
    code, out, err = _run("robustness", tmp_path / "small.png", "--backbone", "none")
    assert code == 2
    assert err.strip().startswith("imgdist: error:") and "too small" in err and len(err.strip().splitlines()) == 1


def test_a_network_that_cannot_tell_image_from_other_is_refused(tmp_path):
    """Issue 23, item 8: at 0c5d37c a zeroed network printed a table of null ratios (every feature
    distance divided by 0)."""
    import torch

    from imgdist.errors import ImgdistError
    from imgdist.extraction.backbones.custom import custom_backbone
    from imgdist.pairs.perturbations import robustness

    flat = custom_backbone(torch.nn.Conv2d(3, 4, 3), input_size=16)
    torch.nn.init.zeros_(flat.module.weight)
    rng = np.random.default_rng(0)
    image, other = (rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(2))
    with pytest.raises(ImgdistError, match=r"^custom gives <array>\[0\] and <array>\[0\] the same features although "
                                           r"their pixels differ: the network cannot tell them apart"):
        robustness(image, other, backbone=flat)
    torch.manual_seed(0)
    working = custom_backbone(torch.nn.Conv2d(3, 4, 3), input_size=16)
    result = robustness(image, other, backbone=working).to_dict()  # ratios, and the weights named
    assert result["weights_sha256"] == working.weights_id and 0 < result["reference"]["feature_l2"]
