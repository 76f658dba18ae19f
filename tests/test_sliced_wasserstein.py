"""Sliced Wasserstein distance: closed forms, and the definition transcribed naively."""

import numpy as np
import pytest

from imgdist.metrics.sliced_wasserstein import sliced_wasserstein

from newer_metrics_a import fixture_sets, load_fixture

pytestmark = pytest.mark.usefixtures("one_thread")  # small float64 BLAS work: one thread is faster here


def test_matches_the_definition_on_every_set():
    ref = load_fixture()
    for name in fixture_sets(ref):
        got = sliced_wasserstein(ref[f"{name}_real"], ref[f"{name}_fake"], directions=int(ref["sw_directions"]),
                                 seed=int(ref["sw_seed"]))
        assert got == pytest.approx(float(ref[f"{name}_sw"]), rel=1e-9), name


def test_one_dimension_is_the_sorted_difference():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 1)), rng.gamma(2.0, size=(200, 1))
    expected = np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2)  # theta = +-1 give the same
    assert sliced_wasserstein(x, y, directions=5) == pytest.approx(expected, rel=1e-12)


def test_shifted_copy_tends_to_the_squared_shift():
    rng = np.random.default_rng(4)
    d, directions = 8, 1000
    m = rng.normal(size=d)
    x, z = rng.normal(size=(300, d)), 5.0 * rng.standard_t(3, size=(300, d))
    # a shifted copy moves every projection by theta . m: the value depends on m and the directions only
    got = sliced_wasserstein(x, x + m, directions=directions)
    assert sliced_wasserstein(z, z + m, directions=directions) == pytest.approx(got, rel=1e-9)
    # d (theta . m)^2 has mean |m|^2 and standard deviation |m|^2 sqrt(2 (d - 1) / (d + 2))
    spread = np.sqrt(2 * (d - 1) / (d + 2) / directions)
    assert abs(got / np.sum(m * m) - 1) < 5 * spread


def test_gaussians_tend_to_the_squared_mean_difference():
    rng = np.random.default_rng(5)
    d = 4
    m = np.full(d, 0.5)  # |m|^2 = 1
    x, y = rng.normal(size=(4000, d)), rng.normal(size=(5000, d)) + m
    assert sliced_wasserstein(x, y) == pytest.approx(1.0, rel=0.15)
    assert sliced_wasserstein(x, rng.normal(size=(4000, d))) < 0.02


def test_scale_roles_seed_and_blocks():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(150, 5)), rng.normal(size=(170, 5)) + 0.3
    base = sliced_wasserstein(x, y, directions=200, seed=1)
    assert sliced_wasserstein(3.0 * x, 3.0 * y, directions=200, seed=1) == pytest.approx(9.0 * base, rel=1e-12)
    assert sliced_wasserstein(y, x, directions=200, seed=1) == base  # the larger set is subsampled either way
    assert sliced_wasserstein(x, y, directions=200, seed=1, block=7) == base
    assert sliced_wasserstein(x, y, directions=200, seed=2) != base


def test_bad_input():
    with pytest.raises(ValueError, match="directions must be >= 1"):
        sliced_wasserstein(np.eye(3), np.eye(3), directions=0)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        sliced_wasserstein(np.eye(3), np.eye(4))


def test_through_evaluate_features():
    import imgdist

    rng = np.random.default_rng(7)
    # features travel as float32
    x, y = rng.normal(size=(120, 6)).astype(np.float32), (rng.normal(size=(90, 6)) + 0.5).astype(np.float32)
    result = imgdist.evaluate_features(x, y, metrics="sw", sw_directions=300, seed=4)
    assert result.values["sw"] == sliced_wasserstein(x, y, directions=300, seed=4)
    assert result.details["sw"] == {"directions": 300, "seed": 4, "samples": 90}
    assert result.labels["sw"] == "SW[user-features]"
    with pytest.raises(imgdist.ImgdistError, match=r"sw_directions \(--sw-directions\) must be at least 1"):
        imgdist.evaluate_features(x, y, metrics="sw", sw_directions=0)
