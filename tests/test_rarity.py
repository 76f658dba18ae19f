"""Rarity score (Han et al. 2023) against a naive transcription of the authors' code, by hand, and
split over two ranks."""

import math

import numpy as np
import pytest

from imgdist.metrics._shard import ALONE
from imgdist.metrics.rarity import rarity

from newer_metrics_a import fixture_sets, load_fixture, two_ranks

pytestmark = pytest.mark.usefixtures("one_thread")  # small float64 BLAS work: one thread is faster here


@pytest.fixture(scope="module")
def ref():
    return load_fixture()


def test_matches_the_authors_formula_on_every_set(ref):
    k = int(ref["rarity_k"])
    for name in fixture_sets(ref):
        real, fake = ref[f"{name}_real"], ref[f"{name}_fake"]
        got = rarity(real, fake, k=k)
        border = int(ref[f"{name}_rarity_borderline"])
        expected_scores = ref[f"{name}_rarity_scores"]
        # which fakes are inside a ball may differ only for fakes on some ball's sphere
        flipped = int(np.sum(np.isnan(got.scores) != np.isnan(expected_scores)))
        assert flipped <= border, name
        assert abs(got.inside - float(ref[f"{name}_rarity_inside"])) * len(fake) <= border, name
        both = ~np.isnan(got.scores) & ~np.isnan(expected_scores)
        np.testing.assert_allclose(got.scores[both], expected_scores[both], rtol=1e-9, err_msg=name)
        if flipped == 0:
            assert got.value == pytest.approx(float(ref[f"{name}_rarity"]), rel=1e-6), name


def test_by_hand_on_a_line():
    # radii (k = 1): 0 -> 1, 1 -> 1, 3 -> 2, 7 -> 4; the balls are open (d < r)
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[0.5], [5.0], [20.0], [1.0], [2.0]])
    got = rarity(real, fake, k=1)
    np.testing.assert_array_equal(got.scores, [1.0, 4.0, np.nan, 1.0, 2.0])
    assert got.value == 2.0 and got.inside == 0.8 and got.k == 1


def test_no_fake_inside_any_ball():
    got = rarity(np.eye(4), np.full((3, 4), 100.0), k=2)
    assert math.isnan(got.value) and got.inside == 0.0 and np.isnan(got.scores).all()


def test_k_needs_more_reals():
    with pytest.raises(ValueError, match="k = 4 needs more than 4"):
        rarity(np.eye(4), np.eye(4), k=4)


def test_two_ranks_give_the_single_process_bits(ref):
    real, fake = ref["modes_real"], ref["modes_fake"]
    alone = rarity(real, fake, k=3, chunk_size=37, shard=ALONE)
    for got in two_ranks(lambda shard: rarity(real, fake, k=3, chunk_size=37, shard=shard)):
        np.testing.assert_array_equal(got.scores, alone.scores)
        assert got.value == alone.value and got.inside == alone.inside
    # other blocks: other BLAS blockings of the distances, same values to rounding
    np.testing.assert_allclose(rarity(real, fake, k=3).scores, alone.scores, rtol=1e-12)


def test_through_evaluate_features(ref):
    import imgdist

    real, fake = ref["offsupport_real"], ref["offsupport_fake"]
    result = imgdist.evaluate_features(real, fake, metrics="rarity", rarity_k=3, per_image=True)
    assert result.values["rarity"] == pytest.approx(float(ref["offsupport_rarity"]), rel=1e-9)
    assert result.details["rarity"] == {"k": 3, "inside": pytest.approx(float(ref["offsupport_rarity_inside"]))}
    np.testing.assert_allclose(np.array(result.per_image["rarity"], dtype=float), ref["offsupport_rarity_scores"],
                               rtol=1e-9)  # NaN where the authors' code leaves a fake out
    assert "mean over the 63.3% of fakes inside one" in result.table()
    assert result.labels["rarity"] == "rarity[user-features]"
    # no fake inside: the value is NaN (null in JSON) and a warning says why
    far = imgdist.evaluate_features(real, fake + 1000.0, metrics="rarity")
    assert math.isnan(far.values["rarity"]) and "no fake lies inside" in far.warnings[0]
    with pytest.raises(imgdist.ImgdistError, match=r"rarity_k \(--rarity-k\) 400 needs more than 400 real"):
        imgdist.evaluate_features(real, fake, metrics="rarity", rarity_k=400)


def test_shares_realisms_real_pass_when_k_is_the_same(ref, monkeypatch):
    # realism (run first) makes the reals' k-NN pass; rarity at the same k reads it instead of a second one
    import imgdist
    import imgdist.metrics.rarity as module

    real, fake = ref["offsupport_real"], ref["offsupport_fake"]
    alone = rarity(real, fake, k=3)
    passes = []
    own = module._radii
    monkeypatch.setattr(module, "_radii", lambda *a, **kw: passes.append(a[1]) or own(*a, **kw))
    shared = imgdist.evaluate_features(real, fake, metrics="realism,rarity", pr_k=3, rarity_k=3, per_image=True)
    assert passes == []
    assert shared.values["rarity"] == alone.value  # the same radii, bit for bit
    np.testing.assert_array_equal(np.array(shared.per_image["rarity"], dtype=float), alone.scores)
    other = imgdist.evaluate_features(real, fake, metrics="realism,rarity", pr_k=3, rarity_k=4)
    assert passes == [(4,)] and other.values["rarity"] == rarity(real, fake, k=4).value
