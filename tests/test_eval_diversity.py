"""Vendi, memorisation, realism, the per-image table and per-class metrics through ``evaluate`` and
the CLI, checked against the metric functions on features computed here without imgdist
(``pixels`` backbone, native size: the features are ``img / 255`` flattened as C, H, W)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from imgdist import metrics as M
from imgdist.cli import main
from imgdist.evaluation.run import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 4
PIX = dict(backbone="pixels", mode="native", progress=False, workers=0)
CLI_PIX = ["--backbone", "pixels", "--resize-mode", "native", "--no-progress", "--no-cache", "--workers", "0"]


def _images(n, seed, level):
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(level + rng.normal(0, 30, (n, SIZE, SIZE, 3))), 0, 255).astype(np.uint8)


def _feats(images):
    return (images.astype(np.float32) / np.float32(255)).transpose(0, 3, 1, 2).reshape(len(images), -1)


def _write(folder, images, prefix="im"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{prefix}_{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Two classes; the fakes hold 3 exact copies of reals (planted memorisation)."""
    root = tmp_path_factory.mktemp("div")
    data = {}
    for side, seed in (("real", 1), ("fake", 2), ("test", 3)):
        cats, dogs = _images(30, seed, 80), _images(20, seed + 10, 170)
        if side == "fake":
            cats[:3] = data["real"]["cat"][[4, 9, 14]]
        data[side] = {"cat": cats, "dog": dogs}
        for name, images in data[side].items():
            _write(root / side / name, images)
    data["root"] = root
    return data


def _all(data, side):
    return np.concatenate([data[side]["cat"], data[side]["dog"]])  # sorted paths: cat/ before dog/


def test_new_metrics_equal_the_metric_functions(sets):
    root = sets["root"]
    result = evaluate(root / "real", root / "fake", real_test=root / "test",
                      metrics="vendi,authenticity,ct,copies,realism", ct_cells=3, **PIX)
    xr, xf, xt = (_feats(_all(sets, s)) for s in ("real", "fake", "test"))
    assert result["vendi"] == pytest.approx(M.vendi_score(xf), rel=1e-10)
    assert result["vendi-real"] == pytest.approx(M.vendi_score(xr), rel=1e-10)
    for q, key in ((0.5, "0.5"), (2.0, "2"), (np.inf, "inf")):
        assert result.details["vendi_orders"]["fake"][key] == pytest.approx(M.vendi_score(xf, q=q), rel=1e-10)
    assert result["authenticity"] == M.authenticity(xr, xf).value
    found = M.copies(xr, xf)
    assert result["copies"] == found.count >= 3  # the planted copies at least
    assert {0, 1, 2} <= set(result.details["copies"]["fake_index"])
    assert result["realism"] == np.median(M.realism(xr, xf, k=3).realism)
    assert result["ct"] == pytest.approx(M.ct_score(xr, xt, xf, n_cells=3, seed=0).value, rel=1e-12)
    assert result.labels["ct"] == "C_T[pixels]" and result.labels["vendi"] == "Vendi[pixels]"


def test_ct_without_a_held_out_set_is_refused_before_extraction(sets, capsys):
    root = sets["root"]
    code = main(["eval", str(root / "real"), str(root / "fake"), "--metrics", "ct", *CLI_PIX])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--real-test SRC" in err[0]


def test_per_image_csv(sets, tmp_path, capsys):
    root = sets["root"]
    out = tmp_path / "per_image.csv"
    code = main(["eval", str(root / "real"), str(root / "fake"), "--metrics", "fid", "--per-image", str(out),
                 *CLI_PIX])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    xr, xf = _feats(_all(sets, "real")), _feats(_all(sets, "fake"))
    real_names = sorted(str(p) for p in (root / "real").rglob("*.png"))
    r, a, c = M.realism(xr, xf, k=3), M.authenticity(xr, xf), M.copies(xr, xf)
    assert len(rows) == len(xf)
    for i, row in enumerate(rows):
        assert float(row["realism"]) == r.realism[i]
        assert row["nearest_real"] == real_names[r.nearest_real[i]]
        assert float(row["distance"]) == pytest.approx(r.distance[i], rel=1e-12)
        assert row["inside_real_manifold"] == ("yes" if r.inside[i] else "no")
        assert row["authentic"] == ("yes" if a.authentic[i] else "no")
        assert row["copy"] == ("yes" if i in set(c.fake_index) else "no")
    assert [row["copy"] for row in rows[:3]] == ["yes"] * 3 and rows[0]["distance"] == "0.0"


def test_per_class(sets, capsys):
    root = sets["root"]
    code = main(["eval", str(root / "real"), str(root / "fake"), "--metrics", "fid,precision", "--per-class",
                 "--json", *CLI_PIX])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    fd = {name: M.fid_from_features(_feats(sets["real"][name]), _feats(sets["fake"][name])) for name in ("cat", "dog")}
    for name in ("cat", "dog"):
        assert data["per_class"][name]["FD[pixels]"] == pytest.approx(fd[name], rel=1e-9)
        assert data["per_class"][name]["counts"] == {"real": len(sets["real"][name]), "fake": len(sets["fake"][name])}
    assert data["details"]["intra_fid"] == pytest.approx(np.mean(list(fd.values())), rel=1e-9)
    # the table: worst class (largest FD) first
    code = main(["eval", str(root / "real"), str(root / "fake"), "--metrics", "fid", "--per-class", *CLI_PIX])
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("per class (2 classes)"))
    worst = max(fd, key=fd.get)
    assert lines[start + 3].split()[0] == worst
    assert f"intra-FID): {np.mean(list(fd.values())):.6g}" in lines[start]


def test_per_class_needs_class_folders(sets, tmp_path, capsys):
    flat = tmp_path / "flat"
    _write(flat, _images(6, 5, 100))
    code = main(["eval", str(sets["root"] / "real"), str(flat), "--metrics", "fid", "--per-class", *CLI_PIX])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "lies directly in the fake folder" in err[0]


def test_per_class_ct_with_class_folders_of_held_out_images(sets, capsys):
    # cat: 30 fakes, one cell -> C_T of the cat images alone; dog: 20 fakes < 21 -> no C_T, named
    root = sets["root"]
    result = evaluate(root / "real", root / "fake", real_test=root / "test", metrics="fid,ct", ct_cells=1,
                      per_class=True, **PIX)
    cat = result.per_class["cat"]
    expected = M.ct_score(_feats(sets["real"]["cat"]), _feats(sets["test"]["cat"]), _feats(sets["fake"]["cat"]),
                          n_cells=1).value
    assert cat["ct"] == pytest.approx(expected, rel=1e-12)
    assert cat.labels["ct"] == "C_T[pixels]" and cat.counts["real_test"] == 30
    assert "ct" not in result.per_class["dog"].values and "fid" in result.per_class["dog"].values
    assert any("no C_T for 1 class(es)" in w and w.endswith(": dog") for w in result.warnings)
    table = result.class_table().splitlines()
    dog = next(line for line in table if line.startswith("dog"))
    assert dog.split()[2] == "n/a"  # the C_T column


def test_per_class_ct_without_class_folders_is_whole_set_only(sets, tmp_path):
    root = sets["root"]
    flat = tmp_path / "flat_test"
    _write(flat, _all(sets, "test"))
    result = evaluate(root / "real", root / "fake", real_test=flat, metrics="fid,ct", ct_cells=1, per_class=True,
                      **PIX)
    assert "ct" in result.values and all("ct" not in r.values for r in result.per_class.values())
    assert any("C_T is computed for the whole sets only" in w for w in result.warnings)


def test_held_out_set_is_not_read_without_ct(sets, tmp_path):
    # an unreadable held-out image would stop the run if the set were read
    broken = tmp_path / "broken_test"
    _write(broken, _images(24, 7, 100))  # enough held-out images for C_T: the read is what fails
    (broken / "zz_broken.png").write_bytes(b"not a png")
    root = sets["root"]
    result = evaluate(root / "real", root / "fake", real_test=broken, metrics="fid,vendi", **PIX)
    assert "real_test" not in result.counts
    assert any(w.startswith(f"--real-test {broken} was not read") for w in result.warnings)
    with pytest.raises(Exception, match="zz_broken.png"):
        evaluate(root / "real", root / "fake", real_test=broken, metrics="ct", ct_cells=1, **PIX)


def test_json_with_cells_without_fakes(sets, capsys):
    # a collapsed fake set (cats only) leaves the dogs' cells without fakes: their Z is undefined
    root = sets["root"]
    code = main(["eval", str(root / "real"), str(root / "fake" / "cat"), "--metrics", "ct", "--real-test",
                 str(root / "test"), "--ct-cells", "2", "--json", *CLI_PIX])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    z = data["details"]["ct"]["z"]
    fakes = data["details"]["ct"]["fake_count"]
    assert len(z) == 2 and 0 in fakes
    assert all((v is None) == (n == 0) for v, n in zip(z, fakes))
    xr, xt, xf = _feats(_all(sets, "real")), _feats(_all(sets, "test")), _feats(sets["fake"]["cat"])
    assert data["metrics"]["C_T[pixels]"]["value"] == pytest.approx(M.ct_score(xr, xt, xf, n_cells=2).value,
                                                                    rel=1e-12)


def test_streaming_evaluator_names_copies_by_position():
    import torch

    from imgdist.evaluation.run import Evaluator

    real = _images(30, 21, 120)
    fake = _images(25, 22, 120)
    fake[[3, 7]] = real[[11, 2]]  # two exact copies
    ev = Evaluator(backbone="pixels", mode="native", metrics="copies,authenticity")
    ev.update(real=torch.from_numpy(real).permute(0, 3, 1, 2))
    ev.update(fake=torch.from_numpy(fake).permute(0, 3, 1, 2))
    result = ev.compute()
    found = M.copies(_feats(real), _feats(fake))
    assert result["copies"] == found.count >= 2
    pairs = result.details["copies"]["pairs"]
    assert {(p["fake"], p["real"]) for p in pairs if p["distance"] == 0} == {("fake #3", "real #11"),
                                                                             ("fake #7", "real #2")}
    assert result["authenticity"] == M.authenticity(_feats(real), _feats(fake)).value
