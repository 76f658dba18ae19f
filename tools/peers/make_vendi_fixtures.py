"""Make tests/fixtures/vendi_peers.npz: features and the Vendi scores the ``vendi-score`` package gives.

Run with the peers environment (vendi-score 0.0.3; see ../shared/tools/peers-venv.sh), not imgdist's:

    /work/peers-venv/bin/python tools/peers/make_vendi_fixtures.py [--out PATH]

(``--out``: write elsewhere than tests/fixtures/vendi_peers.npz, e.g. to compare a fresh run with the
committed file.)

Inputs are made here from a fixed numpy seed (float64, so both tools see identical values); every
stored score comes from ``vendi_score.vendi``'s own functions, never from imgdist.
tests/test_vendi.py compares imgdist.metrics.vendi against them.

Two feature sets, non-negative like pooled CNN features (ReLU of a low-rank Gaussian mixture plus
noise), so the cosine kernel is far from both the identity and the all-ones matrix:
- ``wide`` (N = 60 <= d = 96): the N x N kernel route;
- ``tall`` (N = 300 > d = 48): the d x d Gram route.

Which vendi-score function gives which stored value (q in 0.5, 1, 2, inf):
- ``score_X(X)``: N x N kernel, q = 1 only. In vendi-score 0.0.3 ``score_X`` passes ``q=1`` to
  ``score_K`` whatever q it is given, so it cannot serve other orders;
- ``score_K(normalize(X) @ normalize(X).T, q)``: N x N kernel for every order (what ``score_X``
  is meant to do). Stored for ``wide``; for ``tall`` only q = 2 and inf: that kernel has
  N - d = 252 zero eigenvalues whose rounding noise (~1e-17) the package sums as if real, which
  moves q = 0.5 by ~1e-6 relative (and q = 1 by ~1e-14), so those are not a reference;
- ``score_dual(X, q)``: d x d Gram route, every order; stored for ``tall`` (for ``wide`` its d x d
  matrix is rank-deficient, the same noise issue).
"""

from __future__ import annotations

import os

import numpy as np

SEED = 20240917
ORDERS = (0.5, 1, 2, "inf")
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "vendi_peers.npz")


def features(rng: np.random.Generator, n: int, d: int, modes: int = 6) -> np.ndarray:
    centres = rng.standard_normal((modes, d))
    which = rng.integers(0, modes, n)
    x = centres[which] + 0.7 * rng.standard_normal((n, d))
    return np.maximum(x, 0.0) + 0.05  # no zero rows


def qname(q) -> str:
    return "inf" if q == "inf" else str(q).replace(".", "p")


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=OUT, help="output .npz (default: the committed fixture)")
    args = parser.parse_args(argv)
    from sklearn.preprocessing import normalize
    from vendi_score import vendi

    rng = np.random.default_rng(SEED)
    out = {"wide": features(rng, 60, 96), "tall": features(rng, 300, 48)}
    for name in ("wide", "tall"):
        x = out[name]
        xn = normalize(x, axis=1)
        out[f"{name}_score_X_q1"] = np.float64(vendi.score_X(x))
        for q in ORDERS:
            if name == "wide" or q in (2, "inf"):
                out[f"{name}_score_K_q{qname(q)}"] = np.float64(vendi.score_K(xn @ xn.T, q=q))
            if name == "tall":
                out[f"{name}_score_dual_q{qname(q)}"] = np.float64(vendi.score_dual(x, q=q))
    np.savez_compressed(args.out, **out)
    for key, value in out.items():
        if value.ndim == 0:
            print(f"{key:28s} {float(value)!r}")
    print(f"wrote {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
