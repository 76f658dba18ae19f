"""TopP&R (imgdist.metrics.top_pr) against top-pr 0.2.1's own numbers.

tests/fixtures/top_pr_peers.npz is made by tools/peers/make_top_pr_fixtures.py, which runs the
package's ``compute_top_pr`` on four feature sets (d = 64 twice, so the projection runs, one of
them with a cluster of fakes off the reals' support; d = 8; d = 32) and records its shares, its
bandwidths and bands, and its per-sample scores. Continuous values must agree within 1e-6
relative; each sample's decision (score above its band) must agree unless the sample is
borderline, and the borderline samples are counted.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest

from imgdist.errors import ImgdistError
from imgdist.metrics._shard import Shard
from imgdist.metrics.top_pr import min_samples, random_projection, top_pr, top_pr_scores

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "top_pr_peers.npz")
SETS = ("shift64", "offsupport64", "mix8", "edge32")
RTOL = 1e-6
#: a decision is borderline when its score lies within this share of the band from it
BORDER = 1e-9


@pytest.fixture(scope="module")
def peers():
    with np.load(FIXTURE) as f:
        return {key: f[key] for key in f.files}


@pytest.fixture(scope="module")
def ours(peers):
    out = {}
    for name in SETS:
        real, fake = peers[f"{name}_real"].astype(np.float32), peers[f"{name}_fake"].astype(np.float32)
        out[name] = (top_pr(real, fake), top_pr_scores(real, fake))
    return out


def _decisions(scores, band):
    return scores > band, np.abs(scores - band) <= BORDER * abs(band)


def _disagreements(ours_scores, ref_scores, ours_band, ref_band):
    """(decisions that differ, borderline samples on either side, of those that differ: how many are
    not borderline)."""
    mine, border_mine = _decisions(ours_scores, ours_band)
    ref, border_ref = _decisions(ref_scores, ref_band)
    differ = mine != ref
    border = border_mine | border_ref
    return int(differ.sum()), int(border.sum()), int((differ & ~border).sum())


@pytest.mark.parametrize("name", SETS)
def test_shares_equal_the_package_up_to_borderline_samples(peers, ours, name):
    result, s = ours[name]
    fr, ff = s.kde_factor("real"), s.kde_factor("fake")
    checks = (
        (s.real_on_real * fr, peers[f"{name}_score_rr"], s.band_real * fr, peers[f"{name}_c_real"]),
        (s.fake_on_fake * ff, peers[f"{name}_score_gg"], s.band_fake * ff, peers[f"{name}_c_fake"]),
        (s.fake_on_real * ff, peers[f"{name}_score_rg"], s.band_fake * ff, peers[f"{name}_c_fake"]),
        (s.real_on_fake * fr, peers[f"{name}_score_gr"], s.band_real * fr, peers[f"{name}_c_real"]),
    )
    differ = border = 0
    for mine, ref, band_mine, band_ref in checks:
        d, b, unexplained = _disagreements(mine, ref, band_mine, band_ref)
        assert unexplained == 0, f"{name}: {unexplained} decisions differ from top-pr's and are not borderline"
        differ, border = differ + d, border + b
    # every decision differing is borderline; on these sets there are none of either
    assert (differ, border) == (0, 0)
    for ours_value, key in ((result.precision, "fidelity"), (result.recall, "diversity"), (result.f1, "f1")):
        assert ours_value == pytest.approx(float(peers[f"{name}_{key}"]), rel=RTOL, abs=0.0), key


@pytest.mark.parametrize("name", SETS)
def test_bandwidths_bands_and_scores_match_the_package(peers, ours, name):
    _, s = ours[name]
    assert s.bandwidth_real == pytest.approx(float(peers[f"{name}_h_real"]), rel=RTOL)
    assert s.bandwidth_fake == pytest.approx(float(peers[f"{name}_h_fake"]), rel=RTOL)
    fr, ff = s.kde_factor("real"), s.kde_factor("fake")
    # the package's units: our values times (pi / 4h)^d
    assert s.band_real * fr == pytest.approx(float(peers[f"{name}_c_real"]), rel=RTOL)
    assert s.band_fake * ff == pytest.approx(float(peers[f"{name}_c_fake"]), rel=RTOL)
    for mine, key in ((s.real_on_real * fr, "score_rr"), (s.fake_on_fake * ff, "score_gg"),
                      (s.fake_on_real * ff, "score_rg"), (s.real_on_fake * fr, "score_gr")):
        ref = peers[f"{name}_{key}"]
        # entry by entry, relative to the largest score (scores far off a support are ~0)
        assert np.max(np.abs(mine - ref)) <= RTOL * np.max(np.abs(ref)), key
    assert s.projected == (peers[f"{name}_real"].shape[1] > 32)


def test_projection_is_the_packages_bit_for_bit(peers):
    for side in ("real", "fake"):
        x = peers[f"shift64_{side}"].astype(np.float32)
        np.testing.assert_array_equal(random_projection(x), peers[f"shift64_proj_{side}"])


def test_off_support_cluster_lowers_precision_only(ours):
    # a quarter of the fakes sit in a cluster far from every real: none of them counts for
    # precision, while the reals stay covered
    result, _ = ours["offsupport64"]
    assert result.precision < 0.76 and result.recall == 1.0
    assert result.significant_fake - result.fake_in_real >= 90 * 0.95


def test_disjoint_and_identical_sets():
    # far apart: each set's KDE is exactly 0 at the other's samples, so nothing counts
    rng = np.random.default_rng(3)
    real = rng.standard_normal((200, 4)).astype(np.float32)
    result = top_pr(real, real + np.float32(1e3))
    assert (result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0)
    assert result.significant_real > 0 and result.significant_fake > 0
    # identical: one KDE, two bands (different resamples), so the significant sets are nested
    # and one share is exactly 1
    same = top_pr(real, real.copy())
    assert max(same.precision, same.recall) == 1.0 and min(same.precision, same.recall) > 0.8


def test_low_dimensions_are_refused_with_the_reason():
    x = np.random.default_rng(0).standard_normal((300, 3))
    with pytest.raises(ImgdistError, match=r"3-dimensional features are not supported.*top-pr 0\.2\.1") as err:
        top_pr(x, x)
    assert "\n" not in str(err.value)


def test_too_few_samples_for_the_balloon_estimate():
    assert min_samples(8) == 41 and min_samples(32) == 161 and min_samples(2048) == 161
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match=r"fake set has 40 samples.*k = 5 x 8 = 40"):
        top_pr(rng.standard_normal((60, 8)), rng.standard_normal((40, 8)))
    top_pr(rng.standard_normal((41, 8)), rng.standard_normal((41, 8)))  # the smallest accepted


def test_repeated_rows_give_a_zero_bandwidth_error():
    x = np.repeat(np.random.default_rng(2).standard_normal((3, 6)), 100, axis=0)
    with pytest.raises(ImgdistError, match="real set's bandwidth is 0"):
        top_pr(x, x)


def test_global_generators_are_left_alone():
    import torch

    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((200, 40)), rng.standard_normal((200, 40))
    np.random.seed(7)
    torch.manual_seed(7)
    top_pr(real, fake)
    assert np.random.rand() == np.random.RandomState(7).rand()
    assert torch.rand(1).item() == torch.rand(1, generator=torch.Generator().manual_seed(7)).item()


def test_shards_combine_to_the_single_process_result(peers):
    real = peers["mix8_real"].astype(np.float32)
    fake = peers["mix8_fake"].astype(np.float32)
    alone = top_pr_scores(real, fake, chunk_size=37)
    world = 2
    barrier = threading.Barrier(world)
    slots: list = [None] * world
    results: list = [None] * world

    def gather_for(rank):
        def gather(array):
            slots[rank] = array
            barrier.wait()
            out = list(slots)
            barrier.wait()
            return out
        return gather

    def run(rank):
        results[rank] = top_pr_scores(real, fake, chunk_size=37, shard=Shard(rank, world, gather_for(rank)))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        for key in ("real_on_real", "fake_on_fake", "fake_on_real", "real_on_fake"):
            np.testing.assert_array_equal(getattr(got, key), getattr(alone, key))
        assert (got.band_real, got.band_fake) == (alone.band_real, alone.band_fake)
        assert math.isclose(got.bandwidth_real, alone.bandwidth_real, rel_tol=0, abs_tol=0)


# ---------------------------------------------------------------- through the evaluation


def test_evaluate_features_gives_the_packages_values(peers):
    import imgdist

    real = peers["mix8_real"].astype(np.float32)
    fake = peers["mix8_fake"].astype(np.float32)
    result = imgdist.evaluate_features(real, fake, metrics="top-pr")
    assert result.values == {"top-precision": float(peers["mix8_fidelity"]),
                             "top-recall": float(peers["mix8_diversity"])}
    details = result.details["top_pr"]
    assert details["f1"] == pytest.approx(float(peers["mix8_f1"]), rel=RTOL)
    assert details["bandwidth_real"] == pytest.approx(float(peers["mix8_h_real"]), rel=RTOL)
    assert details["projected_from"] is None and details["alpha"] == 0.1
    notes = [line for line in result.table().splitlines() if line.startswith("TopP&R")]
    assert len(notes) == 1 and "alpha 0.1, 8 dimensions" in notes[0]
    # the setting reaches the function; one metric alone keeps its note
    other = imgdist.evaluate_features(real, fake, metrics="top-recall", top_pr_alpha=0.3)
    assert other.values == {"top-recall": top_pr(real, fake, alpha=0.3).recall}
    assert sum(line.startswith("TopP&R (alpha 0.3") for line in other.table().splitlines()) == 1


def test_size_rule_and_selection():
    import imgdist
    from imgdist.errors import SetTooSmall
    from imgdist.evaluation.plan import parse_metrics

    rng = np.random.default_rng(5)
    with pytest.raises(SetTooSmall, match=r"each set needs at least 161 images .* the fake set has 160"):
        imgdist.evaluate_features(rng.standard_normal((200, 64)), rng.standard_normal((160, 64)),
                                  metrics="top-precision")
    with pytest.raises(ImgdistError, match=r"top_pr_alpha \(--top-pr-alpha\)"):
        imgdist.evaluate_features(rng.standard_normal((200, 64)), rng.standard_normal((200, 64)),
                                  metrics="top-pr", top_pr_alpha=1.0)
    assert parse_metrics("top-pr") == ("top-precision", "top-recall")
    assert "top-precision" not in parse_metrics("all")  # 161 images per set: named, not implied
