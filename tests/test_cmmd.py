"""CMMD (Jayasumana et al., CVPR 2024) against an independent float64 NumPy implementation.

The reference here is the paper's formula computed the direct way: every pairwise difference
``x_i - y_j`` formed explicitly (no ``|x|^2 + |y|^2 - 2 x.y`` expansion, no chunks), the Gaussian
kernel ``exp(-|x - y|^2 / (2 sigma^2))`` with ``sigma = 10``, means over all pairs including the
diagonal (the biased estimator of the reference code), times 1000, on L2-normalised rows.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from imgdist.metrics import cmmd
from vit_stand_in import FIXTURES

cmmd_mod = importlib.import_module("imgdist.metrics.cmmd")  # the package re-exports the function


def reference_cmmd(x, y, sigma=10.0, scale=1000.0, normalize=True):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if normalize:
        x = x / np.sqrt((x * x).sum(1, keepdims=True))
        y = y / np.sqrt((y * y).sum(1, keepdims=True))

    def mean_kernel(a, b):
        diff = a[:, None, :] - b[None, :, :]
        return np.exp(-(diff * diff).sum(-1) / (2 * sigma**2)).mean()

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(11)
    real = rng.standard_normal((150, 64))
    fake = rng.standard_normal((120, 64)) * 1.3 + 0.4  # another distribution, another size
    return real, fake


def test_equals_the_float64_reference(sets):
    real, fake = sets
    expected = reference_cmmd(real, fake)
    assert 0.1 < expected < 1000  # normalised 64-d Gaussians: kernel values near 1
    assert abs(cmmd(real, fake) - expected) <= 1e-10 * expected


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunking_does_not_change_the_value(sets, chunk):
    real, fake = sets
    expected = reference_cmmd(real, fake)
    assert abs(cmmd(real, fake, chunk_size=chunk) - expected) <= 1e-10 * expected


def test_memory_stays_in_row_blocks(sets, monkeypatch):
    real, fake = sets
    seen = []
    original = cmmd_mod.distance_blocks

    def spy(a, b, chunk_size=None, *, same=False):
        for start, d in original(a, b, chunk_size, same=same):
            seen.append(d.shape)
            yield start, d

    monkeypatch.setattr(cmmd_mod, "distance_blocks", spy)
    cmmd(real, fake, chunk_size=16)
    assert seen and max(rows for rows, _ in seen) == 16


def test_on_clip_features_of_the_reference_tools():
    """CLIP ViT-B/32 stand-in embeddings as torch-fidelity and OpenAI's preprocess give them."""
    peers = np.load(FIXTURES / "vit_peers.npz")
    a, b = peers["clip_b32_tf"], peers["clip_b32_openai"]
    expected = reference_cmmd(a, b)
    assert abs(cmmd(a, b) - expected) <= 1e-10 * expected


def test_closed_forms():
    e = np.eye(4)
    # one point each, orthonormal: |a - b|^2 = 2
    assert cmmd(e[:1], e[1:2]) == pytest.approx(1000 * (2 - 2 * np.exp(-2 / 200)), rel=1e-13, abs=0)
    # identical sets: every mean is the same
    x = np.random.default_rng(0).standard_normal((30, 8))
    assert abs(cmmd(x, x)) < 1e-12
    assert abs(cmmd(x, 5 * x)) < 1e-12  # normalisation removes the scale
    assert cmmd(x, 5 * x, normalize=False) > 1
    # sigma and scale enter as documented
    y = x[::-1] + 0.3
    assert cmmd(x, y, scale=1.0, sigma=2.0) == pytest.approx(reference_cmmd(x, y, sigma=2.0, scale=1.0), rel=1e-10)


def test_bad_inputs_name_the_operand():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="dimensions differ"):
        cmmd(x, np.ones((3, 5)))
    with pytest.raises(ValueError, match="fake contains NaN"):
        cmmd(x, np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="real has an all-zero embedding"):
        cmmd(np.zeros((2, 4)), x)
    with pytest.raises(ValueError, match="at least one sample"):
        cmmd(np.ones((0, 4)), x)
    with pytest.raises(ValueError, match="real must be a 2-D array"):
        cmmd(np.ones(4), x)


# ------------------------------------------------------------------ through evaluate and the CLI

@pytest.fixture(scope="module")
def clip_b32_weights(tmp_path_factory):
    import torch

    from vit_stand_in import stand_in_state_dict

    path = tmp_path_factory.mktemp("clip") / "clip_b32_standin.pt"
    torch.save(stand_in_state_dict("clip_b32"), path)
    return path


def test_cmmd_through_evaluate_equals_the_metric_on_the_same_features(clip_b32_weights, one_thread):
    import imgdist

    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    fake = np.clip(real.astype(int) + rng.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)
    kwargs = dict(backbone="clip-vit-b32", weights=str(clip_b32_weights), progress=False, workers=0)
    result, fr, ff = imgdist.evaluate(real, fake, metrics="cmmd", return_features=True, **kwargs)
    assert result["cmmd"] == cmmd(fr.features, ff.features) > 0
    # not the published protocol (another encoder, and stand-in weights): labelled and warned
    assert result.labels["cmmd"] == f"CMMD[clip-vit-b32:{fr.provenance.weights_sha256[:8]}]"
    assert any("not comparable with published CMMD values" in w for w in result.warnings)
    # 'all' on a CLIP backbone includes CMMD; on another backbone it does not
    assert "cmmd" in imgdist.evaluate(real, fake, metrics="all", pr_k=2, dc_k=2, **kwargs).values
    assert "cmmd" not in imgdist.evaluate(real, fake, metrics="all", backbone="pixels", pr_k=2, dc_k=2,
                                          progress=False, workers=0).values


def test_cmmd_selects_its_own_encoder(tmp_path, monkeypatch, capsys):
    from imgdist.cli import main

    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    # no backbone named: CMMD's CLIP ViT-L/14@336 (its weights are not here: the error names it)
    assert main(["eval", str(tmp_path / "a.npy"), str(tmp_path / "a.npy"), "--metrics", "cmmd",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clip-vit-l14-336 weights not found" in err[0]
    # CMMD beside other metrics: each on its own network, from one decode (both weights needed here)
    assert main(["eval", str(tmp_path / "a.npy"), str(tmp_path / "a.npy"), "--metrics", "fid,cmmd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inception weights not found" in err[0]
