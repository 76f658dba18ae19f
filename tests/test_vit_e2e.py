"""End to end: ``imgdist.evaluate`` with the DINOv2 / CLIP stand-ins against torch-fidelity 0.4.

The references are ``torch_fidelity.calculate_metrics(input1=REAL, input2=FAKE,
feature_extractor='dinov2-vit-s-14' | 'clip-vit-b-32', fid=True, kid=True, kid_subset_size=24,
kid_subsets=5)`` on two folders of Fashion-MNIST PNGs (``tests/vit_stand_in.e2e_sets``: 24 training
images of all classes vs 24 test images of the footwear classes), stored by
``tools/peers/make_vit_fixtures.py``. torch-fidelity took the CLIP stand-in as a TorchScript file
(its ``feature_extractor_weights_path``) and the DINOv2 stand-in through ``torch.hub.load`` (its
loader accepts no file for DINOv2). Here the same folders are written again and imgdist reads them
with its own loader, resizes in mode ``tf`` and computes FID and KID.

With the subset size equal to the set size every KID subset is the whole set, so the random
subsets of the two tools cannot differ (torch-fidelity's spread over its 5 identical subsets is
its float32 rounding, ~1e-6). Tolerance: 1e-4 relative (the issue's requirement).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import imgdist
from vit_stand_in import (E2E_COUNT, FIXTURES, e2e_sets, images_digest, save_torchscript, stand_in_state_dict,
                          vit_peers, write_e2e_folders)

TOL = 1e-4
#: the entries of vit_peers.npz these tests read (the ``peers`` fixture holds no others)
PEER_KEYS = frozenset(["e2e_sha256", "e2e_kid_subsets"] + [f"e2e_{net}_{value}" for net in ("dinov2", "clip")
                                                           for value in ("fid", "kid_mean", "kid_std")])

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peers():
    return vit_peers(PEER_KEYS)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, peers):
    sets = e2e_sets()
    assert images_digest(sets["real"] + sets["fake"]) == str(peers["e2e_sha256"])
    return write_e2e_folders(tmp_path_factory.mktemp("e2e"), sets)


def run(folders, backbone, weights, peers):
    return imgdist.evaluate(folders["real"], folders["fake"], backbone=backbone, weights=weights, mode="tf",
                            metrics="fid,kid", kid_subset_size=E2E_COUNT,
                            kid_subsets=int(peers["e2e_kid_subsets"]), progress=False, workers=0,
                            batch_size=20)


def check(result, peers, prefix, label):
    tag = f"{label}:{result.provenance.weights_sha256[:8]}"  # stand-in weights: not the published ones
    assert result.labels == {"fid": f"FD[{tag}]", "kid": f"KD[{tag}]"}
    assert result.counts == {"real": E2E_COUNT, "fake": E2E_COUNT}
    fid, kid = float(peers[f"{prefix}_fid"]), float(peers[f"{prefix}_kid_mean"])
    assert abs(result["fid"] - fid) <= TOL * fid
    assert abs(result["kid"] - kid) <= TOL * abs(kid)
    # subsets of the whole sets: one estimate, no spread (torch-fidelity's is rounding noise)
    assert "kid" not in result.stds and float(peers[f"{prefix}_kid_std"]) < 1e-5
    return abs(result["fid"] - fid) / fid, abs(result["kid"] - kid) / abs(kid)


def test_dinov2_s14_matches_torch_fidelity(folders, peers, tmp_path):
    weights = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(stand_in_state_dict("dinov2_s"), weights)
    result = run(folders, "dinov2-vit-s14", weights, peers)
    check(result, peers, "e2e_dinov2", "dinov2-vit-s14")
    assert result.provenance.resize_mode == "tf"


def test_clip_b32_matches_torch_fidelity(folders, peers, tmp_path):
    weights = tmp_path / "ViT-B-32.pt"
    save_torchscript(stand_in_state_dict("clip_b32"), weights)  # the TorchScript route, like OpenAI's file
    result = run(folders, "clip-vit-b32", weights, peers)
    check(result, peers, "e2e_clip", "clip-vit-b32")


def test_every_entry_of_the_vit_fixture_is_read_by_a_default_test():
    """Each module that reads vit_peers.npz lists what it reads (its ``peers`` fixture holds nothing
    else, so a test cannot read an unlisted entry); together the lists must be the whole file, so a
    reference value the fixture script adds, or one a test stops comparing, is noticed. None of
    those tests needs an environment variable: the ViT-L/14 ones run trimmed (issue 25)."""
    import test_clip
    import test_dinov2

    with np.load(FIXTURES / "vit_peers.npz") as data:
        entries = set(data.files)
    listed = test_clip.PEER_KEYS | test_dinov2.PEER_KEYS | PEER_KEYS
    assert sorted(entries - listed) == [] and sorted(listed - entries) == []
