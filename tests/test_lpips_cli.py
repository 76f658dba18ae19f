"""``--lpips`` and ``--dists`` in ``imgdist compare``, ``robustness`` and ``demo``: the values are the
reference packages' (fixtures of ``tools/peers/make_lpips_fixtures.py``), end to end from PNG files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import imgdist
import lpips_stand_in as S
from imgdist.cli import main
from imgdist.pairs.compare import resize_to
from imgdist.pairs.perceptual import load_models

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The 64 x 64 parity pairs whose first image is the same crop, as PNGs: ``a.png`` and a folder
    of the second images; the stand-in weights in the packages' layouts."""
    root = tmp_path_factory.mktemp("lpips_cli")
    _, a, b, reference = next(p for p in S.parity_pairs() if p[0] == "64x64")
    same_a = [k for k in range(len(a)) if np.array_equal(a[k], a[0])]
    Image.fromarray(a[0]).save(root / "a.png")
    (root / "b").mkdir()
    for k in same_a:
        Image.fromarray(b[k]).save(root / "b" / f"pair{k:02d}.png")
    torch.save(S.lpips_state_dict("squeeze"), root / "lpips_squeeze.pth")
    torch.save(S.dists_state_dict(), root / "dists.pth")
    return {"root": root, "a": root / "a.png", "b": root / "b", "pairs": same_a, "reference": reference,
            "lpips": root / "lpips_squeeze.pth", "dists": root / "dists.pth",
            "lpips_label": "LPIPS[squeeze:" + hashlib.sha256((root / "lpips_squeeze.pth").read_bytes()).hexdigest()[:8]
                           + "]",
            "dists_label": "DISTS[" + hashlib.sha256((root / "dists.pth").read_bytes()).hexdigest()[:8] + "]"}


def _flags(setup, dists=True):
    out = ["--backbone", "none", "--lpips", "squeeze", "--lpips-weights", setup["lpips"]]
    return out + (["--dists", "--dists-weights", setup["dists"]] if dists else [])


def test_compare_a_pair(capsys, setup):
    k = setup["pairs"][1]
    code, out, err = _run(capsys, "compare", setup["a"], setup["b"] / f"pair{k:02d}.png", *_flags(setup), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["lpips"] == pytest.approx(setup["reference"]["lpips_squeeze"][k], rel=1e-5)
    assert result["dists"] == pytest.approx(setup["reference"]["dists"][k], rel=1e-5)
    assert result["labels"] == {"lpips": setup["lpips_label"], "dists": setup["dists_label"]}
    assert result["sum_abs_diff"] > 0 and result["device"] == "cpu"
    code, out, err = _run(capsys, "compare", setup["a"], setup["b"] / f"pair{k:02d}.png", *_flags(setup))
    assert code == 0, err
    assert f"learned distances: lpips = {setup['lpips_label']}, dists = {setup['dists_label']}" in out
    row = next(line for line in out.splitlines() if line.startswith("lpips "))
    assert float(row.split()[1]) == pytest.approx(result["lpips"], rel=1e-5) and "Zhang et al. 2018" in row


def test_compare_a_folder_sorted_by_lpips(capsys, setup):
    code, out, err = _run(capsys, "compare", setup["a"], setup["b"], *_flags(setup), "--sort-by", "lpips", "--json")
    assert code == 0, err
    rows = json.loads(out)["comparisons"]
    values = [r["lpips"] for r in rows]
    assert values == sorted(values) and len(rows) == len(setup["pairs"])
    for r in rows:
        k = int(r["b"].rsplit("pair", 1)[1][:2])
        assert r["lpips"] == pytest.approx(setup["reference"]["lpips_squeeze"][k], rel=1e-5, abs=1e-12)
        assert r["dists"] == pytest.approx(setup["reference"]["dists"][k], rel=1e-5, abs=2e-7)
    assert rows[0]["lpips"] == 0  # the identical pair


def test_python_api(setup):
    k = setup["pairs"][2]
    b = setup["b"] / f"pair{k:02d}.png"
    result = imgdist.compare(str(setup["a"]), str(b), backbone=None, lpips="squeeze", lpips_weights=setup["lpips"])
    assert result.values()["lpips"] == pytest.approx(setup["reference"]["lpips_squeeze"][k], rel=1e-5)
    assert result.labels == {"lpips": setup["lpips_label"]} and "dists" not in result.values()


def test_the_first_image_runs_through_each_network_once(setup, monkeypatch):
    from imgdist.extraction.perceptual.dists import DISTS
    from imgdist.extraction.perceptual.lpips import LPIPS
    from imgdist.pairs.compare import _PERCEPTUAL_BATCH

    a = np.array(Image.open(setup["a"]))
    images = {k: np.array(Image.open(setup["b"] / f"pair{k:02d}.png")) for k in setup["pairs"]}
    pairs = [k for k in setup["pairs"] if not np.array_equal(images[k], a)]  # a among them would count
    others = [images[k] for k in pairs]
    count = 2 * _PERCEPTUAL_BATCH // len(others) + 1  # three batches of the learned distances
    passes_of_a = {"lpips": 0, "dists": 0}
    for cls in (LPIPS, DISTS):
        def counted(self, x, original=cls.features):
            passes_of_a[self.key] += sum(bool(torch.equal(row, self.to_input(_tensor(a))[0])) for row in x)
            return original(self, x)
        monkeypatch.setattr(cls, "features", counted)
    results = imgdist.compare_many(a, others * count, backbone=None, lpips="squeeze", lpips_weights=setup["lpips"],
                                   dists=True, dists_weights=setup["dists"])
    assert len(results) == len(others) * count > 2 * _PERCEPTUAL_BATCH
    assert passes_of_a == {"lpips": 1, "dists": 1}
    for r, k in zip(results, pairs * count):
        assert r.values()["lpips"] == pytest.approx(setup["reference"]["lpips_squeeze"][k], rel=1e-5, abs=1e-12)
        assert r.values()["dists"] == pytest.approx(setup["reference"]["dists"][k], rel=1e-5, abs=2e-7)
        assert r.labels == {"lpips": setup["lpips_label"], "dists": setup["dists_label"]}


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


def test_sizes_differ(capsys, setup, tmp_path):
    a = np.array(Image.open(setup["a"]))
    wide = np.asarray(Image.fromarray(a).resize((80, 64), Image.BICUBIC))
    Image.fromarray(wide).save(tmp_path / "wide.png")
    code, out, err = _run(capsys, "compare", setup["a"], tmp_path / "wide.png", *_flags(setup, dists=False))
    assert code == 2 and out == ""
    assert err.strip().endswith("is 80x64, a.png is 64x64: pixel distances and lpips need equal sizes (use --resize "
                                "/ resize=True to resize it, bicubic)")
    code, out, err = _run(capsys, "compare", setup["a"], tmp_path / "wide.png", *_flags(setup, dists=False),
                          "--resize", "--json")
    assert code == 0, err
    back = torch.from_numpy(np.array(resize_to(wide, (64, 64)))[None]).permute(0, 3, 1, 2)
    model = load_models("squeeze", setup["lpips"])[0]
    with torch.inference_mode():
        expected = model(model.to_input(torch.from_numpy(a[None]).permute(0, 3, 1, 2)), model.to_input(back)).item()
    assert json.loads(out)["lpips"] == pytest.approx(expected, rel=1e-5)


def test_robustness_column(capsys, setup, tmp_path):
    photo = tmp_path / "cat.png"  # a part of a built-in photo: enough for shifts of 8 px, quick
    source = S.FIXTURES.parent.parent / "src" / "imgdist" / "data" / "chelsea.jpg"
    Image.fromarray(np.asarray(Image.open(source).convert("RGB"))[40:136, 100:196]).save(photo)
    code, out, err = _run(capsys, "robustness", photo, *_flags(setup, dists=False), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["labels"] == {"lpips": setup["lpips_label"]}
    shift1 = result["perturbations"]["shift1"]["lpips"]
    assert shift1["ratio"] == pytest.approx(shift1["distance"] / result["reference"]["lpips"])
    # recomputed here: the photo against its 1-px shift, one pair through the network
    from imgdist.pairs.perturbations import shift

    image = np.array(Image.open(photo).convert("RGB"))
    model = load_models("squeeze", setup["lpips"])[0]
    with torch.inference_mode():
        x, y = (model.to_input(torch.from_numpy(v[None]).permute(0, 3, 1, 2)) for v in (image, shift(image, 1)))
        assert shift1["distance"] == pytest.approx(model(x, y).item(), rel=1e-5)
    code, out, err = _run(capsys, "robustness", photo, *_flags(setup, dists=False))
    assert f"lpips: {setup['lpips_label']}" in out and out.splitlines()[5].split()[-1] == "lpips"


def test_demo_with_lpips_weights(capsys, setup, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "cache"))
    code, out, err = _run(capsys, "demo", "--crops", "6", "--no-progress", "--device", "cpu", "--lpips", "squeeze",
                          "--lpips-weights", setup["lpips"], "--json")
    assert code == 0, err
    numbers = json.loads(out)
    ratio = {p: d["lpips"]["ratio"] for p, d in numbers["robustness"]["perturbations"].items()}
    reading = numbers["lpips"]["reading"]
    assert numbers["lpips"]["label"] == setup["lpips_label"]
    pct = f"{100 * ratio['shift1']:.2g}%"
    assert reading.startswith(f"{setup['lpips_label']} puts the 1-pixel shift {pct} of the way to another photo;")
    assert f"move it {100 * ratio['noise20']:.2g}% and {100 * ratio['blur4']:.2g}%" in reading
    assert "not the published ones" in reading
