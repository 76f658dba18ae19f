"""Precision cover and recall cover (Cheema & Urner 2023) against a naive transcription of the
authors' code, by hand, and split over two ranks."""

import numpy as np
import pytest

from imgdist.metrics._shard import ALONE
from imgdist.metrics.pr_cover import pr_cover

from newer_metrics_a import fixture_sets, load_fixture, two_ranks

pytestmark = pytest.mark.usefixtures("one_thread")  # small float64 BLAS work: one thread is faster here


@pytest.fixture(scope="module")
def ref():
    return load_fixture()


def test_matches_the_authors_formula_on_every_set(ref):
    k, c = int(ref["prc_k"]), int(ref["prc_c"])
    for name in fixture_sets(ref):
        real, fake = ref[f"{name}_real"], ref[f"{name}_fake"]
        got = pr_cover(real, fake, k=k, c=c)
        # shares equal up to the samples with a distance within rounding of their radius
        off_p = abs(got.precision - float(ref[f"{name}_precision_cover"])) * len(fake)
        off_r = abs(got.recall - float(ref[f"{name}_recall_cover"])) * len(real)
        assert off_p <= int(ref[f"{name}_precision_cover_borderline"]) + 1e-9, name
        assert off_r <= int(ref[f"{name}_recall_cover_borderline"]) + 1e-9, name


def test_by_hand_on_a_line():
    # k = 2, c = 1: each sample's ball reaches its 2nd nearest other sample of its own set and
    # must hold 2 samples of the other set, a sample on the sphere counting
    real = np.array([[0.0], [4.0], [10.0]])
    fake = np.array([[0.0], [2.0], [3.0]])
    got = pr_cover(real, fake, k=2, c=1)
    # fake radii 3, 2, 3: fake 0 holds real 0 only; fake 2 holds reals 0 and 4, both on its sphere;
    # fake 3 holds real 4 and real 0 on its sphere
    assert got.precision == pytest.approx(2 / 3, rel=1e-15)
    # real radii 10, 6, 10: every real ball holds at least 2 fakes (real 10's reaches fake 0 on its sphere)
    assert got.recall == 1.0


def test_ball_needs_more_samples():
    with pytest.raises(ValueError, match="k = 9 needs more than 9 fake"):
        pr_cover(np.eye(12), np.eye(12)[:9], k=3, c=3)
    with pytest.raises(ValueError, match="k and c must be >= 1"):
        pr_cover(np.eye(12), np.eye(12), k=0)


def test_two_ranks_give_the_single_process_result(ref):
    real, fake = ref["ints_real"], ref["ints_fake"]
    alone = pr_cover(real, fake, chunk_size=31, shard=ALONE)
    for got in two_ranks(lambda shard: pr_cover(real, fake, chunk_size=31, shard=shard)):
        assert got == alone
    assert pr_cover(real, fake) == alone


def test_one_side_only(ref):
    real, fake = ref["modes_real"], ref["modes_fake"]
    both = pr_cover(real, fake)
    only_p, only_r = pr_cover(real, fake, recall=False), pr_cover(real, fake, precision=False)
    assert only_p.precision == both.precision and np.isnan(only_p.recall)
    assert only_r.recall == both.recall and np.isnan(only_r.precision)
    pr_cover(real, fake[:5], k=3, c=3, recall=False, precision=False)  # nothing asked: no size rule applies


def test_through_evaluate_features(ref):
    import imgdist

    real, fake = ref["offsupport_real"], ref["offsupport_fake"]
    both = imgdist.evaluate_features(real, fake, metrics="pr-cover", prc_k=3, prc_c=3)
    assert both.values == {"precision-cover": float(ref["offsupport_precision_cover"]),
                           "recall-cover": float(ref["offsupport_recall_cover"])}
    assert both.labels["recall-cover"] == "recall_cover[user-features]"
    alone = imgdist.evaluate_features(real, fake, metrics="precision-cover")
    assert alone.values == {"precision-cover": both.values["precision-cover"]}
    with pytest.raises(imgdist.ImgdistError, match=r"precision cover: prc_c \(--prc-c\) x prc_k \(--prc-k\) = 300 "
                                                   r"needs more than 300 fake images, and the fake set has 300"):
        imgdist.evaluate_features(real, fake, metrics="precision-cover", prc_k=100)
