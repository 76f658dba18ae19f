"""The metrics of OpenAI's ADM evaluator, as diffusion papers report them.

Source of the definitions: ``evaluations/evaluator.py`` of openai/guided-diffusion (P. Dhariwal,
A. Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021), the table DiT, SiT, MAR
and VAR print: Inception Score, FID, sFID, Precision, Recall. Facts taken from that file:

* **Inception Score**: the softmax over all 1008 classes of ``pool_3 @ W`` (the classifier's
  matrix, *no bias*; imgdist's Inception output ``"logits_unbiased"``), on contiguous splits of
  5,000 samples (the last split keeps whatever is left, however small), the mean over splits of
  ``exp(mean_x KL(p(y|x) || p(y)))``. The evaluator does this in float32; here it is float64.
* **FID / sFID**: the Fréchet distance of ``pool_3`` (2048) and of the first 7 channels of
  ``mixed_6/conv`` flattened in (height, width, channel) order (17 x 17 x 7 = 2023); computed by
  :func:`imgdist.metrics.frechet_distance`.
* **Precision / Recall** (Kynkäänniemi et al. 2019 as ADM implements it, ``ManifoldEstimator``):
  squared Euclidean distances; a point's radius is the (k+1)-th smallest distance of its row
  *including itself* (``np.partition`` with ``kth = arange(k + 1)``, column ``k``), i.e. the k-th
  neighbour not counting the point (k = 3); a sample counts when its distance to *some*
  reference point is ``<=`` that point's radius. Precision: the share of samples inside the
  reference manifold; recall: the share of reference points inside the sample manifold.

How ADM computes the distances (``DistanceBlock``), and how it is reproduced here
---------------------------------------------------------------------------------
Blocks of at most 10,000 x 10,000 (``row_batch_size = col_batch_size = 10000``, aligned at
multiples of 10,000) are computed as ``max(|u|^2 - 2 u.v + |v|^2, 0)`` with the float32 features
cast to **float16**; where *any* entry of a block is not finite (float16 overflows above 65504) the
whole block is recomputed in float32. The block grid therefore matters, and is kept. The float16
arithmetic is emulated step by step: inputs rounded to float16, each square rounded, squared norms
summed in float32 and rounded, the matrix product of the float16 values accumulated in float32
(what GPU float16 matrix products do) and rounded, then ``n_u - 2 m`` and ``+ n_v`` each rounded.
Memory stays O(block): radii keep a running (k+1)-smallest per row, never an N x N matrix.

Float16 cannot be reproduced to the last bit across implementations (accumulation order differs
between GPUs, CPUs and this emulation), so each decision is also checked against a bound ``e_ij``
on the error of each float16 distance (:func:`_fp16_error`: the cast, the rounded norms, the
product and the two rounded sums, term by term, with float32 accumulation; on random pool-like
features it is about 2.2 times the largest error observed, and a float32 fallback block, TF32
included, stays inside it). A sample is *borderline* when its decision is neither certainly in
(some ``d_ij + e_ij <=`` the lowest possible radius) nor certainly out (every ``d_ij - e_ij >``
the highest possible radius). Off the borderline the float16 decision equals the exact one, and so
equals that of any float16 implementation within the bound (ADM's own on a GPU included; one
that accumulated in float16 would not be covered): ``AdmPR.borderline_*`` counts the decisions
the arithmetic does not settle.
``exact=True`` computes everything in float64 instead (no borderline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SetTooSmall
from .frechet import FID
from .registry import FEATURES, Metric, Setting, Suite, register, register_suite
from .sfid import SFID

__all__ = ["ADM_BLOCK", "AdmPR", "adm_distance_block", "adm_inception_score", "adm_precision_recall",
           "adm_radii"]

#: ADM's row and column batch size: the granularity of its float16 / float32 decision
ADM_BLOCK = 10_000
#: float16 unit roundoff
U16 = 2.0 ** -11
#: the coarse float16 error bound ``FP16_BOUND * U16 * (|x|^2 + |y|^2)`` (see the module text); the
#: per-entry bound (:func:`_fp16_error`) uses it only to bound the exact distance from above
FP16_BOUND = 16.0
#: float32 unit roundoff (accumulation in sums and matrix products)
U32 = 2.0 ** -24
#: float16's smallest normal number: below it rounding is absolute, at most half of 2^-24
_F16_TINY_ERR = 2.0 ** -25
#: second-order terms and the bound's own float32 arithmetic
_SAFETY = 1.05
#: rows per chunk inside a block: bounds the temporaries (1,000 x 10,000 float32 = 40 MB each; with
#: 2,500 the 10,000 x 50,000 run peaked at 3.4 GB, too close to the 4 GB budget)
_CHUNK_ROWS = 1_000
#: rows per chunk of the Inception Score's softmax (4,096 x 1008 float64 = 33 MB)
_IS_CHUNK = 4_096


# ---------------------------------------------------------------------- Inception Score

def adm_inception_score(logits_unbiased: np.ndarray, split_size: int = 5000) -> float:
    """ADM's Inception Score from ``pool_3 @ W`` (N x 1008, no bias): the mean over contiguous
    splits of ``split_size`` rows (the last split may be shorter) of ``exp(mean KL(p(y|x) || p(y)))``.

    float64 throughout; per split ``mean KL = mean_x sum_y p log p - sum_y pbar log pbar``, from
    log-softmax (a class of vanishing probability adds 0, not ``0 * log 0``), in chunks of rows.
    """
    z = np.asarray(logits_unbiased)
    if z.ndim != 2 or not len(z) or z.shape[1] < 2:
        raise ValueError(f"logits must be an N x classes array with N >= 1 and >= 2 classes, got shape {z.shape}")
    split_size = int(split_size)
    if split_size < 1:
        raise ValueError(f"split_size must be >= 1, got {split_size}")
    scores = []
    for start in range(0, len(z), split_size):
        part = z[start:start + split_size]
        p_sum = np.zeros(z.shape[1], np.float64)
        plogp = 0.0
        for c in range(0, len(part), _IS_CHUNK):
            block = np.asarray(part[c:c + _IS_CHUNK], dtype=np.float64)
            if not np.isfinite(block).all():
                raise ValueError("logits contain NaN or infinity")
            block -= block.max(axis=1, keepdims=True)
            block -= np.log(np.exp(block).sum(axis=1, keepdims=True))  # log-softmax, in place
            p = np.exp(block)
            plogp += float(np.einsum("ij,ij->", p, block))
            p_sum += p.sum(axis=0)
        pbar = p_sum / len(part)
        positive = pbar > 0
        mean_kl = plogp / len(part) - float(np.dot(pbar[positive], np.log(pbar[positive])))
        scores.append(np.exp(mean_kl))
    return float(np.mean(scores))


# ---------------------------------------------------------------------- distances

def _fp16(x: np.ndarray) -> np.ndarray:
    """Round to float16 and back to float32 (float32 -> float16 rounds correctly; inf on overflow)."""
    with np.errstate(over="ignore"):  # overflow is expected: it sends the block to float32
        return x.astype(np.float16).astype(np.float32)


def _fp16_norms(x16: np.ndarray) -> np.ndarray:
    """Squared norms as the float16 graph gives them: each square rounded, summed in float32, rounded."""
    return _fp16(_fp16(x16 * x16).sum(axis=1, dtype=np.float32))


def _block_fp16(u16, nu16, v16, nv16, out) -> bool:
    """Fill ``out`` with the emulated float16 distances of rows ``u16`` x rows ``v16`` (float32
    arrays holding float16 values); False where an entry is not finite (ADM then uses float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(0, len(u16), _CHUNK_ROWS):
            m = _fp16(u16[s:s + _CHUNK_ROWS] @ v16.T)      # float32 accumulation, float16 result
            m *= np.float32(-2.0)                          # exact in float16 (a power of two)
            m += nu16[s:s + _CHUNK_ROWS, None]
            m = _fp16(m)                                   # n_u - 2 m, rounded
            m += nv16[None, :]
            m = _fp16(m)                                   # + n_v, rounded
            if not np.isfinite(m).all():
                return False
            np.maximum(m, 0.0, out=out[s:s + _CHUNK_ROWS])
    return True


def _block_plain(u, nu, v, nv, out) -> None:
    """``max(n_u - 2 u.v + n_v, 0)`` in the arrays' own precision (float32 fallback, or float64)."""
    for s in range(0, len(u), _CHUNK_ROWS):
        m = u[s:s + _CHUNK_ROWS] @ v.T
        m *= -2.0
        m += nu[s:s + _CHUNK_ROWS, None]
        m += nv[None, :]
        np.maximum(m, 0.0, out=out[s:s + _CHUNK_ROWS])


class _Side:
    """One feature set prepared for distance blocks: float32 values (ADM's placeholders are float32),
    their float16 roundings and norms, and float64 norms for the error bound."""

    def __init__(self, features, name: str, exact: bool):
        x = np.asarray(features)
        if x.ndim != 2 or not len(x) or x.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be a non-empty N x d array of real numbers, got shape {x.shape}")
        self.exact = exact
        self.x = np.asarray(x, dtype=np.float64 if exact else np.float32)
        if not np.isfinite(self.x).all():
            raise ValueError(f"{name} contain NaN or infinity")
        self.n64 = np.einsum("ij,ij->i", self.x, self.x, dtype=np.float64)
        self.norms = self.n64 if exact else np.einsum("ij,ij->i", self.x, self.x, dtype=np.float32)
        # for the float16 error bound (float32 is ample for a bound with a 5 % margin)
        self.sq_norm = self.n64.astype(np.float32)
        self.norm = np.sqrt(self.n64).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def block(self, start: int, stop: int):
        """Rows ``start:stop`` as (values, norms, float16 values or None, float16 norms or None)."""
        x = self.x[start:stop]
        if self.exact:
            return x, self.norms[start:stop], None, None
        x16 = _fp16(x)
        return x, self.norms[start:stop], x16, _fp16_norms(x16)


def adm_distance_block(u: np.ndarray, v: np.ndarray, exact: bool = False) -> tuple[np.ndarray, bool]:
    """Squared distances between the rows of ``u`` and ``v`` as one ADM ``DistanceBlock`` call:
    ``(distances, used_float16)``; ``exact``: float64 instead. For blocks up to 10,000 x 10,000."""
    a, b = _Side(u, "u", exact), _Side(v, "v", exact)
    out = np.empty((len(a), len(b)), np.float64 if exact else np.float32)
    return out, _fill(a.block(0, len(a)), b.block(0, len(b)), out)


def _fill(rows, cols, out) -> bool:
    """One ADM block into ``out``; True where float16 served (False: float32 fallback or exact)."""
    (u, nu, u16, nu16), (v, nv, v16, nv16) = rows, cols
    if u16 is not None and _block_fp16(u16, nu16, v16, nv16, out):
        return True
    _block_plain(u, nu, v, nv, out)
    return False


def _blocks(rows: _Side, cols: _Side, work: np.ndarray):
    """Every ADM block: yields ``(r0, r1, c0, c1, distances, used_float16)``; ``distances`` is a
    view of ``work`` (reused, so the caller consumes it before the next)."""
    for r0 in range(0, len(rows), ADM_BLOCK):
        r1 = min(r0 + ADM_BLOCK, len(rows))
        rb = rows.block(r0, r1)
        for c0 in range(0, len(cols), ADM_BLOCK):
            c1 = min(c0 + ADM_BLOCK, len(cols))
            d = work[:r1 - r0, :c1 - c0]
            used16 = _fill(rb, cols.block(c0, c1), d)
            yield r0, r1, c0, c1, d, used16


def _kth_smallest(running: np.ndarray | None, block: np.ndarray, k: int) -> np.ndarray:
    """The k+1 smallest values of each row of ``running`` and ``block`` together (unsorted)."""
    take = min(k + 1, block.shape[1])
    part = np.partition(block, take - 1, axis=1)[:, :take] if take < block.shape[1] else block.copy()
    both = part if running is None else np.concatenate([running, part], axis=1)
    if both.shape[1] > k + 1:
        both = np.partition(both, k, axis=1)[:, :k + 1]
    return both


@dataclass(frozen=True)
class _Radii:
    value: np.ndarray              # the radius each computation gives (float16 path or exact)
    low: np.ndarray | None = None  # bounds on the exact radius (float16 path only)
    high: np.ndarray | None = None


def _fp16_error(d: np.ndarray, rows: _Side, r0: int, r1: int, cols: _Side, c0: int, c1: int) -> np.ndarray:
    """A bound on |float16 distance - exact distance| for each entry of ``d`` (rows r0:r1 x cols c0:c1).

    With ``n = |x|^2``, ``D`` the exact distance and ``g = dim * 2^-24`` (float32 accumulation):
    casting to float16 moves ``sqrt(D)`` by at most ``eps = u (|x| + |y|)`` (plus the absolute
    rounding of numbers below float16's normal range), so ``D`` by ``2 eps sqrt(D) + eps^2``; the
    rounded squares and the float32 sum and float16 rounding of each norm add ``(2u + g) n``; the
    product ``x.y`` (float32 accumulation, float16 rounding, doubled) ``2 (u + g) |x| |y|``;
    rounding ``n_x - 2 x.y = D - n_y`` adds ``u |D - n_y|`` and rounding the sum ``u D``.
    ``D`` is bounded above by the computed value plus the coarse bound ``16 u (n_x + n_y)`` (the
    same terms, each at its worst: about 11.3 u). Times 1.05 for second-order terms.
    """
    u, g = np.float32(U16), np.float32(rows.x.shape[1] * U32)
    nx, ny = rows.sq_norm[r0:r1, None], cols.sq_norm[None, c0:c1]
    sx, sy = rows.norm[r0:r1, None], cols.norm[None, c0:c1]
    eps = u * (sx + sy) + np.float32(2 * np.sqrt(rows.x.shape[1]) * _F16_TINY_ERR)
    d_up = d + np.float32(FP16_BOUND * U16) * (nx + ny)
    e = (2 * u + g) * (nx + ny)
    e += 2 * (u + g) * sx * sy
    e += u * np.maximum(d_up, ny)
    e += u * d_up
    e += 2 * eps * np.sqrt(d_up) + eps * eps
    e *= np.float32(_SAFETY)
    return e


def _radii(side: _Side, k: int, work: np.ndarray) -> _Radii:
    n = len(side)
    if n <= k:
        raise ValueError(f"a radius needs k + 1 = {k + 1} points (the point and k neighbours), got {n}")
    value = np.empty(n, side.x.dtype)
    bounded = not side.exact
    low = np.empty(n) if bounded else None
    high = np.empty(n) if bounded else None
    for r0 in range(0, n, ADM_BLOCK):
        r1 = min(r0 + ADM_BLOCK, n)
        rb = side.block(r0, r1)
        chunks = range(0, r1 - r0, _CHUNK_ROWS)
        best = [None] * len(chunks)
        lo, hi = [None] * len(chunks), [None] * len(chunks)
        for c0 in range(0, n, ADM_BLOCK):
            c1 = min(c0 + ADM_BLOCK, n)
            d = work[:r1 - r0, :c1 - c0]
            _fill(rb, side.block(c0, c1), d)
            for j, s in enumerate(chunks):
                part = d[s:s + _CHUNK_ROWS]
                best[j] = _kth_smallest(best[j], part, k)
                if bounded:  # the exact radius lies between the k-th smallest of d - e and of d + e
                    e = _fp16_error(part, side, r0 + s, r0 + s + len(part), side, c0, c1)
                    lo[j] = _kth_smallest(lo[j], part - e, k)
                    e += part
                    hi[j] = _kth_smallest(hi[j], e, k)
        for j, s in enumerate(chunks):
            a, b = r0 + s, r0 + s + len(best[j])
            value[a:b] = np.partition(best[j], k, axis=1)[:, k]
            if bounded:
                low[a:b] = np.partition(lo[j], k, axis=1)[:, k]
                high[a:b] = np.partition(hi[j], k, axis=1)[:, k]
    return _Radii(value, low, high)


def adm_radii(features: np.ndarray, k: int = 3, exact: bool = False) -> np.ndarray:
    """ADM's ``manifold_radii``: each point's (k+1)-th smallest squared distance, itself included."""
    side = _Side(features, "features", exact)
    work = np.empty((min(ADM_BLOCK, len(side)),) * 2, side.x.dtype)
    return _radii(side, k, work).value


# ---------------------------------------------------------------------- precision and recall

@dataclass(frozen=True)
class AdmPR:
    """ADM's precision and recall, with how many decisions lie within float16 rounding of a radius."""

    precision: float
    recall: float
    borderline_precision: int   # samples whose in/out decision float16 rounding could flip
    borderline_recall: int      # reference points, likewise
    exact: bool                 # float64 throughout (no borderline) instead of ADM's float16


class _Membership:
    """Per point of one side: inside some radius of the other side (and, on the float16 path,
    certainly inside / possibly inside the exact manifold)."""

    def __init__(self, n: int, bounded: bool):
        self.inside = np.zeros(n, bool)
        self.certain = np.zeros(n, bool) if bounded else None
        self.possible = np.zeros(n, bool) if bounded else None

    def borderline(self) -> int:
        return 0 if self.certain is None else int(np.count_nonzero(self.possible & ~self.certain))


def adm_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, exact: bool = False) -> AdmPR:
    """ADM's precision (share of ``fake`` inside the ``real`` manifold) and recall (share of
    ``real`` inside the ``fake`` manifold), k-th neighbour radii, inclusive, blocks of 10,000.

    ``exact=False`` reproduces ADM's float16 distance blocks with their float32 fallback;
    ``exact=True`` computes in float64. Memory is O(10,000^2) whatever the set sizes.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ref, smp = _Side(real, "real features", exact), _Side(fake, "fake features", exact)
    if ref.x.shape[1] != smp.x.shape[1]:
        raise ValueError(f"feature dimensions differ: {ref.x.shape[1]} vs {smp.x.shape[1]}")
    side = max(min(ADM_BLOCK, len(ref)), min(ADM_BLOCK, len(smp)))
    work = np.empty((side, side), ref.x.dtype)
    r_ref, r_smp = _radii(ref, k, work), _radii(smp, k, work)
    bounded = not exact
    fake_in = _Membership(len(smp), bounded)   # precision
    real_in = _Membership(len(ref), bounded)   # recall
    for r0, r1, c0, c1, d, _ in _blocks(ref, smp, work):
        for s in range(0, r1 - r0, _CHUNK_ROWS):
            a0, a1 = r0 + s, min(r0 + s + _CHUNK_ROWS, r1)
            block = d[s:a1 - r0]
            # rows: reference points a0:a1; columns: samples c0:c1
            fake_in.inside[c0:c1] |= (block <= r_ref.value[a0:a1, None]).any(axis=0)
            real_in.inside[a0:a1] |= (block <= r_smp.value[None, c0:c1]).any(axis=1)
            if not bounded:
                continue
            e = _fp16_error(block, ref, a0, a1, smp, c0, c1)
            up, down = block + e, block - e   # the exact distance lies in [down, up]
            fake_in.certain[c0:c1] |= (up <= r_ref.low[a0:a1, None]).any(axis=0)
            fake_in.possible[c0:c1] |= (down <= r_ref.high[a0:a1, None]).any(axis=0)
            real_in.certain[a0:a1] |= (up <= r_smp.low[None, c0:c1]).any(axis=1)
            real_in.possible[a0:a1] |= (down <= r_smp.high[None, c0:c1]).any(axis=1)
    return AdmPR(precision=float(fake_in.inside.mean()), recall=float(real_in.inside.mean()),
                 borderline_precision=fake_in.borderline(), borderline_recall=real_in.borderline(),
                 exact=bool(exact))


# ---------------------------------------------------------------------- registration

#: ADM's manifold estimate: each radius is the 3rd neighbour
ADM_K = 3
#: ADM's Inception Score: contiguous splits of 5,000 samples
ADM_IS_SPLIT = 5000


def _is_adm(run) -> float:
    run.result.details["is_adm_split_size"] = ADM_IS_SPLIT
    return adm_inception_score(run.fake.extra_features["logits_unbiased"], split_size=ADM_IS_SPLIT)


def _adm_pr(run) -> dict:
    """ADM's precision and recall: one pair of radius passes for both."""
    exact = run.options.adm_exact
    pr = run.once("adm_pr", lambda: adm_precision_recall(run.xr, run.xf, k=ADM_K, exact=exact))
    run.result.details["adm_precision_recall"] = {
        "k": ADM_K, "distances": "float64" if pr.exact else "float16 blocks, float32 where they overflow",
        "borderline_precision": pr.borderline_precision, "borderline_recall": pr.borderline_recall}
    return {name: value for name, value in ((PRECISION_ADM.name, pr.precision), (RECALL_ADM.name, pr.recall))
            if name in run.chosen}


def _need_adm_k(options, counts, chosen) -> None:
    for side in ("real", "fake"):
        n = counts.get(side)
        if n is not None and n <= ADM_K:
            raise SetTooSmall(f"precision-adm/recall-adm: the {side} set has {n} images; ADM's radius is each "
                              f"image's {ADM_K}rd neighbour, so more than {ADM_K} are needed")


_ADM = "Dhariwal & Nichol, Diffusion Models Beat GANs on Image Synthesis, NeurIPS 2021 (its evaluator)"
_EXACT = Setting("adm_exact", False, "precision-adm/recall-adm (and --suite adm): distances in float64 instead of "
                 "ADM's float16 blocks", kind="flag")
def _function(sets, o) -> dict:
    pr = adm_precision_recall(sets.real, sets.fake, k=ADM_K, exact=o.adm_exact)
    return {PRECISION_ADM.name: pr.precision, RECALL_ADM.name: pr.recall}


_PR = dict(compute=_adm_pr, lower_is_better=False, needs={FEATURES}, settings=(_EXACT,), check_sizes=_need_adm_k,
           in_all=False, paper=_ADM, function=_function)
IS_ADM = register(Metric(
    "is-adm", "Inception Score as ADM's evaluator computes it: softmax of pool_3 @ W without bias over 1008 "
    "classes, contiguous splits of 5,000", _is_adm, "IS_adm", "IS_adm", lower_is_better=False,
    outputs=("logits_unbiased",), keeps_outputs=True, per_class=False, in_all=False, needs_real=False, order=110,
    paper=_ADM, function=lambda sets, o: adm_inception_score(sets.extra["logits_unbiased"][1], split_size=ADM_IS_SPLIT)))
PRECISION_ADM = register(Metric(
    "precision-adm", "precision as ADM's evaluator estimates it (k = 3, squared distances in float16 blocks)",
    label="precision_adm", order=111, **_PR))
RECALL_ADM = register(Metric(
    "recall-adm", "recall as ADM's evaluator estimates it (k = 3, squared distances in float16 blocks)",
    label="recall_adm", order=112, **_PR))

#: OpenAI's ADM evaluator (guided-diffusion ``evaluations/evaluator.py``): the table diffusion papers
#: report, on the FID Inception with the TensorFlow graph's resize
ADM_SUITE = register_suite(Suite(
    "adm", (IS_ADM.name, FID.name, SFID.name, PRECISION_ADM.name, RECALL_ADM.name),
    {IS_ADM.name: "Inception Score", FID.name: "FID", SFID.name: "sFID", PRECISION_ADM.name: "Precision",
     RECALL_ADM.name: "Recall"}, backbone="inception", mode="tf",
    help="the table of OpenAI's ADM evaluator: Inception Score, FID, sFID, precision, recall"))
