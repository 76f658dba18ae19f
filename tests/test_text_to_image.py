"""Text-to-image evaluation end to end: prompts beside images, FID and the CLIP score from one
decode of each image, ``imgdist score`` on one set, and the CLIP score through every route."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imgdist.cli import main
from imgdist.extraction.sources import FileSource
from imgdist.metrics.clip_score import clip_score_per_image
from stand_in_weights import save_stand_in
from text_stand_in import builtin_photos, stand_in_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8
FAST = ["--no-progress", "--no-cache", "--workers", "0"]


@pytest.fixture(scope="module")
def t2i(tmp_path_factory):
    """Real photo crops, their prompts, stand-in Inception and CLIP ViT-B/32 weights (both towers)."""
    root = tmp_path_factory.mktemp("t2i")
    photos = builtin_photos()
    rng = np.random.default_rng(0)
    prompts = {}
    for side in ("real", "fake"):
        (root / side).mkdir()
        for i in range(N):
            photo = photos[i % len(photos)]
            y, x = rng.integers(0, 60, 2)
            crop = np.ascontiguousarray(photo[y:y + 160, x:x + 180])
            Image.fromarray(crop).save(root / side / f"{i:02d}.png")
            if side == "fake":
                prompts[f"{i:02d}.png"] = f"photo {i}: " + ("a cat &amp; a cup " * (1 + 30 * (i == 3)))
    with open(root / "prompts.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "prompt"])
        writer.writerows(sorted(prompts.items()))
    clip = root / "clip-b32.pt"
    torch.save(stand_in_state_dict("clip_b32_full"), clip)
    return {"root": root, "prompts": prompts, "clip": clip, "inception": save_stand_in(root / "inception.pth")}


def _clip_reference(t2i):
    """The CLIP score computed here: imgdist's towers on the images and prompts, the score formula
    applied independently (tests/test_clip_text.py checks the towers against OpenAI's code)."""
    from imgdist.extraction.backbones import load_text_tower
    from imgdist.extraction.features import FeatureExtractor

    ex = FeatureExtractor("clip-vit-b32", weights=str(t2i["clip"]), progress=False, workers=0)
    image = ex.extract(str(t2i["root"] / "fake")).features.astype(np.float64)
    text = load_text_tower("clip-vit-b32", str(t2i["clip"])).encode_prompts(
        [t2i["prompts"][f"{i:02d}.png"] for i in range(N)]).embeddings.astype(np.float64)
    cos = (image * text).sum(1) / np.linalg.norm(image, axis=1) / np.linalg.norm(text, axis=1)
    return 100 * np.maximum(cos, 0)


def test_fid_and_clip_score_from_one_decode(t2i, monkeypatch, capsys, tmp_path):
    loads = []
    original = FileSource.load
    monkeypatch.setattr(FileSource, "load", lambda self, i: loads.append((self.label, i)) or original(self, i))
    root = t2i["root"]
    code = main(["eval", str(root / "real"), str(root / "fake"), "--prompts", str(root / "prompts.csv"),
                 "--metrics", "fid,clip-score@clip-vit-b32", "--weights", f"inception={t2i['inception']}",
                 "--weights", f"clip-vit-b32={t2i['clip']}", "--per-image", str(tmp_path / "pi.csv"), "--json",
                 *FAST])
    out = capsys.readouterr()
    assert code == 0, out.err
    # each image decoded once, though two networks saw it
    assert sorted(i for label, i in loads if label.endswith("fake")) == list(range(N))
    assert sorted(i for label, i in loads if label.endswith("real")) == list(range(N))
    data = json.loads(out.out)
    tag = next(k for k in data["metrics"] if k.startswith("CLIPScore"))
    assert tag.startswith("CLIPScore[clip-vit-b32:")
    expected = _clip_reference(t2i)
    assert data["metrics"][tag]["value"] == pytest.approx(expected.mean(), rel=1e-5)
    assert any(k.startswith("FD[inception:") for k in data["metrics"])  # each number names its network
    assert data["feature_spaces"][tag]["backbone"] == "clip-vit-b32"
    assert data["provenance"]["backbone"] == "inception"
    rows = list(csv.DictReader(open(tmp_path / "pi.csv")))
    np.testing.assert_allclose([float(r["clip_score"]) for r in rows], expected, rtol=1e-5)
    assert [r["prompt_truncated"] for r in rows] == ["yes" if i == 3 else "no" for i in range(N)]
    assert [r["prompt"] for r in rows] == [t2i["prompts"][f"{i:02d}.png"] for i in range(N)]
    assert any("1 of 8 prompts are longer than the text tower's 77 tokens" in w for w in data["warnings"])


def test_score_command_exactly_as_the_issue_writes_it(t2i, capsys, tmp_path):
    root = t2i["root"]
    code = main(["score", str(root / "fake"), "--prompts", str(root / "prompts.csv"), "--metrics", "clip-score",
                 "--backbone", "clip-vit-b32", "--weights", str(t2i["clip"]), "--per-image",
                 str(tmp_path / "pi.csv"), "--json", *FAST])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = json.loads(out.out)
    (label, item), = data["metrics"].items()
    assert item["value"] == pytest.approx(_clip_reference(t2i).mean(), rel=1e-5) and item["better"] == "higher"
    assert data["counts"] == {"fake": N}
    assert (tmp_path / "pi.csv").read_text().splitlines()[0] == "fake,clip_score,prompt,prompt_truncated"


def test_scale_is_printed_in_the_label(t2i, capsys):
    root = t2i["root"]
    code = main(["score", str(root / "fake"), "--prompts", str(root / "prompts.csv"), "--metrics", "clip-score",
                 "--backbone", "clip-vit-b32", "--weights", str(t2i["clip"]), "--clip-score-scale", "2.5",
                 "--json", *FAST])
    data = json.loads(capsys.readouterr().out)
    (label, item), = data["metrics"].items()
    assert label.endswith(",scale=2.5]")
    assert item["value"] == pytest.approx(0.025 * _clip_reference(t2i).mean(), rel=1e-5)


def test_score_function_defaults_as_the_command(t2i, capsys):
    """Without ``metrics``, ``imgdist.score`` computes what ``imgdist score`` does: every metric that
    needs no real set and applies (efficientnet-lite0 has a classifier and no text tower, and no
    prompts are given: is, vendi, rke), not a fixed list that names clip-score."""
    import imgdist

    folder = str(t2i["root"] / "fake")
    result = imgdist.score(folder, backbone="efficientnet-lite0", is_splits=2, progress=False, cache=False,
                           workers=0)
    code = main(["score", folder, "--backbone", "efficientnet-lite0", "--is-splits", "2", "--json", *FAST])
    out = capsys.readouterr()
    assert code == 0, out.err
    printed = {item["metric"]: item["value"] for item in json.loads(out.out)["metrics"].values()}
    assert set(printed) == {"is", "vendi", "rke"}
    assert set(result.values) == set(printed)
    for key, value in printed.items():
        assert result.values[key] == pytest.approx(value, rel=1e-12), key


def test_prompts_no_metric_reads_are_said_to_be_unread(t2i, capsys):
    """'all' on a network without a text tower leaves clip-score out; the prompt file the user gave
    is then named in a warning, not silently ignored."""
    root = t2i["root"]
    code = main(["score", str(root / "fake"), "--backbone", "efficientnet-lite0", "--is-splits", "2", "--prompts",
                 str(root / "prompts.csv"), "--json", *FAST])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "clip_score" not in out.out
    assert (f"imgdist: warning: --prompts {root / 'prompts.csv'} was not read: only clip-score use(s) prompts, none "
            "is among the metrics, and they need a network with a text tower (e.g. --metrics "
            "clip-score@clip-vit-b32)") in out.err.splitlines()


@pytest.mark.parametrize("args,message", [
    (["--metrics", "clip-score", "--backbone", "pixels"], "clip-score: needs a text tower for the prompts, which "
                                                         "pixels does not have"),
    (["--metrics", "fid,clip-score@clip-vit-b32", "--prompts", "{root}/missing.csv"], "missing.csv: no such prompt file"),
])
def test_refusals_are_one_line(t2i, capsys, args, message):
    root = t2i["root"]
    args = [a.replace("{root}", str(root)) for a in args]
    code = main(["eval", str(root / "real"), str(root / "fake"), *args, *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_sidecar_prompts_without_a_prompt_file(t2i, tmp_path, capsys):
    folder = tmp_path / "laion"
    folder.mkdir()
    for i in range(N):
        (folder / f"{i:02d}.png").write_bytes((t2i["root"] / "fake" / f"{i:02d}.png").read_bytes())
        (folder / f"{i:02d}.txt").write_text(t2i["prompts"][f"{i:02d}.png"])
    code = main(["score", str(folder), "--metrics", "clip-score", "--backbone", "clip-vit-b32", "--weights",
                 str(t2i["clip"]), "--json", *FAST])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert next(iter(data["metrics"].values()))["value"] == pytest.approx(_clip_reference(t2i).mean(), rel=1e-5)


def test_one_user_file_is_hashed_once_for_both_towers(t2i, monkeypatch):
    import hashlib

    from imgdist.extraction import weights
    from imgdist.extraction.features import FeatureExtractor

    expected = hashlib.sha256(t2i["clip"].read_bytes()).hexdigest()
    hashed = []
    original = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda path: hashed.append(str(path)) or original(path))
    ex = FeatureExtractor("clip-vit-b32", weights=str(t2i["clip"]), progress=False, workers=0)
    tower = ex.text_tower()
    # a file outside imgdist's cache gets no sidecar, so each tower would hash it on its own
    assert hashed == [str(t2i["clip"])]
    assert tower.weights_id == ex.provenance.weights_sha256 == expected
