"""Vendi score: the effective number of distinct samples in a set, from a similarity kernel.

Papers:
- D. Friedman, A. B. Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning",
  TMLR 2023: ``VS = exp(-sum_i l_i log l_i)``, ``l_i`` the eigenvalues of ``K / N`` for an
  ``N x N`` similarity matrix ``K`` with unit diagonal (``0 log 0 = 0``).
- A. P. Pasarkar, A. B. Dieng, "Cousins of the Vendi Score: A Family of Similarity-Based Diversity
  Metrics for Science and Machine Learning", AISTATS 2024: the order-q scores (Hill numbers of the
  spectrum) ``VS_q = exp(log(sum_i l_i^q) / (1 - q))``; ``q = 1`` is the limit above and
  ``q = inf`` gives ``1 / max_i l_i``. Small ``q`` weighs rare samples more, large ``q`` less.

Here ``K`` is the cosine-similarity kernel, ``K = Xn Xn^T`` with ``Xn`` the rows of the features
scaled to unit L2 norm (like ``vendi_score.vendi.score_X``). ``VS = 1`` for N identical samples and
``VS = N`` for N mutually orthogonal ones.

Route: ``Xn Xn^T / N`` (N x N) and ``Xn^T Xn / N`` (d x d) have the same non-zero eigenvalues, so
the smaller of the two is built and decomposed (like ``vendi_score.vendi.score_dual`` for N > d):
time O(N d min(N, d) + min(N, d)^3), memory O(min(N, d)^2) plus one float64 block of at most
``chunk_size`` rows (or columns) of the features -- the features are never copied whole.

Numerics: float64 throughout. Eigenvalues at or below ``m * eps * max_eigenvalue`` (``m`` the size
of the decomposed matrix, ``eps`` float64's machine epsilon) are rounding noise of zero eigenvalues
(any N x N kernel with N > d has at least N - d of them) and count as zero. This matters for
``q < 1``, where ``sum l^q`` over noise of size 1e-17 would otherwise add up visibly; the
``vendi-score`` package keeps every positive eigenvalue, so the two agree exactly when the kernel
has full rank and differ only by that noise otherwise.

Zero-norm features (an all-zero feature vector) have no cosine similarity: they are refused with a
ValueError naming the row, rather than silently counted as a sample orthogonal to all others (what
``vendi-score``'s normalisation would do).
"""

from __future__ import annotations

import math

import numpy as np

from ._arrays import as_features
from .prdc import DEFAULT_BLOCK_BYTES
from .registry import FEATURES, Metric, Section, register

__all__ = ["vendi_from_spectrum", "vendi_score", "vendi_spectrum"]


def _row_norms(x: np.ndarray, block: int, name: str) -> np.ndarray:
    norms = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), block):
        b = np.asarray(x[start:start + block], dtype=np.float64)
        norms[start:start + len(b)] = np.sqrt(np.einsum("ij,ij->i", b, b))
    if not np.all(np.isfinite(norms)):
        raise ValueError(f"{name} contains NaN or infinity")
    bad = np.flatnonzero(norms == 0)
    if len(bad):
        raise ValueError(f"{name} row {bad[0]} has zero norm ({len(bad)} such rows): cosine similarity "
                         "is undefined for an all-zero feature vector")
    return norms


def vendi_spectrum(x, chunk_size: int | None = None, name: str = "features") -> np.ndarray:
    """Eigenvalues of ``K / N`` (cosine kernel, descending, noise-level ones removed; they sum to 1).

    ``chunk_size``: rows (N > d) or columns (N <= d) of the features converted to float64 at a time
    (default: blocks of about 64 MiB).
    """
    import scipy.linalg

    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        x = as_features(x, name)  # converts, or refuses, whatever else was given
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x features), got shape {x.shape}")
    n, d = x.shape
    if n == 0 or d == 0:
        raise ValueError(f"{name} holds no samples or no feature dimensions (shape {x.shape})")
    # a block holds chunk_size rows of d values (N > d) or chunk_size columns of N values
    block = max(1, int(chunk_size) if chunk_size else DEFAULT_BLOCK_BYTES // (8 * min(n, d)))
    norms = _row_norms(x, block if n > d else max(1, DEFAULT_BLOCK_BYTES // (8 * d)), name)
    if n > d:
        gram = np.zeros((d, d), dtype=np.float64)
        for start in range(0, n, block):
            b = np.asarray(x[start:start + block], dtype=np.float64) / norms[start:start + block, None]
            gram += b.T @ b
    else:
        gram = np.zeros((n, n), dtype=np.float64)
        for start in range(0, d, block):
            b = np.asarray(x[:, start:start + block], dtype=np.float64) / norms[:, None]
            gram += b @ b.T
    gram /= n
    w = scipy.linalg.eigvalsh(gram, overwrite_a=True, check_finite=False)[::-1]
    tol = len(gram) * np.finfo(np.float64).eps * max(w[0], 0.0)
    return w[w > tol]


def vendi_from_spectrum(eigenvalues, q: float = 1.0) -> float:
    """The order-``q`` Vendi score of a spectrum from :func:`vendi_spectrum` (q >= 0 or inf)."""
    w = np.asarray(eigenvalues, dtype=np.float64)
    q = float(q)
    if math.isnan(q) or q < 0:
        raise ValueError(f"Vendi order q must be >= 0 or inf, got {q}")
    w = w[w > 0]
    if len(w) == 0:
        raise ValueError("the spectrum holds no positive eigenvalue")
    if math.isinf(q):
        return float(1.0 / w.max())
    if q == 1.0:
        return float(np.exp(-np.sum(w * np.log(w))))
    return float(np.exp(np.log(np.sum(w ** q)) / (1.0 - q)))


def vendi_score(x, q: float = 1.0, chunk_size: int | None = None) -> float:
    """Vendi score of order ``q`` (Friedman & Dieng 2023; Pasarkar & Dieng 2024) of a feature set.

    ``x``: N x d features; the kernel is the cosine similarity. Between 1 (all samples alike) and
    min(N, d) (all orthogonal). For several orders, compute :func:`vendi_spectrum` once and call
    :func:`vendi_from_spectrum` per order.
    """
    return vendi_from_spectrum(vendi_spectrum(x, chunk_size), q)


# ---------------------------------------------------------------- registration

#: the orders reported (Friedman & Dieng 2023; Pasarkar & Dieng 2024); q = 1 is the Vendi score
ORDERS = (0.5, 1.0, 2.0, float("inf"))


def orders_of(x, side: str) -> dict[str, float]:
    """Vendi of one set at every order of :data:`ORDERS`, keyed ``'0.5'``, ``'1'``, ``'2'``, ``'inf'``."""
    spectrum = vendi_spectrum(x, name=side)
    return {("inf" if math.isinf(q) else f"{q:g}"): vendi_from_spectrum(spectrum, q) for q in ORDERS}


def _vendi(run) -> dict:
    """Vendi of the fakes and, for reference where there is a real set, of the reals, at every order."""
    orders = {side: orders_of(x, side) for side, x in (("fake", run.xf), ("real", run.xr)) if x is not None}
    run.result.details["vendi_orders"] = orders
    return {"vendi": orders["fake"]["1"], **({"vendi-real": orders["real"]["1"]} if "real" in orders else {})}


def _note(result) -> str | None:
    from ..formatting import format_value as fv

    lines = [f"Vendi of the {side} set by order q: " + ", ".join(f"q={q} {fv(v)}" for q, v in orders.items())
             for side, orders in result.details.get("vendi_orders", {}).items()]
    return "\n".join(lines) or None


def _report(ctx) -> Section:
    orders = ctx.result.details.get("vendi_orders") or {side: orders_of(x, side)
                                                        for side, x in (("fake", ctx.xf), ("real", ctx.xr))}
    header = ("set", *(f"q = {q}" for q in orders["fake"]))
    return Section("diversity", "Diversity",
                   "Vendi score (Friedman & Dieng 2023): the effective number of distinct images, from the "
                   "eigenvalues of the cosine-similarity kernel; order q weighs rare modes (q < 1) or common "
                   "ones (q > 1). A fake set far below the real one has collapsed onto fewer modes.",
                   table=(header, *((side, *values.values()) for side, values in orders.items())))


VENDI = register(Metric(
    "vendi", "Vendi score: the effective number of distinct fakes (Friedman & Dieng 2023)", _vendi, "Vendi",
    lower_is_better=False, needs={FEATURES}, extra_values={"vendi-real": "Vendi_real"}, note=_note,
    report=_report, needs_real=False, order=70,
    function=lambda sets, o: {"vendi": vendi_score(sets.fake), "vendi-real": vendi_score(sets.real)},
    paper="Friedman & Dieng, The Vendi Score: A Diversity Evaluation Metric for Machine Learning, TMLR 2023"))
