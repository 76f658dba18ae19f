"""Inception Score: known cases and a direct formula."""

import numpy as np
import pytest

from imgdist.metrics import inception_score


def _direct_is(logits, splits):
    """exp(mean_x sum_y p log(p / p_y)) per split, written with explicit normalisation."""
    logits = np.asarray(logits, dtype=np.float64)
    scores = []
    n = len(logits)
    for i in range(splits):
        part = logits[i * n // splits : (i + 1) * n // splits]  # torch-fidelity's boundaries
        e = np.exp(part - part.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        py = p.mean(axis=0)
        kl = [sum(pi[c] * np.log(pi[c] / py[c]) for c in range(len(pi)) if pi[c] > 0) for pi in p]
        scores.append(np.exp(np.mean(kl)))
    return np.mean(scores), np.std(scores)


def test_uniform_predictions_score_one():
    mean, std = inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_distinct_confident_classes_score_number_of_classes():
    classes, splits = 20, 5
    logits = np.tile(60.0 * np.eye(classes), (splits, 1))  # each split: every class once
    mean, std = inception_score(logits, splits=splits)
    assert mean == pytest.approx(classes, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-8)


def test_matches_direct_formula():
    rng = np.random.default_rng(0)
    logits = 2.0 * rng.standard_normal((103, 37))  # 103 rows: unequal splits
    mean, std = inception_score(logits, splits=10)
    ref_mean, ref_std = _direct_is(logits, 10)
    assert mean == pytest.approx(ref_mean, rel=1e-12)
    assert std == pytest.approx(ref_std, rel=1e-9)


def test_split_boundaries_are_floor_of_i_n_over_splits():
    # rows i*N//splits : (i+1)*N//splits; with N=7 and 3 splits: sizes 2, 2, 3
    rng = np.random.default_rng(1)
    logits = 3 * rng.standard_normal((7, 5))
    scores = [inception_score(logits[a:b], splits=1)[0] for a, b in ((0, 2), (2, 4), (4, 7))]
    mean, std = inception_score(logits, splits=3)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)  # ddof = 0


def test_shuffle_uses_randomstate_permutation():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((50, 8))
    perm = np.random.RandomState(2020).permutation(50)
    assert inception_score(logits, 5, shuffle=True) == inception_score(logits[perm], 5)


def test_extreme_logits_stay_finite():
    logits = np.zeros((20, 6))
    logits[:, 0] = 2000.0  # every other class underflows to probability 0
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(1.0) and std == 0.0  # two identical splits


def test_input_errors():
    """imgdist's own messages: without its checks numpy raises a ValueError of its own on a 1-D
    array (an AxisError) or gives NaN for an empty split."""
    with pytest.raises(ValueError, match=r"^logits must be a 2-D array \(samples x classes\), got shape \(10,\)$"):
        inception_score(np.zeros(10))
    with pytest.raises(ValueError, match=r"^splits must be between 1 and the number of samples \(5\), got 6$"):
        inception_score(np.zeros((5, 3)), splits=6)
