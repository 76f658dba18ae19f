"""Make tests/fixtures/metrics_peers.npz: random features and what the reference tools compute on them.

Run with the peers environment (see ../shared/tools/peers-venv.sh), not with imgdist's:

    /tmp/peers-venv/bin/python tools/peers/make_metric_fixtures.py

Inputs are made here from a fixed numpy seed; every stored result comes from the peer packages'
own functions (pytorch-fid 0.3.0, torch-fidelity 0.4.0, prdc 0.2), never from imgdist.
tests/test_metrics_parity.py compares imgdist's metrics against them.

Stored arrays:
- real (600 x 64), fake (500 x 64): float32 features, fake shifted and rescaled;
- mu_real, sigma_real, mu_fake, sigma_fake: float64 statistics (np.mean, np.cov) given to both
  pytorch-fid and imgdist, so only the distance computation is compared;
- logits (500 x 1008, float16 to keep the file small; peers see the same values as float32);
- int_real (200 x 8), int_fake (150 x 8): small integers with many duplicate rows, to pin down
  how ties and zero distances count in precision/recall/density/coverage;
- peer results: fid_pytorch_fid, kid_* (torch-fidelity), isc_* (torch-fidelity), prdc_k{3,5}_*
  and prdc_int_k{3,5}_* (prdc).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import numpy as np
import torch

SEED = 20240611
KID_SUBSETS = 20
KID_SUBSET_SIZE = 200
KID_SEED = 2020
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "metrics_peers.npz")


def make_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    d = 64
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = rng.standard_normal((600, d)) @ mix + 0.5
    fake = 1.15 * (rng.standard_normal((500, d)) @ mix) + 0.5 + 0.2 * rng.standard_normal(d)
    logits = 3.0 * rng.standard_normal((500, 1008))
    logits[:, :10] += 4.0 * rng.standard_normal((500, 10))  # some confident predictions
    int_real = rng.integers(0, 3, size=(200, 8))
    int_fake = rng.integers(0, 3, size=(150, 8))
    int_fake[:40] = int_real[:40]  # exact real/fake duplicates as well
    return {
        "real": real.astype(np.float32),
        "fake": fake.astype(np.float32),
        "logits": logits.astype(np.float16),
        "int_real": int_real.astype(np.float32),
        "int_fake": int_fake.astype(np.float32),
    }


def main() -> None:
    from prdc import compute_prdc
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kernel_mmd, kid_features_to_metric

    data = make_inputs()
    real, fake = data["real"], data["fake"]
    out = dict(data)

    # FID: same float64 statistics into pytorch-fid
    r64, f64 = real.astype(np.float64), fake.astype(np.float64)
    out["mu_real"], out["sigma_real"] = r64.mean(axis=0), np.cov(r64, rowvar=False)
    out["mu_fake"], out["sigma_fake"] = f64.mean(axis=0), np.cov(f64, rowvar=False)
    out["fid_pytorch_fid"] = np.float64(
        calculate_frechet_distance(out["mu_real"], out["sigma_real"], out["mu_fake"], out["sigma_fake"])
    )

    # KID: torch-fidelity's subsets (RandomState(KID_SEED), real then fake index draw per subset)
    t_real, t_fake = torch.from_numpy(real), torch.from_numpy(fake)
    kid = kid_features_to_metric(
        t_real, t_fake, kid_subsets=KID_SUBSETS, kid_subset_size=KID_SUBSET_SIZE, rng_seed=KID_SEED, verbose=False
    )
    out["kid_subsets"] = np.int64(KID_SUBSETS)
    out["kid_subset_size"] = np.int64(KID_SUBSET_SIZE)
    out["kid_seed"] = np.int64(KID_SEED)
    out["kid_mean"] = np.float64(kid["kernel_inception_distance_mean"])
    out["kid_std"] = np.float64(kid["kernel_inception_distance_std"])
    # full sets of equal size (first 500 real rows): sampling plays no part
    n = len(fake)
    out["kid_full_equal"] = np.float64(kernel_mmd(real[:n], fake))
    kid_eq = kid_features_to_metric(
        t_real[:n], t_fake, kid_subsets=3, kid_subset_size=n, rng_seed=KID_SEED, verbose=False
    )
    out["kid_equal_mean"] = np.float64(kid_eq["kernel_inception_distance_mean"])
    out["kid_equal_std"] = np.float64(kid_eq["kernel_inception_distance_std"])

    # Inception Score: in order, and with torch-fidelity's default shuffle (RandomState(2020))
    t_logits = torch.from_numpy(data["logits"].astype(np.float32))
    isc = isc_features_to_metric(t_logits, splits=10, shuffle=False)
    out["isc_mean"], out["isc_std"] = np.float64(isc["inception_score_mean"]), np.float64(isc["inception_score_std"])
    isc = isc_features_to_metric(t_logits, splits=10, shuffle=True, rng_seed=2020)
    out["isc_shuffled_mean"] = np.float64(isc["inception_score_mean"])
    out["isc_shuffled_std"] = np.float64(isc["inception_score_std"])

    # prdc, k = 3 and 5, on the continuous features and on the integer ones with ties
    for tag, (a, b) in {"": (real, fake), "int_": (data["int_real"], data["int_fake"])}.items():
        for k in (3, 5):
            with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
                res = compute_prdc(a, b, nearest_k=k)
            for name, value in res.items():
                out[f"prdc_{tag}k{k}_{name}"] = np.float64(value)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e6:.2f} MB)")
    for key in sorted(out):
        if np.ndim(out[key]) == 0:
            print(f"  {key} = {out[key]!r}")


if __name__ == "__main__":
    sys.exit(main())
