"""Make tests/fixtures/fwd_peers.npz: what pytorchfwd 1.0.1 (with ptwt 0.1.8) computes on small image sets.

Run with the peers environment (see ../shared/tools/peers-venv.sh), not with imgdist's:

    /tmp/peers-venv/bin/python tools/peers/make_fwd_fixtures.py

The image sets come from ``tests/fwd_inputs.py`` (shared with tests/test_fwd.py; the fixture
stores their digest, not the images). Each side is written as PNG files into a temporary folder
and given to pytorchfwd's own ``compute_fwd`` (Haar, level 4, no log scale), as its command line
would; every stored number comes from pytorchfwd and ptwt, never from imgdist.

Two notes from building the peers environment: importing pytorchfwd sets torch's default dtype to
float64 (its images and packets are float64 because of it), and its module-level
``NUM_PROCESSES = None`` must be set to 0 before ``compute_fwd`` on current torch (a DataLoader
refuses ``num_workers=None``).

To store more than the final mean, pytorchfwd's module-level ``compute_packet_statistics`` and
``calculate_frechet_distance`` are wrapped while it runs (``compute_fwd`` looks them up at call
time); the wrappers record results and change nothing.

Stored, per set ``<name>``: ``<name>_fwd``; ``<name>_packet_fd`` (256 per-packet Fréchet distances,
natural packet order); ``<name>_trace_real`` / ``_trace_fake`` (each packet covariance's trace);
``<name>_digest`` (sha256 of the images, tests/fwd_inputs.digest). For ``photos_blur`` also the
means ``mu_real`` / ``mu_fake`` (256 x 48) and the covariances of packets 0 and 255.
Besides: ``coeff_level3``, ptwt's ``WaveletPacket2D(x, "haar", maxlevel=3)`` packets of
``fwd_inputs.coefficient_input()`` (2 x 3 x 23 x 17, odd sides), natural order, shape
2 x 64 x 3 x 3 x 3.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "fwd_peers.npz"
LEVEL = 4
DETAILED = "photos_blur"


def run_pytorchfwd(real_dir: str, fake_dir: str, resize: int | None) -> dict[str, np.ndarray]:
    import pytorchfwd.fwd as package

    package.NUM_PROCESSES = 0
    stats, distances = [], []
    compute_stats, frechet = package.compute_packet_statistics, package.calculate_frechet_distance

    def recording_stats(**kwargs):
        mu, sigma = compute_stats(**kwargs)
        stats.append((np.array(mu), np.array(sigma)))
        return mu, sigma

    def recording_frechet(**kwargs):
        value = frechet(**kwargs)
        distances.append(float(value))
        return value

    package.compute_packet_statistics, package.calculate_frechet_distance = recording_stats, recording_frechet
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            value = package.compute_fwd([real_dir, fake_dir], wavelet="Haar", max_level=LEVEL, log_scale=False,
                                        batch_size=16, resize=resize)
    finally:
        package.compute_packet_statistics, package.calculate_frechet_distance = compute_stats, frechet
    (mu_r, sigma_r), (mu_f, sigma_f) = stats
    return {"fwd": np.float64(value), "packet_fd": np.array(distances),
            "trace_real": np.trace(sigma_r, axis1=1, axis2=2), "trace_fake": np.trace(sigma_f, axis1=1, axis2=2),
            "mu_real": mu_r, "mu_fake": mu_f, "sigma_real": sigma_r, "sigma_fake": sigma_f}


def packet_coefficients(x: np.ndarray, level: int) -> np.ndarray:
    import ptwt
    import pywt
    import torch

    packets = ptwt.WaveletPacket2D(torch.from_numpy(x), pywt.Wavelet("haar"), maxlevel=level)
    return torch.stack([packets[node] for node in packets.get_natural_order(level)], dim=1).numpy()


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from fwd_inputs import coefficient_input, digest, has_fashion, make_sets, write_pngs

    out = {}
    sets = make_sets(with_fashion=has_fashion())
    for name, (real, fake, resize) in sets.items():
        with tempfile.TemporaryDirectory() as tmp:
            values = run_pytorchfwd(write_pngs(real, os.path.join(tmp, "real")),
                                    write_pngs(fake, os.path.join(tmp, "fake")), resize)
        out[f"{name}_digest"] = np.array(digest([real, fake]))
        for key in ("fwd", "packet_fd", "trace_real", "trace_fake"):
            out[f"{name}_{key}"] = values[key]
        if name == DETAILED:
            out[f"{name}_mu_real"], out[f"{name}_mu_fake"] = values["mu_real"], values["mu_fake"]
            for side in ("real", "fake"):
                out[f"{name}_sigma_{side}_first"] = values[f"sigma_{side}"][0]
                out[f"{name}_sigma_{side}_last"] = values[f"sigma_{side}"][-1]
        print(f"{name}: FWD {float(values['fwd']):.8g} ({len(values['packet_fd'])} packets)")
    out["coeff_level3"] = packet_coefficients(coefficient_input(), 3)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
