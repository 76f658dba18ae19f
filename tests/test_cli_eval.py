"""``imgdist eval / stats / backbones / weights`` through ``imgdist.cli.main``.

Values are checked against metric functions called on features computed here without imgdist
(``pixels`` backbone, 'native' mode: ``img / 255`` flattened as C, H, W). Images are 4 x 4 so that
d = 48 stays below N and everything is quick; every user error must end as exit status 2 with a
single ``imgdist: error: ...`` line on stderr.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imgdist import metrics as M
from imgdist.cli import main

SIZE = 4
N = 60
FAST = ["--no-progress", "--no-cache", "--workers", "0"]
PIX = ["--backbone", "pixels", "--resize-mode", "native"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "imgdist-cache"))
    monkeypatch.delenv("IMGDIST_OFFLINE", raising=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n, seed, brightness=0.0, size=SIZE):
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 190, (n, 1, 1, 3)) + brightness
    return np.clip(np.rint(base + rng.normal(0, 30, (n, size, size, 3))), 0, 255).astype(np.uint8)


def _write(folder, images, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{prefix}_{i:03d}.png")
    return folder


def _feats(images):
    return (images.astype(np.float32) / np.float32(255)).transpose(0, 3, 1, 2).reshape(len(images), -1)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    real, fake = _images(N, 1), _images(N, 2, brightness=15)
    return {"real": real, "fake": fake, "real_dir": str(_write(root / "real", real)),
            "fake_dir": str(_write(root / "fake", fake))}


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("imgdist: error: ")
    return lines[0]


def test_eval_json_matches_direct_metrics(capsys, sets):
    code, out, err = _run(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--metrics", "fid,kid,prdc",
                          "--kid-subsets", 10, "--kid-subset-size", 40, "--seed", 5, "--json", *FAST)
    assert code == 0, err
    data = json.loads(out)
    assert set(data["metrics"]) == {"FD[pixels]", "KD[pixels]", "precision[pixels]", "recall[pixels]",
                                    "density[pixels]", "coverage[pixels]"}
    assert data["counts"] == {"real": N, "fake": N}
    xr, xf = _feats(sets["real"]), _feats(sets["fake"])
    m = data["metrics"]
    assert m["FD[pixels]"]["value"] == pytest.approx(M.fid_from_features(xr, xf), rel=1e-9)
    kid, kid_std = M.kid(xr, xf, subsets=10, subset_size=40, seed=5)
    assert m["KD[pixels]"]["value"] == pytest.approx(kid, rel=1e-12)
    assert m["KD[pixels]"]["std"] == pytest.approx(kid_std, rel=1e-12)
    p, r = M.precision_recall(xr, xf, k=3)
    d, c = M.density_coverage(xr, xf, k=5)
    assert (m["precision[pixels]"]["value"], m["recall[pixels]"]["value"]) == (p, r)
    assert (m["density[pixels]"]["value"], m["coverage[pixels]"]["value"]) == (d, c)
    assert data["provenance"]["backbone"] == "pixels" and data["provenance"]["resize_mode"] == "native"
    assert m["FD[pixels]"]["value"] > 0.01


def test_eval_table_names_backbone_and_resize_mode(capsys, sets):
    code, out, err = _run(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--metrics", "fid", *FAST)
    assert code == 0, err
    assert "FD[pixels]" in out
    assert "backbone: pixels" in out
    assert "resize mode: native" in out
    assert f"real {N}" in out and f"fake {N}" in out


def test_stats_then_eval_equals_image_fd(capsys, sets, tmp_path):
    ref = tmp_path / "ref.npz"
    code, out, err = _run(capsys, "stats", sets["real_dir"], "-o", ref, *PIX, *FAST)
    assert code == 0, err
    assert f"{N} images" in out and f"{3 * SIZE * SIZE} dimensions" in out
    with np.load(ref) as data:  # plain numpy, as pytorch-fid reads it
        xr = _feats(sets["real"]).astype(np.float64)
        np.testing.assert_allclose(data["mu"], xr.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(data["sigma"], np.cov(xr, rowvar=False), rtol=0, atol=1e-12)
    code, out, err = _run(capsys, "eval", ref, sets["fake_dir"], *PIX, "--metrics", "fid", "--json", *FAST)
    assert code == 0, err
    from_stats = json.loads(out)["metrics"]["FD[pixels]"]["value"]
    code, out, _ = _run(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--metrics", "fid", "--json",
                        *FAST)
    from_images = json.loads(out)["metrics"]["FD[pixels]"]["value"]
    assert from_stats == pytest.approx(from_images, rel=1e-9)
    assert from_stats == pytest.approx(M.fid_from_features(_feats(sets["real"]), _feats(sets["fake"])), rel=1e-9)


def test_eval_takes_backbone_and_mode_from_the_statistics_file(capsys, sets, tmp_path):
    ref = tmp_path / "ref.npz"
    assert _run(capsys, "stats", sets["real_dir"], "-o", ref, *PIX, *FAST)[0] == 0
    # no --backbone / --resize-mode: the file's (pixels, native), not the default inception
    code, out, err = _run(capsys, "eval", ref, sets["fake_dir"], "--metrics", "fid", "--json", *FAST)
    assert code == 0, err
    data = json.loads(out)
    assert data["provenance"]["backbone"] == "pixels" and data["provenance"]["resize_mode"] == "native"
    assert data["metrics"]["FD[pixels]"]["value"] == pytest.approx(
        M.fid_from_features(_feats(sets["real"]), _feats(sets["fake"])), rel=1e-9)
    # told otherwise, the difference is an error before any extraction
    code, out, err = _run(capsys, "eval", ref, sets["fake_dir"], "--backbone", "pixels", "--metrics", "fid", *FAST)
    assert code == 2 and "resize_mode native vs antialias" in _error_line(err)


def test_device_auto_says_which_device(capsys, sets):
    code, out, err = _run(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--metrics", "fid", *FAST)
    assert code == 0, err
    assert "device: cpu" in out.splitlines()  # no GPU here: auto means the CPU


def test_kid_without_subset_spread_prints_no_std(capsys, sets):
    # subsets as large as both sets are all the whole set: no spread to report, and it says so
    code, out, err = _run(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--metrics", "kid", *FAST)
    assert code == 0, err
    assert "±" not in out and "KID: unbiased estimate on the full sets" in out
    data = json.loads(_run(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--metrics", "kid", "--json",
                           *FAST)[1])
    assert "std" not in data["metrics"]["KD[pixels]"]
    assert data["metrics"]["KD[pixels]"]["value"] == pytest.approx(M.kid_full(_feats(sets["real"]),
                                                                             _feats(sets["fake"])), rel=1e-9)


def test_stats_file_with_kid_is_an_error(capsys, sets, tmp_path):
    ref = tmp_path / "ref.npz"
    assert _run(capsys, "stats", sets["real_dir"], "-o", ref, *PIX, *FAST)[0] == 0
    code, out, err = _run(capsys, "eval", ref, sets["fake_dir"], *PIX, "--metrics", "fid,kid", *FAST)
    assert code == 2
    assert "statistics" in _error_line(err)


def test_empty_folder(capsys, sets, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = _run(capsys, "eval", tmp_path / "empty", sets["fake_dir"], *PIX, *FAST)
    assert code == 2
    line = _error_line(err)
    assert "empty" in line and "no images" in line


def test_folder_with_one_image(capsys, sets, tmp_path):
    one = _write(tmp_path / "one", sets["real"][:1])
    code, out, err = _run(capsys, "eval", one, sets["fake_dir"], *PIX, "--metrics", "fid", *FAST)
    assert code == 2
    assert "covariance needs at least 2" in _error_line(err) and "real set" in _error_line(err)


def test_three_images_default_metrics_is_a_user_error(capsys, sets, tmp_path):
    few = _write(tmp_path / "few", sets["real"][:3])
    code, out, err = _run(capsys, "eval", few, sets["fake_dir"], *PIX, *FAST)  # precision k=3 needs > 3
    assert code == 2
    assert "precision" in _error_line(err)


@pytest.mark.parametrize("stats_args,eval_args,field", [
    (["--backbone", "pixels", "--resize-mode", "native"], ["--backbone", "pixels"], "resize_mode"),
    (["--backbone", "pixels", "--resize-mode", "native"], ["--backbone", "efficientnet-lite0"], "backbone"),
])
def test_mismatched_provenance(capsys, sets, tmp_path, stats_args, eval_args, field):
    ref = tmp_path / "ref.npz"
    assert _run(capsys, "stats", sets["real_dir"], "-o", ref, *stats_args, *FAST)[0] == 0
    fake = sets["fake_dir"] if field == "resize_mode" else _write(tmp_path / "two", sets["fake"][:2])
    code, out, err = _run(capsys, "eval", ref, fake, *eval_args, "--metrics", "fid", *FAST)
    assert code == 2
    line = _error_line(err)
    assert field in line and "--force" in line


def test_corrupt_file_raise_and_skip(capsys, sets, tmp_path):
    bad_dir = _write(tmp_path / "bad", sets["fake"])
    bad = bad_dir / "img_030b.png"  # sorts into the middle
    bad.write_bytes(b"\x89PNG\r\n\x1a\ncorrupt")
    code, out, err = _run(capsys, "eval", sets["real_dir"], bad_dir, *PIX, "--metrics", "fid", *FAST)
    assert code == 2
    assert "img_030b.png" in _error_line(err)

    code, out, err = _run(capsys, "eval", sets["real_dir"], bad_dir, *PIX, "--metrics", "fid", "--json",
                          "--on-error", "skip", *FAST)
    assert code == 0, err
    data = json.loads(out)
    assert data["counts"] == {"real": N, "fake": N, "fake_skipped": 1}
    assert any("skipped 1" in w and "img_030b.png" in w for w in data["warnings"])
    # the skipped file changes nothing: same FD as the clean folder
    xr, xf = _feats(sets["real"]), _feats(sets["fake"])
    assert data["metrics"]["FD[pixels]"]["value"] == pytest.approx(M.fid_from_features(xr, xf), rel=1e-9)

    code, out, err = _run(capsys, "eval", sets["real_dir"], bad_dir, *PIX, "--metrics", "fid",
                          "--on-error", "skip", *FAST)
    assert code == 0
    assert "fake_skipped 1" in out and "warning" not in out  # the count in the table, the warning on stderr
    assert err.splitlines() == [f"imgdist: warning: fake: skipped 1 unreadable image(s): {bad}: not a readable "
                                "image (unknown format or corrupt header)"]


def test_result_warnings_are_stderr_lines(capsys, sets, tmp_path):
    few = _write(tmp_path / "few", sets["fake"][:20])  # 20 images, 48 dimensions: a singular covariance
    code, out, err = _run(capsys, "eval", sets["real_dir"], few, *PIX, "--metrics", "fid", *FAST)
    assert code == 0, err
    assert "warning" not in out and "FD[pixels]" in out
    assert err.splitlines() == ["imgdist: warning: 20 images for 48 feature dimensions: the covariance is singular "
                                "and the Fréchet distance is biased upwards; use more images than dimensions for a "
                                "number comparable with published ones"]
    code, out, err = _run(capsys, "eval", sets["real_dir"], few, *PIX, "--metrics", "fid", "--json", *FAST)
    assert json.loads(out)["warnings"] == [err.splitlines()[0][len("imgdist: warning: "):]]


def test_statistics_files_on_both_sides_and_without_a_count(capsys, sets, tmp_path):
    # 'stats' once per set, then eval on the two files; and pytorch-fid's format (mu and sigma
    # only: no n, no provenance) on either side. Once a traceback, once "the real set has 0 images".
    refs = {}
    for side in ("real", "fake"):
        refs[side] = tmp_path / f"{side}.npz"
        assert _run(capsys, "stats", sets[f"{side}_dir"], "-o", refs[side], *PIX, *FAST)[0] == 0
        with np.load(refs[side]) as data:
            np.savez(tmp_path / f"{side}_pytorch_fid.npz", mu=data["mu"], sigma=data["sigma"])
    expected = M.fid_from_features(_feats(sets["real"]), _feats(sets["fake"]))

    def fd(real, fake, *extra):
        code, out, err = _run(capsys, "eval", real, fake, "--metrics", "fid", "--json", *extra, *FAST)
        assert code == 0, err
        data = json.loads(out)
        return next(iter(data["metrics"].values()))["value"], data

    value, data = fd(refs["real"], refs["fake"])
    assert value == pytest.approx(expected, rel=1e-9) and data["counts"] == {"real": N, "fake": N}
    value, data = fd(tmp_path / "real_pytorch_fid.npz", sets["fake_dir"], *PIX)
    assert value == pytest.approx(expected, rel=1e-9)
    assert data["counts"] == {"real": None, "fake": N}  # not recorded in the file, not "0 images"
    value, data = fd(refs["real"], tmp_path / "fake_pytorch_fid.npz")
    assert value == pytest.approx(expected, rel=1e-9)
    value, _ = fd(tmp_path / "real_pytorch_fid.npz", tmp_path / "real_pytorch_fid.npz")
    assert value == 0.0
    code, out, err = _run(capsys, "eval", tmp_path / "real_pytorch_fid.npz", sets["fake_dir"], *PIX, "--metrics",
                          "fid", *FAST)
    assert code == 0 and "images: real not recorded, fake 60" in out


def test_backbones_lists_dims(capsys):
    code, out, err = _run(capsys, "backbones", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"inception", "efficientnet-lite0", "pixels"} <= set(rows)
    assert rows["inception"]["dims"] == "64, 192, 768, 2048"
    assert rows["efficientnet-lite0"]["dims"] == "1280"
    assert rows["pixels"]["dims"] == "3072"
    assert rows["inception"]["classes"] == 1008 and rows["efficientnet-lite0"]["classes"] == 1000
    code, out, err = _run(capsys, "backbones")
    assert code == 0
    for name, dims in (("inception", "2048"), ("efficientnet-lite0", "1280"), ("pixels", "3072")):
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert dims in line


def test_weights_status(capsys, monkeypatch):
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    code, out, err = _run(capsys, "weights", "--json")
    assert code == 0
    rows = {row["backbone"]: row for row in json.loads(out)}
    assert rows["efficientnet-lite0"]["present"] == "yes"
    assert rows["efficientnet-lite0"]["source"] == "package"
    assert rows["inception"]["present"] == "no" and rows["inception"]["source"] == "missing"
    assert "pixels" not in rows


def test_offline_inception_without_weights_gives_advice(capsys, sets, monkeypatch):
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    code, out, err = _run(capsys, "eval", sets["real_dir"], sets["fake_dir"], "--backbone", "inception", *FAST)
    assert code == 2
    line = _error_line(err)
    assert "inception" in line and "--weights" in line and "efficientnet-lite0" in line
    assert "IMGDIST_OFFLINE" in line


def test_inception_with_stand_in_weights(capsys, tmp_path):
    from stand_in_weights import save_stand_in

    weights = save_stand_in(tmp_path / "standin.pth")
    real = _write(tmp_path / "r", _images(6, 3, size=24))
    fake = _write(tmp_path / "f", _images(6, 4, brightness=30, size=24))
    code, out, err = _run(capsys, "eval", real, fake, "--backbone", "inception", "--weights", weights,
                          "--dims", 64, "--resize-mode", "tf", "--metrics", "fid", "--json", *FAST)
    assert code == 0, err
    data = json.loads(out)
    tag = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    value = data["metrics"][f"FD[inception:{tag}/pool64]"]["value"]  # not the published weights: no "FID"
    assert value is not None and value > 0
    assert any(f"inception weights {tag} are not the published ones" in w for w in data["warnings"])
    prov = data["provenance"]
    assert prov["backbone"] == "inception" and prov["feature_layer"] == "pool64" and prov["resize_mode"] == "tf"
    assert prov["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert data["counts"] == {"real": 6, "fake": 6}
    assert any("6 images for 64 feature dimensions" in w for w in data["warnings"])
