"""``imgdist compare`` end to end: exact pixel distances, JSON and table output, one-line errors."""

from __future__ import annotations

import json
from importlib import resources
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from imgdist.cli import main

PIXEL_KEYS = ("sum_abs_diff", "mean_abs_diff", "mse", "rmse", "psnr", "ssim", "ssim_luma")


_COFFEE = resources.files("imgdist") / "data" / "coffee.jpg"


def _png(path, array) -> str:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def lecture_pair(tmp_path):
    """Two 2-pixel RGB images (1 x 2 x 3) that differ by 150 on every value."""
    a = np.array([[[10, 20, 30], [40, 50, 60]]], dtype=np.uint8)
    b = a + 150
    return _png(tmp_path / "a.png", a), _png(tmp_path / "b.png", b)


def test_lecture_example_exact(capsys, lecture_pair):
    a, b = lecture_pair
    code, out, err = _run(capsys, "compare", a, b, "--json", "--backbone", "none")
    assert code == 0, err
    result = json.loads(out)
    for key in PIXEL_KEYS:
        assert key in result
    assert result["sum_abs_diff"] == 900
    assert result["mean_abs_diff"] == 150
    assert result["mse"] == 22500
    assert result["rmse"] == 150
    assert result["psnr"] == pytest.approx(10 * np.log10(255**2 / 22500))
    assert result["ssim"] is None and result["ssim_luma"] is None  # 1 x 2 is under 11 x 11
    assert result["a"] == a and result["b"] == b
    assert result["backbone"] is None and result["resized_b_to_a"] is False


def test_lecture_example_table(capsys, lecture_pair):
    code, out, err = _run(capsys, "compare", *lecture_pair, "--backbone", "none")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split()}
    assert rows["sum_abs_diff"] == "900"
    assert rows["mse"] == "22500"
    assert rows["ssim"] == "n/a"


def test_python_dash_m_imgdist(lecture_pair):
    a, b = lecture_pair
    proc = subprocess.run([sys.executable, "-m", "imgdist", "compare", a, b, "--json", "--backbone", "none"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["sum_abs_diff"], result["mean_abs_diff"], result["mse"]) == (900, 150, 22500)


def test_identical_images(capsys, tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a, b = _png(tmp_path / "x.png", img), _png(tmp_path / "y.png", img)
    code, out, err = _run(capsys, "compare", a, b, "--json", "--backbone", "none")
    assert code == 0, err
    result = json.loads(out)
    assert result["sum_abs_diff"] == 0 and result["mse"] == 0 and result["rmse"] == 0
    assert result["psnr"] == "inf"
    assert result["ssim"] == pytest.approx(1.0) and result["ssim_luma"] == pytest.approx(1.0)
    code, out, err = _run(capsys, "compare", a, b, "--backbone", "none")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split()}
    assert rows["psnr"] == "inf"
    assert rows["sum_abs_diff"] == "0"


def test_identical_images_have_feature_distance_zero(capsys, tmp_path):
    # rounding leaves 1 - cos = -2.2e-16 for some images; a distance is never negative
    img = np.array(Image.open(_COFFEE).convert("RGB").resize((96, 64)))
    a, b = _png(tmp_path / "x.png", img), _png(tmp_path / "y.png", img)
    code, out, err = _run(capsys, "compare", a, b, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["feature_cosine"] == 0.0 and result["feature_l2"] == 0.0
    assert result["feature_spatial"] == 0.0
    assert result["device"] == "cpu"


def test_ssim_is_mean_of_per_channel_ssim(capsys, tmp_path):
    rng = np.random.default_rng(1)
    # a smooth image plus noise, so that SSIM is well inside (0, 1)
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=2).astype(np.float64)
    x = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    y = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    a, b = _png(tmp_path / "x.png", x), _png(tmp_path / "y.png", y)
    code, out, err = _run(capsys, "compare", a, b, "--json", "--backbone", "none")
    assert code == 0, err
    result = json.loads(out)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    per_channel = [structural_similarity(x[:, :, c], y[:, :, c], **kw) for c in range(3)]
    assert 0.05 < result["ssim"] < 0.95
    assert result["ssim"] == pytest.approx(float(np.mean(per_channel)), abs=1e-6)
    diff = x.astype(np.int64) - y.astype(np.int64)
    assert result["sum_abs_diff"] == int(np.abs(diff).sum())
    assert result["mse"] == pytest.approx(float((diff**2).mean()), rel=1e-12)


def test_sizes_differ(capsys, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    y = rng.integers(0, 256, (10, 15, 3), dtype=np.uint8)
    a, b = _png(tmp_path / "big.png", x), _png(tmp_path / "small.png", y)
    code, out, err = _run(capsys, "compare", a, b, "--json", "--backbone", "none")
    assert code == 2
    assert out == ""
    assert err.startswith("imgdist: error: ") and err.count("\n") == 1
    assert "small.png" in err and "--resize" in err
    code, out, err = _run(capsys, "compare", a, b, "--json", "--backbone", "none", "--resize")
    assert code == 0, err
    result = json.loads(out)
    assert result["resized_b_to_a"] is True
    resized = np.asarray(Image.fromarray(y).resize((30, 20), Image.BICUBIC)).astype(np.int64)
    assert result["sum_abs_diff"] == int(np.abs(x.astype(np.int64) - resized).sum())


def test_compare_with_folder_sorted(capsys, tmp_path):
    a_img = np.full((12, 12, 3), 100, dtype=np.uint8)
    a = _png(tmp_path / "query.png", a_img)
    folder = tmp_path / "others"
    folder.mkdir()
    offsets = {"p.png": 30, "q.png": 5, "r.png": 80, "s.png": 0, "t.png": 12}
    for name, off in offsets.items():
        _png(folder / name, a_img + off)
    code, out, err = _run(capsys, "compare", a, folder, "--json", "--backbone", "none")
    assert code == 0, err
    result = json.loads(out)
    assert result["sorted_by"] == "sum_abs_diff" and result["skipped"] == []
    comps = result["comparisons"]
    assert [os.path.basename(c["b"]) for c in comps] == sorted(offsets, key=offsets.get)
    assert [c["sum_abs_diff"] for c in comps] == sorted(off * 12 * 12 * 3 for off in offsets.values())
    assert all(c["a"] == a for c in comps)
    code, out, err = _run(capsys, "compare", a, folder, "--backbone", "none")
    assert code == 0, err
    assert "5 images sorted by sum_abs_diff" in out
    body = [line.split()[0] for line in out.splitlines()[3:]]
    assert [os.path.basename(p) for p in body] == sorted(offsets, key=offsets.get)


@pytest.fixture
def folder_with_bad_files(tmp_path):
    rng = np.random.default_rng(3)
    a_img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = _png(tmp_path / "query.png", a_img)
    folder = tmp_path / "mixed"
    folder.mkdir()
    _png(folder / "a_good.png", a_img)
    _png(folder / "z_good.png", 255 - a_img)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _png(folder / "b_truncated.png", noise)
    data = (folder / "b_truncated.png").read_bytes()
    (folder / "b_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "c_empty.png").write_bytes(b"")
    (folder / "d_text.png").write_text("hello, I am not a PNG\n")
    return a, folder, a_img


def test_folder_with_bad_files_fails_on_first(capsys, folder_with_bad_files):
    a, folder, _ = folder_with_bad_files
    code, out, err = _run(capsys, "compare", a, folder, "--backbone", "none")
    assert code == 2
    assert err.startswith("imgdist: error: ") and err.count("\n") == 1
    assert str(folder / "b_truncated.png") in err
    assert "c_empty" not in err and "d_text" not in err


def test_folder_with_bad_files_skip(capsys, folder_with_bad_files):
    a, folder, a_img = folder_with_bad_files
    code, out, err = _run(capsys, "compare", a, folder, "--json", "--backbone", "none", "--on-error", "skip")
    assert code == 0, err
    result = json.loads(out)
    comps = result["comparisons"]
    assert [os.path.basename(c["b"]) for c in comps] == ["a_good.png", "z_good.png"]
    assert comps[0]["sum_abs_diff"] == 0
    inverted = np.abs(a_img.astype(np.int64) - (255 - a_img.astype(np.int64))).sum()
    assert comps[1]["sum_abs_diff"] == int(inverted)
    assert [os.path.basename(s[0]) for s in result["skipped"]] == ["b_truncated.png", "c_empty.png", "d_text.png"]
    assert "skipped 3" in err and err.count("\n") == 1


def test_missing_file_one_line_error(capsys, lecture_pair):
    a, _ = lecture_pair
    code, out, err = _run(capsys, "compare", a, a + ".missing", "--backbone", "none")
    assert code == 2 and out == ""
    assert err.startswith("imgdist: error: ") and err.count("\n") == 1
    assert a + ".missing" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def half_weights(tmp_path_factory):
    """EfficientNet-Lite0's published weights cast to float16 and saved: finite, another network."""
    import torch

    from imgdist.extraction.backbones import load_backbone

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in load_backbone("efficientnet-lite0").state_dict().items()}
    path = tmp_path_factory.mktemp("half") / "lite0_fp16.pth"
    torch.save(state, path)
    return path


def test_other_weights_are_named_by_their_hash_as_eval_names_them(capsys, tmp_path, half_weights):
    """Issue 23, item 8 (at 0c5d37c the JSON said nothing of the weights, though they change every
    feature distance)."""
    import hashlib

    a = _png(tmp_path / "a.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3)))
    b = _png(tmp_path / "b.png", np.random.default_rng(1).integers(0, 256, (32, 32, 3)))
    sha = hashlib.sha256(half_weights.read_bytes()).hexdigest()
    code, out, err = _run(capsys, "compare", a, b, "--json", "--backbone", "efficientnet-lite0",
                          "--weights", half_weights)
    assert code == 0, err
    other = json.loads(out)
    assert other["backbone"] == f"efficientnet-lite0:{sha[:8]}" and other["weights_sha256"] == sha
    code, out, err = _run(capsys, "compare", a, b, "--json", "--backbone", "efficientnet-lite0")
    published = json.loads(out)
    assert published["backbone"] == "efficientnet-lite0" and published["weights_sha256"] != sha
    assert other["feature_cosine"] != published["feature_cosine"]
    assert other["sum_abs_diff"] == published["sum_abs_diff"]
    code, out, err = _run(capsys, "compare", a, b, "--backbone", "efficientnet-lite0", "--weights", half_weights)
    assert f"backbone: efficientnet-lite0:{sha[:8]}," in out


def test_features_that_cannot_tell_two_images_apart_are_said_so(capsys, tmp_path):
    """Issue 23, item 8: a network that gives two different images one feature vector (zeroed
    weights: at 0c5d37c feature_l2 0.0 for images 80 apart, exit 0 without a word) is named in a
    warning; distances of an image with itself stay quiet."""
    import torch

    from imgdist.extraction.backbones.custom import custom_backbone
    from imgdist.pairs.compare import compare_many

    flat = custom_backbone(torch.nn.Conv2d(3, 4, 3), input_size=8)
    torch.nn.init.zeros_(flat.module.weight)
    torch.nn.init.constant_(flat.module.bias, 0.5)
    a = _png(tmp_path / "a.png", np.full((8, 8, 3), 20))
    folder = tmp_path / "b"
    folder.mkdir()
    _png(folder / "b0.png", np.full((8, 8, 3), 100))
    _png(folder / "b1.png", np.full((8, 8, 3), 20))  # a itself: the same features, rightly
    with pytest.warns(Warning, match=r"gives 1 of the 2 images of .*b the same features as .*a\.png, although the "
                                     r"pixels differ: the network cannot tell them apart"):
        results = compare_many(a, str(folder), backbone=flat)
    assert [r.feature.feature_l2 for r in results] == [0.0, 0.0]
    assert results[0].pixel.mean_abs_diff == 80
