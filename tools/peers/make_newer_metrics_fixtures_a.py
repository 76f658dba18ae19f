"""Make tests/fixtures/newer_metrics_a.npz: feature sets and reference values for rarity,
P-precision/P-recall, precision/recall cover, RKE/RRKE and sliced Wasserstein.

Run with the peers environment, not with imgdist's:

    /tmp/peers-venv/bin/python tools/peers/make_newer_metrics_fixtures_a.py

Where the references come from (nothing here imports imgdist):
- rke, rrke: the ``rke-score`` 0.0.7 package itself (``RKE.compute_rke_mc_frobenius_norm``, which
  returns the mean squared kernel, the inverse of the mode count; ``RKE.compute_rrke`` with
  ``x_samples``/``y_samples`` set to the whole sets, its default keeping only 500 of each).
- rarity, P-precision/P-recall, precision/recall cover: their authors' code is not packaged, so
  this script transcribes the authors' formulas directly and naively: full float64 distance
  matrices from explicit differences, then loops over samples, as written in
  hichoe95/Rarity-Score (``rarity_score.py``: radius = sorted row at index k, inside = radius -
  distance > 0, score = smallest radius of a containing ball), kdst-team/Probablistic_precision_recall
  (``metric/pp_pr.py``: R = a * mean of the sorted rows at index k, f = 1 - d / R where
  d < R, product of 1 - f over the other set) and Cheema & Urner's ``GenerativeMetrics.PRCover``
  (k-d tree with C k + 1 neighbours, the first, the sample itself, dropped; a point counts when
  its distance is <= the radius; covered when at least k = k'/C count).
- sw: a direct transcription of the definition (one direction at a time), with directions and
  subsample drawn as documented in imgdist.metrics.sliced_wasserstein.

Feature sets (float32, each with a real and a fake array):
- gauss: correlated Gaussian reals (500 x 32); fakes (400) rescaled and shifted;
- offsupport: reals N(0, I) (400 x 16); of the 300 fakes, 60 form a tight cluster off the reals'
  support;
- modes: reals from 6 Gaussian modes (600 x 48); fakes (450) from 4 of them, 20 of them exact
  copies of reals (distance 0);
- ints: small integers (300 x 16 and 250 x 16) with many equal distances (exact ties on the
  radii: where ``<`` and ``<=`` differ) and 30 fakes copying reals.

Borderline samples: for every share, the samples with some distance within ``TOL`` (relative)
of the radius that decides them; a different rounding of the distances may flip those, and
only those. Stored per set and metric as ``{set}_{metric}_borderline`` (and ``..._ties`` for
exact equality).
"""

from __future__ import annotations

import os
import sys

import numpy as np

SEED = 20250607
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "newer_metrics_a.npz")
TOL = 1e-9

RARITY_K = 3
PPR_A, PPR_K = 1.2, 4
PRC_K, PRC_C = 3, 3
SW_DIRECTIONS, SW_SEED = 1000, 0
#: Gaussian kernel bandwidths per set (the last of offsupport is wide: a kernel nearly of rank one)
SIGMAS = {"gauss": (4.0,), "offsupport": (3.0, 50.0), "modes": (6.0,), "ints": (2.0,)}


def make_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    sets = {}

    d = 32
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = rng.standard_normal((500, d)) @ mix + 1.0
    fake = 1.1 * (rng.standard_normal((400, d)) @ mix) + 1.0 + 0.15 * rng.standard_normal(d)
    sets["gauss"] = (real, fake)

    d = 16
    real = rng.standard_normal((400, d))
    fake = rng.standard_normal((300, d)) + 0.1
    away = rng.standard_normal(d)
    fake[240:] = 6.0 * away / np.linalg.norm(away) * np.sqrt(d) / 2 + 0.3 * rng.standard_normal((60, d))
    sets["offsupport"] = (real, fake)

    d = 48
    centres = 4.0 * rng.standard_normal((6, d))
    real = centres[rng.integers(0, 6, 600)] + rng.standard_normal((600, d))
    fake = centres[rng.integers(0, 4, 450)] + 1.05 * rng.standard_normal((450, d))
    fake[:20] = real[rng.choice(600, 20, replace=False)]
    sets["modes"] = (real, fake)

    real = rng.integers(0, 3, size=(300, 16)).astype(np.float64)
    fake = rng.integers(0, 3, size=(250, 16)).astype(np.float64)
    fake[:30] = real[:30]
    sets["ints"] = (real, fake)
    return {k: (a.astype(np.float32), b.astype(np.float32)) for k, (a, b) in sets.items()}


# ---------------------------------------------------------------- naive float64 transcriptions

def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full matrix, one row at a time from explicit differences (no |a|^2 + |b|^2 - 2ab)."""
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        diff = b - a[i]
        out[i] = np.sqrt(np.sum(diff * diff, axis=1))
    return out


def kth_other(dist_within: np.ndarray, k: int) -> np.ndarray:
    """Each row's sorted value at index k (index 0 is the sample itself at distance 0)."""
    return np.array([np.sort(row)[k] for row in dist_within])


def near(d: np.ndarray, r, tol=TOL) -> np.ndarray:
    return np.abs(d - r) <= tol * np.maximum(np.abs(r), 1e-300)


def ref_rarity(d_rr, d_rf, k):
    radii = kth_other(d_rr, k)
    scores = np.full(d_rf.shape[1], np.nan)
    borderline = ties = 0
    for j in range(d_rf.shape[1]):
        inside = radii - d_rf[:, j] > 0
        if inside.any():
            scores[j] = radii[inside].min()
        borderline += bool(near(d_rf[:, j], radii).any())
        ties += bool((d_rf[:, j] == radii).any())
    ok = ~np.isnan(scores)
    value = scores[ok].mean() if ok.any() else np.nan
    return value, ok.mean(), scores, borderline, ties


def ref_ppr(d_rr, d_ff, d_rf, a, k):
    def side(d_within, d_cross):  # rows of d_cross: centres of the balls; columns: the samples scored
        radius = a * kth_other(d_within, k).mean()
        f = 1.0 - d_cross / radius
        f[d_cross >= radius] = 0.0
        psr = np.ones(d_cross.shape[1])
        for i in range(d_cross.shape[0]):
            psr *= 1.0 - f[i]
        return np.mean(1.0 - psr), radius

    precision, r_real = side(d_rr, d_rf)
    recall, r_fake = side(d_ff, d_rf.T)
    return precision, recall, r_real, r_fake


def ref_pr_cover(d_rr, d_ff, d_rf, k, c):
    k_prime = c * k

    def side(d_within, d_cross):  # rows of d_cross: the samples scored; columns: the other set
        radii = kth_other(d_within, k_prime)
        covered = borderline = ties = 0
        for i in range(d_cross.shape[0]):
            count = 0
            for dist in d_cross[i]:
                if dist <= radii[i]:
                    count += 1
            covered += count >= k_prime / c
            borderline += bool(near(d_cross[i], radii[i]).any())
            ties += bool((d_cross[i] == radii[i]).any())
        return covered / d_cross.shape[0], borderline, ties

    precision = side(d_ff, d_rf.T)
    recall = side(d_rr, d_rf)
    return precision, recall


def ref_sw(real, fake, directions, seed):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((directions, real.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    n = min(len(real), len(fake))
    if len(real) > n:
        real = real[np.sort(rng.choice(len(real), size=n, replace=False))]
    elif len(fake) > n:
        fake = fake[np.sort(rng.choice(len(fake), size=n, replace=False))]
    w2 = [np.mean((np.sort(real @ t) - np.sort(fake @ t)) ** 2) for t in theta]
    return real.shape[1] * np.mean(w2)


def main() -> None:
    from rke_score import RKE

    out: dict[str, np.ndarray] = {
        "rarity_k": np.int64(RARITY_K), "ppr_a": np.float64(PPR_A), "ppr_k": np.int64(PPR_K),
        "prc_k": np.int64(PRC_K), "prc_c": np.int64(PRC_C), "sw_directions": np.int64(SW_DIRECTIONS),
        "sw_seed": np.int64(SW_SEED), "tol": np.float64(TOL),
    }
    sets = make_sets()
    out["sets"] = np.array(list(sets))
    for name, (real32, fake32) in sets.items():
        out[f"{name}_real"], out[f"{name}_fake"] = real32, fake32
        real, fake = real32.astype(np.float64), fake32.astype(np.float64)
        d_rr, d_ff, d_rf = distances(real, real), distances(fake, fake), distances(real, fake)

        value, inside, scores, border, ties = ref_rarity(d_rr, d_rf, RARITY_K)
        out[f"{name}_rarity"], out[f"{name}_rarity_inside"] = np.float64(value), np.float64(inside)
        out[f"{name}_rarity_scores"] = scores
        out[f"{name}_rarity_borderline"], out[f"{name}_rarity_ties"] = np.int64(border), np.int64(ties)

        p, r, r_real, r_fake = ref_ppr(d_rr, d_ff, d_rf, PPR_A, PPR_K)
        out[f"{name}_p_precision"], out[f"{name}_p_recall"] = np.float64(p), np.float64(r)
        out[f"{name}_ppr_radius_real"], out[f"{name}_ppr_radius_fake"] = np.float64(r_real), np.float64(r_fake)

        (pc, pc_border, pc_ties), (rc, rc_border, rc_ties) = ref_pr_cover(d_rr, d_ff, d_rf, PRC_K, PRC_C)
        out[f"{name}_precision_cover"], out[f"{name}_recall_cover"] = np.float64(pc), np.float64(rc)
        out[f"{name}_precision_cover_borderline"] = np.int64(pc_border)
        out[f"{name}_precision_cover_ties"] = np.int64(pc_ties)
        out[f"{name}_recall_cover_borderline"] = np.int64(rc_border)
        out[f"{name}_recall_cover_ties"] = np.int64(rc_ties)

        sigmas = SIGMAS[name]
        out[f"{name}_rke_sigmas"] = np.array(sigmas, dtype=np.float64)
        kernel = RKE(kernel_bandwidth=list(sigmas))
        frob_fake = kernel.compute_rke_mc_frobenius_norm(fake)
        frob_real = kernel.compute_rke_mc_frobenius_norm(real)
        rrke = kernel.compute_rrke(real, fake, x_samples=len(real), y_samples=len(fake))
        out[f"{name}_rke"] = np.array([1.0 / frob_fake[s] for s in sigmas])
        out[f"{name}_rke_real"] = np.array([1.0 / frob_real[s] for s in sigmas])
        out[f"{name}_rrke"] = np.array([rrke[s] for s in sigmas])

        out[f"{name}_sw"] = np.float64(ref_sw(real, fake, SW_DIRECTIONS, SW_SEED))
        print(f"{name}: done", flush=True)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB)")
    for key in sorted(out):
        if np.ndim(out[key]) == 0 or (np.ndim(out[key]) == 1 and len(out[key]) <= 4):
            print(f"  {key} = {out[key]!r}")


if __name__ == "__main__":
    sys.exit(main())
