"""Features computed elsewhere (N x d arrays) as the sides of an evaluation: every feature metric
runs on them, labelled as user features, never as FID."""

from __future__ import annotations

import json

import numpy as np
import pytest

import imgdist
from imgdist import metrics as M
from imgdist.cli import main


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 12)), rng.normal(size=(250, 12)) * 1.1 + 0.3
    np.save(root / "real.npy", real)
    np.savez(root / "fake.npz", features=fake)
    return root, real, fake


def test_a_2d_array_file_is_a_feature_matrix(feats, capsys):
    root, real, fake = feats
    assert main(["eval", str(root / "real.npy"), str(root / "fake.npz"), "--metrics", "fid,kid,prdc", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["metrics"]) == {f"{m}[user-features]" for m in ("FD", "KD", "precision", "recall", "density",
                                                                     "coverage")}
    expected = M.frechet_distance(*M.mean_cov(real), *M.mean_cov(fake))
    assert data["metrics"]["FD[user-features]"]["value"] == pytest.approx(expected, rel=1e-9)
    pr = M.prdc(real.astype(np.float32), fake.astype(np.float32), k=5, pr_k=3)
    assert data["metrics"]["precision[user-features]"]["value"] == pr.precision
    assert data["provenance"]["backbone"] == "user-features"


def test_evaluate_features_takes_plain_arrays(feats):
    _, real, fake = feats
    result = imgdist.evaluate_features(real, fake, metrics="fid,sw", sw_directions=50)
    assert result.labels == {"fid": "FD[user-features]", "sw": "SW[user-features]"}
    assert result["fid"] == pytest.approx(M.frechet_distance(*M.mean_cov(real), *M.mean_cov(fake)), rel=1e-9)


@pytest.mark.parametrize("extra,message", [
    (["--backbone", "inception"], "--backbone: the sides are features computed elsewhere"),
    (["--metrics", "fid@dinov2-vit-s14"], "NAME@BACKBONE: the sides are features computed elsewhere"),
    (["--metrics", "is"], "is: needs a classifier"),
])
def test_what_features_cannot_give_is_one_line(feats, capsys, extra, message):
    root, _, _ = feats
    assert main(["eval", str(root / "real.npy"), str(root / "fake.npz"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_features_beside_images_are_refused(feats, tmp_path, capsys):
    root, _, _ = feats
    np.save(tmp_path / "images.npy", np.zeros((5, 8, 8, 3), np.uint8))
    assert main(["eval", str(root / "real.npy"), str(tmp_path / "images.npy")]) == 2
    assert "real.npy is an N x d feature matrix, and the fake side is not" in capsys.readouterr().err
