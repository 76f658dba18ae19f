"""Bootstrap intervals: contain the estimate, narrow with N, reproducible, work for FID and KID."""

import numpy as np
import pytest

from imgdist.metrics import bootstrap_ci, bootstrap_replicates, fid_bootstrap_ci, fid_from_features, kid


def _mean_gap(r, f):
    return float(np.linalg.norm(r.mean(axis=0) - f.mean(axis=0)))


def _sets(n, seed=0, d=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.5


def _reference_interval(statistic, real, fake, n_boot, ci, seed):
    """The documented percentile bootstrap, written out: each replicate draws the real rows, then
    the fake rows, with replacement from one numpy Generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        rows_real = rng.integers(0, len(real), len(real))
        rows_fake = rng.integers(0, len(fake), len(fake))
        reps.append(statistic(real[rows_real], fake[rows_fake]))
    return tuple(np.quantile(reps, [(1 - ci) / 2, (1 + ci) / 2]))


def test_contains_point_estimate_and_narrows_with_n():
    widths = []
    for n in (100, 1600):
        real, fake = _sets(n)
        lo, hi = bootstrap_ci(_mean_gap, real, fake, n_boot=300)
        assert lo < _mean_gap(real, fake) < hi
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # ~1/sqrt(N): 4x narrower expected


def test_percentile_matches_quantiles_of_replicates():
    real, fake = _sets(60, seed=1)
    reps = bootstrap_replicates(_mean_gap, real, fake, n_boot=101, seed=3)
    lo, hi = bootstrap_ci(_mean_gap, real, fake, n_boot=101, ci=0.9, seed=3)
    assert (lo, hi) == (np.quantile(reps, 0.05), np.quantile(reps, 0.95))
    blo, bhi = bootstrap_ci(_mean_gap, real, fake, n_boot=101, ci=0.9, seed=3, method="basic")
    t = _mean_gap(real, fake)
    assert (blo, bhi) == pytest.approx((2 * t - hi, 2 * t - lo))


def test_resamples_with_replacement_each_set_to_its_size():
    seen = []

    def stat(r, f):
        seen.append((len(r), len(f), len(np.unique(r)), len(np.unique(f))))
        return 0.0

    bootstrap_replicates(stat, np.arange(50.0)[:, None], np.arange(30.0)[:, None], n_boot=20)
    assert all(a == 50 and b == 30 for a, b, _, _ in seen)
    assert any(u < 50 for _, _, u, _ in seen)  # duplicates: drawn with replacement


def test_reproducible_with_seed():
    real, fake = _sets(80, seed=2)
    a = bootstrap_ci(_mean_gap, real, fake, n_boot=50, seed=11)
    assert bootstrap_ci(_mean_gap, real, fake, n_boot=50, seed=11) == a
    assert bootstrap_ci(_mean_gap, real, fake, n_boot=50, seed=12) != a


def test_fid_interval():
    real, fake = _sets(1000, seed=4, d=4)
    lo, hi = fid_bootstrap_ci(real, fake, n_boot=100, seed=0)
    point = fid_from_features(real, fake)
    assert lo < point < hi and hi - lo < 0.5 * point
    assert fid_bootstrap_ci(real, fake, n_boot=100, seed=0) == (lo, hi)


def test_general_statistic_kid():
    real, fake = _sets(120, seed=5, d=6)

    def stat(r, f):
        return kid(r, f, subsets=2, subset_size=60, seed=0)[0]

    lo, hi = bootstrap_ci(stat, real, fake, n_boot=30, seed=0)
    assert lo < hi
    assert (lo, hi) == pytest.approx(_reference_interval(stat, real, fake, 30, 0.95, 0), rel=1e-12, abs=0)


def test_errors():
    real, fake = _sets(10)
    cases = [
        ({"ci": 1.5}, "ci"), ({"ci": 0.0}, "ci"), ({"ci": 1.0}, "ci"), ({"ci": "0.9"}, "ci"),
        ({"ci": True}, "ci"), ({"ci": np.nan}, "ci"),
        ({"n_boot": 0}, "n_boot"), ({"n_boot": -1}, "n_boot"), ({"n_boot": 2.5}, "n_boot"),
        ({"n_boot": "10"}, "n_boot"), ({"n_boot": True}, "n_boot"),
        ({"seed": -1}, "seed"), ({"seed": 0.5}, "seed"), ({"method": "bca"}, "method"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=f"^{name} must"):
            bootstrap_ci(_mean_gap, real, fake, **kwargs)
    with pytest.raises(ValueError, match="^statistic must be a function"):
        bootstrap_ci("fid", real, fake)
    with pytest.raises(ValueError, match="^fake must hold at least one sample"):
        bootstrap_replicates(_mean_gap, real, fake[:0])
    with pytest.raises(ValueError, match="^n_boot must"):
        fid_bootstrap_ci(real, fake, n_boot=0)
    # numpy scalars are accepted and mean what they say
    got = bootstrap_ci(_mean_gap, real, fake, n_boot=np.int64(5), ci=np.float32(0.9), seed=np.int64(1))
    assert got == pytest.approx(_reference_interval(_mean_gap, real, fake, 5, float(np.float32(0.9)), 1),
                                rel=1e-12, abs=0)
