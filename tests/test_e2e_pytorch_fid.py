"""End-to-end parity: ``imgdist eval`` in ``pytorch-fid`` resize mode against ``python -m pytorch_fid``.

The reference numbers come from pytorch-fid's command line itself
(``tests/fixtures/e2e_pytorch_fid.npz``, written by ``tools/peers/make_e2e_fixtures.py``), run on
two folders of PNG images (``tests/e2e_images.py``) with the stand-in Inception weights
(``tests/stand_in_weights.py``) placed where pytorch-fid looks for the official file. This test
writes the identical folders and weights again (their digests are checked against the fixture, so
a drifted generator fails loudly instead of as a parity error) and runs

    imgdist eval REAL FAKE --backbone inception --weights W --resize-mode pytorch-fid --dims 64
        --metrics fid --json --no-progress --no-cache --batch-size 24 --workers 0

in-process. One Inception pass on CPU costs most of the runtime, so the network is run once: a
spy on the backbone's ``forward`` also keeps the 192-, 768- and 2048-dimensional features of that
same pass (imgdist computes the whole network anyway, for the logits), and their Fréchet distances
come from :class:`imgdist.extraction.stats.GaussianStats`, the code the CLI uses.

Tolerance: 1e-4 relative difference to pytorch-fid's printed FID (the issue's requirement), for
every dims. Only 64 dims (72 images per set) has full-rank covariances; for 192, 768 and 2048 both
are singular, where imgdist computes ``tr sqrt(S1 S2)`` from the non-negative eigenvalues of a
symmetric similar matrix while pytorch-fid takes the trace of ``scipy.linalg.sqrtm(S1 @ S2)``,
which is ill-conditioned on such a product in general. On these sets it is not a problem:
measured relative differences (imgdist 0.1 / pytorch-fid 0.3.0, scipy 1.17) are 2e-8 (64),
6e-8 (192), 5e-8 (768) and 2e-7 (2048), the float32 feature rounding. If a scipy or data change
ever makes the singular cases fragile, the full-rank 64-dims case (run through the CLI) is the
one that must hold.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest

from e2e_images import (E2E_COUNT, E2E_SEED, E2E_SIZE, e2e_images, images_digest, weights_digest,
                        write_e2e_folders)
from imgdist.extraction.backbones import inception
from imgdist.cli import main
from imgdist.extraction.stats import GaussianStats
from stand_in_weights import KEYS_FILE, inception_stand_in_state_dict, save_stand_in

FIXTURE = KEYS_FILE.parent / "e2e_pytorch_fid.npz"
CLI_DIMS = 64                     # the full-rank case, run through the command line
TOL = 1e-4                        # the requirement
SPY_LAYERS = {192: "pool192", 768: "pool768", 2048: "pool"}
BATCH_SIZE = 24

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def images(reference):
    assert (int(reference["count"]), int(reference["size"]), int(reference["seed"])) == \
        (E2E_COUNT, E2E_SIZE, E2E_SEED), "tests/e2e_images.py settings differ from the fixture's"
    sets = e2e_images()
    assert images_digest(sets) == str(reference["images_sha256"]), \
        "tests/e2e_images.py draws other pixels than the fixture was made with; rerun " \
        "tools/peers/make_e2e_fixtures.py in the peers environment"
    return sets


@pytest.fixture(scope="module")
def ours(reference, images, tmp_path_factory):
    """FIDs from one imgdist pass: ``{dims: value}`` plus the CLI's JSON."""
    state = inception_stand_in_state_dict(int(reference["weights_seed"]))
    assert weights_digest(state) == str(reference["weights_sha256"]), \
        "the stand-in weights differ from those pytorch-fid ran with"
    root = tmp_path_factory.mktemp("e2e")
    folders = write_e2e_folders(root / "images", images)
    weights = save_stand_in(root / "stand_in.pth", int(reference["weights_seed"]))

    captured: list[dict[str, np.ndarray]] = []
    original = inception.FIDInceptionV3.forward

    def spy(self, x, outputs=("pool",)):
        wanted = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        out = original(self, x, tuple(dict.fromkeys(wanted + tuple(SPY_LAYERS.values()))))
        captured.append({layer: out[layer].float().cpu().numpy() for layer in SPY_LAYERS.values()})
        return {name: out[name] for name in wanted}

    argv = ["eval", str(folders["real"]), str(folders["fake"]), "--backbone", "inception",
            "--weights", str(weights), "--resize-mode", "pytorch-fid", "--dims", str(CLI_DIMS),
            "--metrics", "fid", "--json", "--no-progress", "--no-cache",
            "--batch-size", str(BATCH_SIZE), "--workers", "0"]
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout):
        mp.setattr(inception.FIDInceptionV3, "forward", spy)
        assert main(argv) == 0
    report = json.loads(stdout.getvalue())
    (entry,) = [e for e in report["metrics"].values() if e["metric"] == "fid"]
    values = {CLI_DIMS: entry["value"]}

    # the spy saw the real folder's batches, then the fake folder's (evaluate extracts in that order)
    assert sum(len(c["pool"]) for c in captured) == 2 * E2E_COUNT
    for dims, layer in SPY_LAYERS.items():
        feats = np.concatenate([c[layer] for c in captured])
        assert feats.shape == (2 * E2E_COUNT, dims)
        real = GaussianStats().update(feats[:E2E_COUNT])
        fake = GaussianStats().update(feats[E2E_COUNT:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "N images for d dimensions: singular covariance"
            values[dims] = real.frechet_distance(fake)
    return {"values": values, "report": report}


def rel_diff(ours_value: float, theirs: float) -> float:
    return abs(ours_value - theirs) / abs(theirs)


def test_fixture_is_complete(reference):
    assert list(reference["dims"]) == [64, 192, 768, 2048]
    assert np.all(np.isfinite(reference["fid"])), f"pytorch-fid failed: {reference['errors']}"
    assert str(reference["pytorch_fid_version"]) == "0.3.0"


def test_cli_report(ours):
    report = ours["report"]
    assert report["counts"] == {"real": E2E_COUNT, "fake": E2E_COUNT}
    assert report["provenance"]["resize_mode"] == "pytorch-fid"
    assert report["provenance"]["feature_layer"] == "pool64"


@pytest.mark.parametrize("dims", [64, 192, 768, 2048])
def test_fid_matches_pytorch_fid_cli(reference, ours, dims):
    theirs = float(reference["fid"][list(reference["dims"]).index(dims)])
    value = ours["values"][dims]
    diff = rel_diff(value, theirs)
    print(f"dims {dims}: imgdist {value!r}, pytorch-fid {theirs!r}, relative difference {diff:.3g}")
    assert diff <= TOL, f"dims {dims}: imgdist {value}, pytorch-fid {theirs} (relative {diff:.3g} > {TOL})"
