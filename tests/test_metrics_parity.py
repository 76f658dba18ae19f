"""imgdist's metrics against values the reference tools computed themselves.

tests/fixtures/metrics_peers.npz is made by tools/peers/make_metric_fixtures.py in the peers
environment: pytorch-fid 0.3.0 (FID), torch-fidelity 0.4.0 (KID, IS), prdc 0.2 (precision, recall,
density, coverage). Nothing in it comes from imgdist.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest

from imgdist.metrics import frechet_distance, inception_score, kid, kid_full, mmd2_unbiased, polynomial_kernel, prdc
from needs import require_file

FIXTURE = Path(__file__).parent / "fixtures" / "metrics_peers.npz"


@pytest.fixture(scope="module")
def peers():
    with np.load(require_file(FIXTURE, "committed; tools/peers/make_metric_fixtures.py makes it")) as z:
        return {k: z[k] for k in z.files}


def test_fid_matches_pytorch_fid(peers):
    got = frechet_distance(peers["mu_real"], peers["sigma_real"], peers["mu_fake"], peers["sigma_fake"])
    assert got == pytest.approx(float(peers["fid_pytorch_fid"]), rel=1e-6)


def test_kid_full_matches_torch_fidelity(peers):
    # torch-fidelity computes in float32; 1e-4 relative is well above its rounding
    n = len(peers["fake"])
    got = kid_full(peers["real"][:n], peers["fake"])
    assert got == pytest.approx(float(peers["kid_full_equal"]), rel=1e-4)
    # subsets at least as large as both sets are the whole sets: torch-fidelity's spread over them
    # is zero (rounding at most); imgdist computes the full estimator once and reports no spread
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, std = kid(peers["real"][:n], peers["fake"], subsets=3, subset_size=n + 1)
    assert mean == pytest.approx(float(peers["kid_equal_mean"]), rel=1e-4)
    assert std is None and abs(float(peers["kid_equal_std"])) < 1e-7


def test_kid_subsets_match_torch_fidelity(peers):
    # draw torch-fidelity's subsets (RandomState(seed); real then fake indices per subset) and
    # score each with imgdist's estimator: checks its mean/std conventions on the same subsets
    real, fake = peers["real"], peers["fake"]
    rs = np.random.RandomState(int(peers["kid_seed"]))
    size = int(peers["kid_subset_size"])
    mmds = []
    for _ in range(int(peers["kid_subsets"])):
        x = real[rs.choice(len(real), size, replace=False)]
        y = fake[rs.choice(len(fake), size, replace=False)]
        mmds.append(mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)))
    assert np.mean(mmds) == pytest.approx(float(peers["kid_mean"]), rel=1e-4)
    assert np.std(mmds) == pytest.approx(float(peers["kid_std"]), rel=1e-4)
    # imgdist's own (differently seeded) subsets land within the spread
    mean, _ = kid(real, fake, subsets=50, subset_size=size)
    assert abs(mean - float(peers["kid_mean"])) < 3 * float(peers["kid_std"])


def test_inception_score_matches_torch_fidelity(peers):
    logits = peers["logits"]
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(float(peers["isc_mean"]), rel=1e-4)
    assert std == pytest.approx(float(peers["isc_std"]), rel=1e-4)
    mean, std = inception_score(logits, splits=10, shuffle=True, seed=2020)
    assert mean == pytest.approx(float(peers["isc_shuffled_mean"]), rel=1e-4)
    assert std == pytest.approx(float(peers["isc_shuffled_std"]), rel=1e-4)


@pytest.mark.parametrize("tag", ["", "int_"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("chunk_size", [None, 64])
def test_prdc_matches_prdc_package_exactly(peers, tag, k, chunk_size):
    got = prdc(peers[f"{tag}real"], peers[f"{tag}fake"], k=k, chunk_size=chunk_size)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(got, name) == float(peers[f"prdc_{tag}k{k}_{name}"]), name
