"""Make tests/fixtures/top_pr_peers.npz: feature sets and what top-pr 0.2.1 computes on them.

Run with the peers environment (see ../shared/tools/peers-venv.sh), not with imgdist's:

    /tmp/peers-venv/bin/python tools/peers/make_top_pr_fixtures.py

Inputs are made here from a fixed numpy seed; every stored result comes from the package's own
``compute_top_pr`` (Kim et al., NeurIPS 2023), never from imgdist. To store the package's
intermediate values too, its module-level ``confband_est`` and ``compact_KDE`` are wrapped while
``compute_top_pr`` runs (it looks them up at call time); the wrappers record arguments and
results and change nothing.

Sets (``<name>_real``, ``<name>_fake``, float32):
- ``shift64``: d = 64 (the projection to 32 runs), fakes shifted and narrower;
- ``offsupport64``: d = 64, a quarter of the fakes in a tight cluster far off the reals' support;
- ``mix8``: d = 8 (no projection, k = 40), a two-mode mixture against one mode and a wider one;
- ``edge32``: d = 32 (no projection, k = 160: the largest unprojected case), near-identical sets.

Per set, from the package: ``fidelity``, ``diversity``, ``f1`` (``Top_F1``), the bandwidths
``h_real``/``h_fake`` and bands ``c_real``/``c_fake`` (in the package's units), the per-sample
scores ``score_rr``, ``score_gg`` (each set's KDE at its own points), ``score_rg`` (the fakes' KDE
at the reals), ``score_gr`` (the reals' KDE at the fakes), and the projected
features ``proj_real``/``proj_fake`` the package computed (for ``shift64`` only, to keep the file small).
Features are stored as float16; the package saw exactly those values as float32.

Below d = 33 the package does not seed numpy's global generator itself, so this script calls
``numpy.random.seed(42)`` before each of those sets (what imgdist always uses). Sets with d <= 3
cannot be made: the package fails on that path (UnboundLocalError), see imgdist.metrics.top_pr.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

SEED = 20250301
PROJECTED_KEPT = "shift64"  # the one set whose projected features are stored (100 KB)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "top_pr_peers.npz")


def make_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    sets = {}

    d = 64
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = rng.standard_normal((420, d)) @ mix
    fake = 0.75 * (rng.standard_normal((380, d)) @ mix) + 0.1
    sets["shift64"] = (real, fake)

    real = rng.standard_normal((400, d)) @ mix + 1.0
    fake = rng.standard_normal((360, d)) @ mix + 1.0
    fake[:90] = 6.0 + 0.05 * rng.standard_normal((90, d))  # a tight cluster off the reals' support
    sets["offsupport64"] = (real, fake)

    d = 8
    modes = np.where(rng.random(300) < 0.5, -2.0, 2.0)[:, None]
    real = rng.standard_normal((300, d)) + modes
    fake = np.vstack([rng.standard_normal((180, d)) - 2.0, 1.8 * rng.standard_normal((90, d))])
    sets["mix8"] = (real, fake)

    d = 32
    real = rng.standard_normal((360, d))
    fake = 0.95 * rng.standard_normal((340, d)) + 0.05
    sets["edge32"] = (real, fake)
    # float16 values (stored as float16, given to the package as float32): half the file
    return {name: (r.astype(np.float16).astype(np.float32), f.astype(np.float16).astype(np.float32))
            for name, (r, f) in sets.items()}


def run_package(real: np.ndarray, fake: np.ndarray) -> dict[str, np.ndarray]:
    from top_pr import top_pr as package

    bands, kdes = [], []
    confband_est, compact_kde = package.confband_est, package.compact_KDE

    def recording_band(data, h, **kwargs):
        c, p_hat = confband_est(data, h, **kwargs)
        bands.append((np.array(data), float(h), float(c), np.array(p_hat)))
        return c, p_hat

    def recording_kde(data, position, h, kernel="cosine"):
        out = compact_kde(data, position, h, kernel=kernel)
        kdes.append(np.array(out))
        return out

    package.confband_est, package.compact_KDE = recording_band, recording_kde
    try:
        if real.shape[1] <= 32:
            np.random.seed(42)  # the package seeds numpy only on its projection path
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = package.compute_top_pr(real_features=real, fake_features=fake)
    finally:
        package.confband_est, package.compact_KDE = confband_est, compact_kde
    (data_r, h_r, c_r, score_rr), (data_f, h_f, c_f, score_gg) = bands
    out = {
        "fidelity": np.float64(result["fidelity"]),
        "diversity": np.float64(result["diversity"]),
        "f1": np.float64(result["Top_F1"]),
        "h_real": np.float64(h_r), "h_fake": np.float64(h_f),
        "c_real": np.float64(c_r), "c_fake": np.float64(c_f),
        "score_rr": score_rr, "score_gg": score_gg,
        "score_rg": kdes[-2], "score_gr": kdes[-1],
    }
    return out, (data_r, data_f)


def main() -> None:
    out = {}
    for name, (real, fake) in make_sets().items():
        out[f"{name}_real"], out[f"{name}_fake"] = real.astype(np.float16), fake.astype(np.float16)
        values, projected = run_package(real, fake)
        for key, value in values.items():
            out[f"{name}_{key}"] = value
        if name == PROJECTED_KEPT:
            out[f"{name}_proj_real"], out[f"{name}_proj_fake"] = projected
        print(f"{name}: fidelity {out[f'{name}_fidelity']:.6f} diversity {out[f'{name}_diversity']:.6f} "
              f"h {out[f'{name}_h_real']:.5g}/{out[f'{name}_h_fake']:.5g}")
    np.savez_compressed(OUT, **out)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
