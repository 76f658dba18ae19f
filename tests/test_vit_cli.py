"""``imgdist backbones`` / ``imgdist weights`` for the ViT backbones: dims, input size, weights URL,
pinned size, and whether the file is present."""

from __future__ import annotations

import json

import pytest

from imgdist.extraction.backbones import clip, dinov2
from imgdist.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    return tmp_path / "cache" / "weights"


def test_backbones_lists_the_vits_with_their_weights(capsys, cache):
    code, out, _ = _run(capsys, "backbones", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    expected = {"dinov2-vit-s14": ("384", 224, 88_283_115), "dinov2-vit-b14": ("768", 224, 346_378_731),
                "dinov2-vit-l14": ("1024", 224, 1_217_586_395), "dinov2-vit-g14": ("1536", 224, 4_546_108_579),
                "clip-vit-b32": ("512", 224, 353_976_522), "clip-vit-l14": ("768", 224, 932_768_134),
                "clip-vit-l14-336": ("768", 336, 934_088_680)}
    for name, (dims, size, nbytes) in expected.items():
        row = rows[name]
        assert (row["dims"], row["input_size"], row["weights_bytes"]) == (dims, size, nbytes)
        assert row["weights_present"] is False
        spec = (dinov2.SPECS.get(name) or clip.SPECS.get(name))
        assert row["weights_url"] == spec.weights.url and row["weights_sha256"] == spec.weights.sha256
        assert row["default_mode"] == spec.default_mode
    code, out, _ = _run(capsys, "backbones")
    line = next(line for line in out.splitlines() if line.startswith("clip-vit-l14-336 "))
    assert "336" in line and "cmmd*" in line and "934.1 MB" in line and line.rstrip().endswith("no")
    assert clip.SPECS["clip-vit-l14-336"].weights.url in line


def test_weights_reports_present_files_and_wrong_sizes(capsys, cache):
    cache.mkdir(parents=True)
    # a sparse file of exactly the pinned size counts as present (it is verified on use)
    with open(cache / "dinov2_vits14_pretrain.pth", "wb") as f:
        f.truncate(88_283_115)
    (cache / "ViT-B-32.pt").write_bytes(b"too short")
    code, out, _ = _run(capsys, "weights", "--json")
    assert code == 0
    rows = {row["backbone"]: row for row in json.loads(out)}
    assert (rows["dinov2-vit-s14"]["present"], rows["dinov2-vit-s14"]["source"]) == ("yes", "cache")
    assert rows["dinov2-vit-s14"]["bytes"] == 88_283_115
    assert (rows["clip-vit-b32"]["present"], rows["clip-vit-b32"]["source"]) == ("no", "cache, wrong size")
    assert (rows["dinov2-vit-l14"]["present"], rows["dinov2-vit-l14"]["source"]) == ("no", "missing")
    code, out, _ = _run(capsys, "weights")
    assert "88.3 MB" in out and "cache, wrong size" in out


def test_eval_with_a_png_as_weights_is_one_line(capsys, tmp_path, cache):
    from PIL import Image

    png = tmp_path / "corrupt.png"
    Image.new("RGB", (4, 4)).save(png)
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(images / f"{i}.png")
    for backbone, arch in (("dinov2-vit-s14", "DINOv2 ViT-S/14 (dinov2-vit-s14)"),
                           ("clip-vit-l14-336", "CLIP ViT-L/14@336px image encoder (clip-vit-l14-336)")):
        code, out, err = _run(capsys, "eval", images, images, "--backbone", backbone, "--weights", png,
                              "--metrics", "fid", "--no-progress", "--no-cache")
        assert code == 2
        assert err.strip() == f"imgdist: error: {png}: not a weights file (it is a PNG image); expected {arch} weights"
