"""Inception Score from classifier logits.

Paper: T. Salimans, I. Goodfellow, W. Zaremba, V. Cheung, A. Radford, X. Chen, "Improved
Techniques for Training GANs", NeurIPS 2016.

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = mean over the split of p(y|x)

computed on ``splits`` consecutive parts of the samples (part ``i`` is rows
``i*N//splits : (i+1)*N//splits``); the result is the mean and the standard deviation
(``ddof=0``) of the per-split scores. These are torch-fidelity's conventions; everything is float64
and the KL term uses ``log_softmax`` and a log-sum-exp marginal, so classes with vanishing
probability add ``0 * finite`` rather than ``0 * log 0`` (NaN).

Which logits: the FID Inception network (the 2015 TensorFlow graph) has 1008 outputs. The original
Inception Score code took ``pool3 @ W`` *without the bias* and a softmax over all 1008 columns;
torch-fidelity reproduces this as its ``logits_unbiased`` feature. Pass those logits (all 1008
columns) to match published Inception Scores; passing the biased logits gives a different number.

torch-fidelity shuffles the samples by default (``np.random.RandomState(2020).permutation``)
before splitting; ``shuffle=True`` with ``seed=2020`` reproduces that order exactly, while the
default here keeps the input order.
"""

from __future__ import annotations

import numpy as np

from ..checks import option
from ..errors import SetTooSmall
from ._arrays import real_float64
from .registry import LOGITS, Metric, Setting, register

__all__ = ["inception_score"]


def inception_score(
    logits: np.ndarray, splits: int = 10, shuffle: bool = False, seed: int = 2020
) -> tuple[float, float]:
    """Inception Score ``(mean, std)`` over ``splits`` parts of ``logits`` (N x classes).

    ``shuffle=True`` permutes the rows with ``np.random.RandomState(seed)`` first (torch-fidelity's
    default ordering with ``seed=2020``).
    """
    from scipy.special import log_softmax, logsumexp

    z = real_float64(logits, "logits")
    if z.ndim != 2:
        raise ValueError(f"logits must be a 2-D array (samples x classes), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinity")
    n = z.shape[0]
    if splits < 1 or splits > n:
        raise ValueError(f"splits must be between 1 and the number of samples ({n}), got {splits}")
    if shuffle:
        z = z[np.random.RandomState(seed).permutation(n)]
    log_p = log_softmax(z, axis=1)
    p = np.exp(log_p)
    scores = np.empty(splits, dtype=np.float64)
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_i, log_p_i = p[lo:hi], log_p[lo:hi]
        # log of the split's marginal p(y), finite even where every p(y|x) underflows to 0
        log_marginal = logsumexp(log_p_i, axis=0) - np.log(hi - lo)
        kl = (p_i * (log_p_i - log_marginal)).sum(axis=1)
        scores[i] = np.exp(kl.mean())
    return float(scores.mean()), float(scores.std())


# ---------------------------------------------------------------- registration


def _is(run) -> None:
    run.result.values["is"], run.result.stds["is"] = inception_score(run.fake.logits, splits=run.options.is_splits)


def _need_is_splits(options, counts, chosen) -> None:
    fake = counts.get("fake")
    if fake is not None and options.is_splits > fake:
        raise SetTooSmall(f"is: {option('is_splits')} {options.is_splits} is more than the {fake} fake images")


IS = register(Metric(
    "is", "Inception Score of the fakes (Salimans et al. 2016); backbones with a classifier", _is, "IS", "IS",
    lower_is_better=False, needs={LOGITS}, settings=(Setting("is_splits", 10, "Inception Score: splits", minimum=1),),
    check_sizes=_need_is_splits, needs_real=False, order=30,
    function=lambda sets, o: inception_score(sets.fake_logits, splits=o.is_splits)[0],
    paper="Salimans et al., Improved Techniques for Training GANs, NeurIPS 2016"))
