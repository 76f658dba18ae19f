"""RKE mode count and RRKE (Jalali et al. 2023) against the rke-score package, closed forms, and
split over two ranks."""

import math

import numpy as np
import pytest

from imgdist.metrics._shard import ALONE
from imgdist.metrics.rke import rke_mode_count, rrke

from newer_metrics_a import fixture_sets, load_fixture, two_ranks

pytestmark = pytest.mark.usefixtures("one_thread")  # small float64 BLAS work: one thread is faster here


@pytest.fixture(scope="module")
def ref():
    return load_fixture()


def test_matches_rke_score_on_every_set(ref):
    for name in fixture_sets(ref):
        real, fake = ref[f"{name}_real"], ref[f"{name}_fake"]
        for i, sigma in enumerate(ref[f"{name}_rke_sigmas"]):
            where = f"{name}, sigma {sigma}"
            assert rke_mode_count(fake, sigma) == pytest.approx(float(ref[f"{name}_rke"][i]), rel=1e-9), where
            assert rke_mode_count(real, sigma) == pytest.approx(float(ref[f"{name}_rke_real"][i]), rel=1e-9), where
            # offsupport's sigma 50 makes the kernel nearly rank one: RRKE ~ 0.008, which the
            # K^T K route would miss by 5e-4 relative
            assert rrke(real, fake, sigma) == pytest.approx(float(ref[f"{name}_rrke"][i]), rel=1e-9), where


def test_closed_forms():
    a, b = np.zeros((1, 3)), np.array([[3.0, 0.0, 4.0]])  # 5 apart
    sigma = 2.0
    t = math.exp(-25 / (2 * sigma**2))  # k(a, b)
    # two samples: mean k^2 over the 4 ordered pairs = (2 + 2 t^2) / 4
    assert rke_mode_count(np.vstack([a, b]), sigma) == pytest.approx(2 / (1 + t * t), rel=1e-14)
    assert rke_mode_count(np.repeat(b, 7, axis=0), sigma) == 1.0
    assert rke_mode_count(1000.0 * np.eye(5), 1.0) == 5.0  # no kernel between distinct samples
    # one sample each: K_XY = t, so RRKE = -log(t^2) = |a - b|^2 / sigma^2
    assert rrke(a, b, sigma) == pytest.approx(25 / sigma**2, rel=1e-14)
    # two against one: K = (1, t)^T, singular value sqrt(1 + t^2), normalised by sqrt(2)
    expected = -math.log((1 + t * t) / 2)
    assert rrke(np.vstack([a, b]), a, sigma) == pytest.approx(expected, rel=1e-14)
    assert rrke(a, np.vstack([a, b]), sigma) == pytest.approx(expected, rel=1e-14)
    # identical sets of far-apart samples: K = I, |I / n|_* = 1
    far = 1000.0 * np.eye(6)
    assert rrke(far, far, 1.0) == 0.0
    assert rrke(far, far + 500.0, 1.0) == math.inf


def test_blocks_and_roles(ref):
    real, fake = ref["modes_real"], ref["modes_fake"]
    whole = rrke(real, fake, 6.0)
    assert rrke(real, fake, 6.0, chunk_size=17) == pytest.approx(whole, rel=1e-12)
    assert rrke(fake, real, 6.0) == pytest.approx(whole, rel=1e-12)  # singular values of K and K^T


def test_bad_sigma():
    for sigma in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma must be a positive number"):
            rke_mode_count(np.eye(3), sigma)


def test_two_ranks_give_the_single_process_bits(ref):
    fake = ref["gauss_fake"]
    alone = rke_mode_count(fake, 4.0, chunk_size=23, shard=ALONE)
    assert two_ranks(lambda shard: rke_mode_count(fake, 4.0, chunk_size=23, shard=shard)) == [alone, alone]
    assert rke_mode_count(fake, 4.0) == pytest.approx(alone, rel=1e-12)


def test_through_evaluate_features(ref):
    import imgdist

    real, fake = ref["gauss_real"], ref["gauss_fake"]
    result = imgdist.evaluate_features(real, fake, metrics="rke,rrke", rke_sigma=4.0)
    assert result.values["rke"] == pytest.approx(float(ref["gauss_rke"][0]), rel=1e-9)
    assert result.values["rrke"] == pytest.approx(float(ref["gauss_rrke"][0]), rel=1e-9)
    assert result.details["rke"] == {"sigma": 4.0, "real": pytest.approx(float(ref["gauss_rke_real"][0]), rel=1e-9)}
    assert "mode count of the fakes with a Gaussian kernel of sigma 4" in result.table()
    assert (result.labels["rke"], result.labels["rrke"]) == ("RKE[user-features]", "RRKE[user-features]")
    # RKE needs no reals (imgdist score); the default sigma is too small for features 100 apart
    fakes_only = imgdist.evaluate_features(None, 100.0 * np.eye(5), metrics="rke")
    assert fakes_only.values["rke"] == 5.0 and "real" not in fakes_only.details["rke"]
    assert "about the number of fakes (5)" in fakes_only.warnings[0]
    far = imgdist.evaluate_features(real, fake + 1e4, metrics="rrke")
    assert far.values["rrke"] == math.inf and "RRKE is infinite" in far.warnings[0]
    with pytest.raises(imgdist.ImgdistError, match=r"rke_sigma \(--rke-sigma\) must lie between"):
        imgdist.evaluate_features(real, fake, metrics="rke", rke_sigma=0)


def test_rrke_refuses_a_triangle_that_cannot_fit(ref, monkeypatch):
    import imgdist
    from imgdist.metrics import rke as module

    real, fake = ref["gauss_real"], ref["gauss_fake"]
    monkeypatch.setattr(module, "available_memory", lambda device: 2**20)  # 1 MiB: 400 x 400 x 8 bytes do not fit
    with pytest.raises(imgdist.ImgdistError, match=r"rrke: exact RRKE holds a 400 x 400 float64 triangle"):
        imgdist.evaluate_features(real, fake, metrics="rrke")
    assert "rrke" not in imgdist.evaluate_features(real, fake, metrics="all").values  # named explicitly only
