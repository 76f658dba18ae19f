"""Reduced precision: bf16 on a CPU with bf16 instructions, and numbers that say so.

A bf16 feature differs from its fp32 twin in the third significant digit, so a bf16 number must
never print, save or compare as an fp32 one: provenance records the precision, every label names
it, and statistics of different precisions are not compared without ``--force``.
"""

from __future__ import annotations

import numpy as np
import pytest

from imgdist import checks
from imgdist.cli import main
from imgdist.errors import ImgdistError, ProvenanceError
from imgdist.extraction.features import FeatureExtractor
from imgdist.extraction.provenance import Provenance
from imgdist.evaluation.results import metric_label
from imgdist.extraction.stats import GaussianStats
from stand_in_weights import parity_images

pytestmark = pytest.mark.usefixtures("one_thread")

bf16_cpu = pytest.mark.skipif(not checks.cpu_has_bf16(), reason="this CPU has no bf16 instructions")


@bf16_cpu
def test_bf16_features_are_close_to_fp32_but_not_equal():
    images = parity_images()
    f32 = FeatureExtractor("efficientnet-lite0", progress=False).embed_images(images)[0]
    ex = FeatureExtractor("efficientnet-lite0", progress=False, precision="bf16")
    f16 = ex.embed_images(images)[0]
    scale = np.abs(f32).max()
    assert 0 < np.abs(f16 - f32).max() <= 0.05 * scale
    cos = (f16 * f32).sum(1) / np.linalg.norm(f16, axis=1) / np.linalg.norm(f32, axis=1)
    assert cos.min() > 0.999
    assert ex.provenance.precision == "bf16" and "bf16" in ex.provenance.summary()


def test_labels_name_a_reduced_precision():
    published = "6726825d" + "0" * 56  # the published Inception hash prefix
    fid = Provenance(backbone="inception", weights_sha256=published, resize_mode="pytorch-fid", feature_layer="pool")
    assert metric_label("fid", fid) == "FID" and metric_label("kid", fid) == "KID"
    bf16 = Provenance(**{**fid.to_dict(), "precision": "bf16"})
    assert metric_label("fid", bf16) == "FD[inception,bf16]"
    assert metric_label("is", bf16) == "IS[inception,bf16]"
    lite = Provenance(backbone="efficientnet-lite0", feature_layer="pool", precision="fp16")
    assert metric_label("precision", lite) == "precision[efficientnet-lite0,fp16]"
    cmmd = Provenance(backbone="clip-vit-l14-336", resize_mode="cmmd", feature_layer="pool", precision="bf16")
    assert metric_label("cmmd", cmmd) == "CMMD[clip-vit-l14-336,bf16]"


def test_precision_travels_in_statistics_files_and_blocks_comparison(tmp_path):
    rng = np.random.default_rng(0)
    base = dict(backbone="pixels", resize_mode="antialias", feature_layer="pool")
    a = GaussianStats(provenance=Provenance(**base, precision="bf16")).update(rng.normal(size=(20, 4)))
    b = GaussianStats(provenance=Provenance(**base)).update(rng.normal(size=(20, 4)))
    a.save(tmp_path / "a.npz")
    loaded = GaussianStats.load(tmp_path / "a.npz")
    assert loaded.provenance.precision == "bf16"
    with pytest.raises(ProvenanceError, match="precision bf16 vs fp32"):
        loaded.frechet_distance(b)
    assert np.isfinite(loaded.frechet_distance(b, force=True))


def test_files_without_a_recorded_precision_are_fp32(tmp_path):
    rng = np.random.default_rng(1)
    stats = GaussianStats(provenance=Provenance(backbone="pixels", feature_layer="pool")).update(rng.normal(size=(9, 3)))
    stats.save(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as data:
        old = {k: data[k] for k in data.files if k != "precision"}
    np.savez(tmp_path / "old.npz", **old)
    assert GaussianStats.load(tmp_path / "old.npz").provenance.precision == "fp32"


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ImgdistError, match="fp16 is only offered on GPU"):
        FeatureExtractor("pixels", precision="fp16", device="cpu")


def test_bf16_on_a_cpu_without_bf16_instructions_is_refused(monkeypatch):
    monkeypatch.setattr(checks, "cpu_has_bf16", lambda: False)
    with pytest.raises(ImgdistError, match="no bf16 instructions"):
        FeatureExtractor("pixels", precision="bf16", device="cpu")


@bf16_cpu
def test_cli_prints_bf16_results_labelled(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(2)
    for side, shift in (("real", 0), ("fake", 30)):
        folder = tmp_path / side
        folder.mkdir()
        for i in range(12):
            image = np.clip(rng.normal(120 + shift, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i}.png")
    code = main(["eval", str(tmp_path / "real"), str(tmp_path / "fake"), "--backbone", "pixels",
                 "--metrics", "fid", "--precision", "bf16", "--no-progress", "--no-cache"])
    out = capsys.readouterr().out
    assert code == 0 and "FD[pixels,bf16]" in out
    assert next(line for line in out.splitlines() if line.startswith("backbone:")).endswith("precision bf16")


@pytest.mark.parametrize("other", [pytest.param({"precision": "bf16"}, marks=bf16_cpu), {"fuse": False}])
def test_the_cache_keeps_precisions_and_folding_apart(tmp_path, other):
    """Rows cached by an fp32 folded run are not what a bf16 or an unfolded run computes: each
    reads only its own, equal to its uncached features."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(parity_images()):
        Image.fromarray(image).save(folder / f"{i}.png")
    cache = tmp_path / "cache"
    first = FeatureExtractor("efficientnet-lite0", progress=False, cache=str(cache)).extract(str(folder))
    ex = FeatureExtractor("efficientnet-lite0", progress=False, cache=str(cache), **other)
    cached = ex.extract(str(folder)).features
    uncached = FeatureExtractor("efficientnet-lite0", progress=False, **other).extract(str(folder)).features
    np.testing.assert_array_equal(cached, uncached)
    assert not np.array_equal(cached, first.features)


def test_a_callers_tf32_flags_in_either_api_family_never_make_imgdist_raise():
    """Issue 23, item 1: every sequence of a caller's settings (legacy ``allow_tf32`` and
    ``set_float32_matmul_precision``, and the ``fp32_precision`` attributes where torch has them)
    around fp32 and tf32 extractions, in a fresh interpreter (tests/tf32_sequences.py): no
    extraction raises, the network sees strict float32 (or TF32 for tf32), and everything the
    caller can observe afterwards is what it would be without imgdist, also after a later global
    setting that shows what still inherits. At 0c5d37c on torch 2.13, 59 of the 143 sequences
    raised PyTorch's "mix of the legacy and new APIs" RuntimeError inside the guard."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import torch

    script = Path(__file__).with_name("tf32_sequences.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    new_api = hasattr(torch.backends.cuda.matmul, "fp32_precision")
    assert len(rows) == (11 * 11 + 2 * 11 if new_api else 5 * 5 + 2 * 5)
    issue = ["X", "legacy matmul.allow_tf32=True", "X"]
    assert any(row["steps"][:3] == issue for row in rows)
    bad = [row for row in rows if row["raised"] or row["inside"] or not row["same_for_the_caller"]]
    assert not bad, bad[:3]
