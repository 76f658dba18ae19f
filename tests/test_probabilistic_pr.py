"""P-precision and P-recall (Park & Kim 2023) against a naive transcription of the authors' code,
by hand, and split over two ranks."""

import math

import numpy as np
import pytest

from imgdist.metrics._shard import ALONE
from imgdist.metrics.probabilistic_pr import p_precision_recall

from newer_metrics_a import fixture_sets, load_fixture, two_ranks

pytestmark = pytest.mark.usefixtures("one_thread")  # small float64 BLAS work: one thread is faster here


@pytest.fixture(scope="module")
def ref():
    return load_fixture()


def test_matches_the_authors_formula_on_every_set(ref):
    a, k = float(ref["ppr_a"]), int(ref["ppr_k"])
    for name in fixture_sets(ref):
        got = p_precision_recall(ref[f"{name}_real"], ref[f"{name}_fake"], a=a, k=k)
        # continuous in the distances (p -> 0 at the ball's edge): no borderline samples
        assert got.precision == pytest.approx(float(ref[f"{name}_p_precision"]), rel=1e-9), name
        assert got.recall == pytest.approx(float(ref[f"{name}_p_recall"]), rel=1e-9), name
        assert got.radius_real == pytest.approx(float(ref[f"{name}_ppr_radius_real"]), rel=1e-12), name
        assert got.radius_fake == pytest.approx(float(ref[f"{name}_ppr_radius_fake"]), rel=1e-12), name


def test_by_hand_on_a_line():
    real = np.array([[0.0], [1.0], [2.0]])
    fake = np.array([[0.5], [10.0]])
    got = p_precision_recall(real, fake, a=1.5, k=1)
    # reals' R = 1.5 * mean(1, 1, 1); fake 0.5 lies in the balls of 0 and 1 (p = 2/3 each), fake 10 in none
    assert got.radius_real == 1.5
    assert got.precision == pytest.approx((1 - (1 / 3) * (1 / 3)) / 2, rel=1e-15)
    # fakes' R = 1.5 * 9.5 = 14.25 reaches every real from both fakes: 1 - p = d / R
    r = 14.25
    misses = [(0.5 / r) * (10 / r), (0.5 / r) * (9 / r), (1.5 / r) * (8 / r)]
    assert got.radius_fake == r
    assert got.recall == pytest.approx(np.mean([1 - m for m in misses]), rel=1e-15)


def test_zero_radius_gives_zero():
    # every real is the same point: R = 0, no ball holds anything (the authors' d >= R test)
    got = p_precision_recall(np.ones((6, 3)), np.ones((5, 3)), k=2)
    assert got.precision == 0.0 and got.recall == 0.0


def test_one_side_only(ref):
    real, fake = ref["gauss_real"], ref["gauss_fake"]
    both = p_precision_recall(real, fake)
    only_p = p_precision_recall(real, fake, recall=False)
    only_r = p_precision_recall(real, fake, precision=False)
    assert only_p.precision == both.precision and math.isnan(only_p.recall)
    assert only_r.recall == both.recall and math.isnan(only_r.precision)


def test_bad_settings():
    with pytest.raises(ValueError, match="a must be positive"):
        p_precision_recall(np.eye(6), np.eye(6), a=0.0)
    with pytest.raises(ValueError, match="k = 5 needs more than 5 fake"):
        p_precision_recall(np.eye(8), np.eye(8)[:5], k=5)


def test_two_ranks_give_the_single_process_bits(ref):
    real, fake = ref["offsupport_real"], ref["offsupport_fake"]
    alone = p_precision_recall(real, fake, chunk_size=29, shard=ALONE)
    for got in two_ranks(lambda shard: p_precision_recall(real, fake, chunk_size=29, shard=shard)):
        assert got == alone
    # other blocks: other BLAS blockings of the distances, same values to rounding
    whole = p_precision_recall(real, fake)
    assert whole.precision == pytest.approx(alone.precision, rel=1e-12)
    assert whole.recall == pytest.approx(alone.recall, rel=1e-12)


def test_through_evaluate_features(ref):
    import imgdist

    real, fake = ref["modes_real"], ref["modes_fake"]
    both = imgdist.evaluate_features(real, fake, metrics="ppr")
    assert both.values["p-precision"] == pytest.approx(float(ref["modes_p_precision"]), rel=1e-9)
    assert both.values["p-recall"] == pytest.approx(float(ref["modes_p_recall"]), rel=1e-9)
    assert both.details["ppr"]["radius_real"] == pytest.approx(float(ref["modes_ppr_radius_real"]), rel=1e-12)
    assert both.labels["p-precision"] == "p_precision[user-features]"
    # one of them: only its passes, the same value
    alone = imgdist.evaluate_features(real, fake, metrics="p-recall", ppr_a=1.2, ppr_k=4)
    assert set(alone.values) == {"p-recall"} and alone.values["p-recall"] == both.values["p-recall"]
    assert "radius_real" not in alone.details["ppr"]
    with pytest.raises(imgdist.ImgdistError, match=r"ppr_k \(--ppr-k\) 450 needs more than 450 fake images"):
        imgdist.evaluate_features(real, fake, metrics="p-recall", ppr_k=450)
    with pytest.raises(imgdist.ImgdistError, match=r"ppr_a \(--ppr-a\) must lie between"):
        imgdist.evaluate_features(real, fake, metrics="ppr", ppr_a=0)
