"""Rényi kernel entropy: the RKE mode count of a set and the relative RKE between two sets.

Paper: M. Jalali, C. T. Li, F. Farnia, "An Information-Theoretic Evaluation of Generative Models
in Learning Multi-modal Distributions", NeurIPS 2023; authors' package ``rke-score`` 0.0.7
(``RKE.compute_rke_mc_frobenius_norm``, ``RKE.compute_rrke``).

Kernel: Gaussian, ``k(x, x') = exp(-|x - x'|^2 / (2 sigma^2))`` (the package's ``gaussian_kernel``).

- RKE mode count of a set X of n samples: ``1 / ((1/n^2) sum_{i,j} k(x_i, x_j)^2)``, the inverse
  of the mean squared kernel over all ordered pairs, the n pairs of a sample with itself included
  (order-2 Rényi entropy of the normalised kernel matrix ``K/n``, exponentiated). It is 1 for n
  copies of one sample and n for samples far apart; it counts modes wider than ``sigma`` apart.
  The package's ``compute_rke_mc_frobenius_norm`` returns that mean itself,
  ``|K/n|_F^2`` (the inverse of the mode count), despite its name; ``compute_rke_mc`` estimates
  the mode count from 1,000,000 random pairs. Here it is exact: every pair, in blocks.
- RRKE of reals X (n) and fakes Y (m): ``-log(|K_XY / sqrt(n m)|_*^2)``, ``|.|_*`` the nuclear norm
  (sum of singular values) of the n x m cross-kernel matrix (the package's ``compute_rrke``, which
  by default keeps only the first 500 samples of each set: ``x_samples=500``; here every sample
  counts). 0 for identical sets of far-apart samples, growing as the sets' kernel mean embeddings
  separate; lower is better.

``sigma``: the package has no default (``kernel_bandwidth`` is required; its README example uses
0.2-0.4 on N(0, 1) data in 1,000 dimensions, where every off-diagonal kernel value underflows).
:data:`RKE_SIGMA` is imgdist's default; the bandwidth should match the scale of the features'
modes, so set it for your backbone.

Route and memory:
- mode count: one pass over float64 distance row blocks within the set
  (:func:`.prdc.distance_blocks`, ~64 MiB a block), each row's sum of squared kernels kept: O(n)
  extra memory beside the blocks. ``shard`` splits the blocks; every process gets the
  single-process bits.
- RRKE: the singular values of ``K`` (rows: the larger set, columns: the smaller, ``s`` of them)
  are those of the triangular factor ``R`` of its QR decomposition, which is built block by block
  (LAPACK ``dtpqrt``: ``R`` and the next block of kernel rows -> the new ``R``), then the singular
  values of ``R`` (LAPACK ``gesdd``, in place). Memory: ``R``, ``8 * s^2`` bytes (800 MB at
  s = 10,000), plus about two kernel blocks; never n x m. Time O(n s d + n s^2 + s^3). Going
  through ``K^T K`` (s x s) would halve the time, but its eigenvalues square the singular values:
  those below ~1e-8 of the largest drown in rounding, and when sigma is wide (the kernel nearly
  rank one) their square roots add up: on the test fixture's ``offsupport`` set (400 x 300,
  d = 16, sigma = 50) that route misses the package's RRKE by 5.7e-5 relative, the QR route by
  3e-14. It is not split across processes: combining the processes' factors would move every
  s x s triangle through the gather, and the final s^3 SVD does not split.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import MEMORY_FRACTION, available_memory, option
from ..errors import ImgdistError
from ._arrays import as_features
from ._shard import ALONE, Shard
from .prdc import _prepare, distance_blocks
from .registry import FEATURES, Metric, Setting, register

__all__ = ["RKE_SIGMA", "rke_mode_count", "rrke"]

#: imgdist's default Gaussian kernel bandwidth (the package has none)
RKE_SIGMA = 10.0

#: LAPACK block size of dtpqrt's compact WY representation
_QR_BLOCK = 32


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive number, got {sigma}")
    return sigma


def rke_mode_count(x, sigma: float = RKE_SIGMA, chunk_size: int | None = None, *, shard: Shard = ALONE,
                   name: str = "features") -> float:
    """RKE mode count ``1 / mean_{i,j} k(x_i, x_j)^2`` (Jalali et al. 2023), exact over all pairs."""
    sigma = _check_sigma(sigma)
    x = as_features(x, name)
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    row_sums = np.zeros(len(x), dtype=np.float64)
    for start, d in distance_blocks(x, x, chunk_size, same=True, shard=shard):
        # k^2 = exp(-|x - x'|^2 / sigma^2)
        d *= d
        d *= -1.0 / (sigma * sigma)
        row_sums[start:start + len(d)] = np.exp(d, out=d).sum(axis=1)
    mean = shard.total(row_sums).sum() / (float(len(x)) ** 2)
    return float(1.0 / mean)


def rrke(real, fake, sigma: float = RKE_SIGMA, chunk_size: int | None = None) -> float:
    """Relative RKE ``-log(|K_XY / sqrt(n m)|_*^2)`` (Jalali et al. 2023), exact, in blocks."""
    import scipy.linalg
    from scipy.linalg import lapack

    sigma = _check_sigma(sigma)
    x, y = _prepare(real, fake)
    if len(x) == 0 or len(y) == 0:
        raise ValueError("rrke needs at least one real and one fake sample")
    rows, cols = (x, y) if len(x) >= len(y) else (y, x)
    r = np.zeros((len(cols), len(cols)), dtype=np.float64, order="F")
    for _, d in distance_blocks(rows, cols, chunk_size):
        d *= d
        d *= -0.5 / (sigma * sigma)
        block = np.asfortranarray(np.exp(d, out=d))
        r, _, _, info = lapack.dtpqrt(0, min(_QR_BLOCK, len(cols)), r, block, overwrite_a=True, overwrite_b=True)
        if info != 0:
            raise RuntimeError(f"LAPACK dtpqrt failed (info {info})")
    for j in range(len(cols) - 1):  # dtpqrt leaves the strict lower triangle alone: make sure it is 0
        r[j + 1:, j] = 0.0
    singular = scipy.linalg.svdvals(r, overwrite_a=True, check_finite=False)
    nuclear = float(singular.sum()) / math.sqrt(float(len(x)) * float(len(y)))
    # nuclear = 0 (every cross kernel value underflowed): RRKE is +inf, as the package's -log(0)
    return float(-2.0 * math.log(nuclear)) if nuclear > 0 else math.inf


# ---------------------------------------------------------------- registration

RKE_SIGMA_SETTING = Setting("rke_sigma", RKE_SIGMA, "RKE/RRKE: Gaussian kernel bandwidth (the rke-score package has "
                            "no default; match it to the scale of your features' modes)", kind="number", minimum=1e-9)
#: a mode count this close to the number of samples means the kernel is ~0 between distinct samples
_ALL_APART = 0.99


def _rke(run) -> float:
    sigma = run.options.rke_sigma
    counts = {side: rke_mode_count(x, sigma, shard=run.shard, name=side)
              for side, x in (("fake", run.xf), ("real", run.xr)) if x is not None}
    run.result.details["rke"] = {"sigma": sigma, **({"real": counts["real"]} if "real" in counts else {})}
    n = len(run.xf)
    if n > 1 and counts["fake"] >= _ALL_APART * n:
        run.result.warnings.append(
            f"rke: at {option('rke_sigma')} {sigma:g} the kernel between distinct fakes is almost 0, so the mode count "
            f"({counts['fake']:.6g}) is about the number of fakes ({n}); a larger sigma suits these features")
    return counts["fake"]


def _rke_note(result) -> str | None:
    r = result.details.get("rke")
    if r is None:
        return None
    real = f"; the reals': {r['real']:.6g}" if "real" in r else ""
    return f"RKE: mode count of the fakes with a Gaussian kernel of sigma {r['sigma']:g}{real}"


def _rrke(run) -> float:
    sigma = run.options.rke_sigma
    value = rrke(run.xr, run.xf, sigma)
    run.result.details["rrke"] = {"sigma": sigma}
    if math.isinf(value):
        run.result.warnings.append(f"rrke: at {option('rke_sigma')} {sigma:g} every real-fake kernel value is 0, so "
                                   "RRKE is infinite; a larger sigma suits these features")
    return value


def _triangle_fits(options, counts, chosen) -> None:
    """RRKE holds an s x s float64 triangle (s: the smaller set): refuse, before any extraction, one
    that cannot fit in memory."""
    if counts.get("real") is None or counts.get("fake") is None:
        return
    s = min(counts["real"], counts["fake"])
    need = 8.0 * s * s
    available = available_memory("cpu")
    if available is not None and need > MEMORY_FRACTION * available:
        raise ImgdistError(f"rrke: exact RRKE holds a {s:,} x {s:,} float64 triangle ({need / 2**30:.1f} GiB), and "
                           f"{available / 2**30:.1f} GiB are available; compare smaller sets (its time grows as s^3) "
                           "or leave rrke out")


def _rrke_note(result) -> str | None:
    r = result.details.get("rrke")
    if r is None or "rke" in result.details:  # RKE's line names the sigma already
        return None
    return f"RRKE: Gaussian kernel of sigma {r['sigma']:g}"


_PAPER = ("Jalali et al., An Information-Theoretic Evaluation of Generative Models in Learning Multi-modal "
          "Distributions, NeurIPS 2023")
register(Metric(
    "rke", "RKE mode count of the fakes: 1 / mean squared Gaussian kernel over all pairs (Jalali et al. 2023)", _rke,
    "RKE", lower_is_better=False, needs={FEATURES}, settings=(RKE_SIGMA_SETTING,), note=_rke_note, needs_real=False,
    order=71, paper=_PAPER, function=lambda sets, o: rke_mode_count(sets.fake, o.rke_sigma)))
register(Metric(
    "rrke", "relative RKE of reals and fakes: -log of the squared nuclear norm of their normalised Gaussian "
    "cross-kernel matrix (Jalali et al. 2023)", _rrke, "RRKE", lower_is_better=True, needs={FEATURES},
    settings=("rke_sigma",), check_sizes=_triangle_fits, note=_rrke_note, in_all=False, order=72, paper=_PAPER,
    function=lambda sets, o: rrke(sets.real, sets.fake, o.rke_sigma)))
