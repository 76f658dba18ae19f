"""The ADM suite against OpenAI's ADM evaluator's own functions and torch-fidelity's Inception.

References, never computed by imgdist:

* ``fixtures/adm_peers.npz`` (``tools/peers/make_adm_fixtures.py``): the evaluator's
  ``FIDStatistics.frechet_distance``, ``compute_inception_score`` and ``ManifoldEstimator``
  (``evaluate_pr``, float16 distance blocks, k = 3) run with TensorFlow 2.21 on the seeded features
  of ``adm_inputs.py`` (2,500 reference and 3,000 sample rows; the fixture stores their digest);
* ``fixtures/inception_spatial_peers.npz`` (``tools/peers/make_spatial_fixtures.py``): torch-
  fidelity's ``Mixed_6d.branch1x1`` (the graph's ``mixed_6/conv``) on the parity images with the
  stand-in weights.

Tolerances: FID and sFID 1e-6 relative; IS 1e-6 relative; precision and recall equal up to the
samples imgdist reports as within float16 rounding of a radius (``borderline_*``); the spatial
map 1e-5 as ``max |ours - theirs| / max |theirs|``, as in ``test_inception.py``.

The IS and precision/recall checks take ``imgdist.metrics.adm`` through the ``adm`` fixture: a
missing module skips them locally and fails them in CI (``needs.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adm_inputs import digest, make_inputs
from imgdist.extraction.backbones import inception
from imgdist.metrics import frechet_distance
from needs import require_module
from stand_in_weights import KEYS_FILE, parity_images, save_stand_in

FIXTURES = KEYS_FILE.parent
REL_FD = 1e-6
REL_IS = 1e-6
REL_MAP = 1e-5



@pytest.fixture(scope="module")
def adm():
    return require_module("imgdist.metrics.adm", "the ADM suite's metric functions")


@pytest.fixture(scope="module")
def evaluator():
    return dict(np.load(FIXTURES / "adm_peers.npz"))


@pytest.fixture(scope="module")
def inputs(evaluator):
    data = make_inputs(int(evaluator["seed"]))
    # the inputs are regenerated, not stored: they must be the very numbers the evaluator saw
    assert digest(data) == str(evaluator["inputs_sha256"]), "adm_inputs.py no longer gives the fixture's inputs"
    return data


def evaluator_statistics(x: np.ndarray):
    """The evaluator's ``compute_statistics``: float32 mean, float64 covariance."""
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def rel(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / abs(theirs)


# --------------------------------------------------------------------------------------------
# FID and sFID: FIDStatistics.frechet_distance


@pytest.mark.parametrize("kind,key", [("pool", "fid"), ("spatial", "sfid")])
def test_frechet_distance_matches_the_evaluator(inputs, evaluator, kind, key):
    mu_s, sigma_s = evaluator_statistics(inputs[f"sample_{kind}"])
    mu_r, sigma_r = evaluator_statistics(inputs[f"ref_{kind}"])
    ours = frechet_distance(mu_s, sigma_s, mu_r, sigma_r)
    assert rel(ours, float(evaluator[key])) < REL_FD, (ours, float(evaluator[key]))


@pytest.mark.parametrize("kind,key", [("pool", "fid"), ("spatial", "sfid")])
def test_frechet_distance_from_float64_statistics_matches_the_evaluator(inputs, evaluator, kind,
                                                                        key):
    """imgdist's statistics are float64 throughout; the evaluator's mean is float32. Both agree."""
    stats = [(x.astype(np.float64).mean(0), np.cov(x.astype(np.float64), rowvar=False))
             for x in (inputs[f"sample_{kind}"], inputs[f"ref_{kind}"])]
    ours = frechet_distance(*stats[0], *stats[1])
    assert rel(ours, float(evaluator[key])) < REL_FD, (ours, float(evaluator[key]))


# --------------------------------------------------------------------------------------------
# Inception Score: compute_inception_score


@pytest.mark.parametrize("split,key", [(5000, "is"), ("small", "is_split200")])
def test_inception_score_matches_the_evaluator(adm, inputs, evaluator, split, key):
    split_size = int(evaluator["is_split_small"]) if split == "small" else split
    logits = inputs["sample_pool"].astype(np.float64) @ inputs["classifier"].astype(np.float64)
    ours = adm.adm_inception_score(logits, split_size=split_size)
    assert rel(ours, float(evaluator[key])) < REL_IS, (ours, float(evaluator[key]))


def test_the_split_fixtures_differ(evaluator):
    """15 splits of 200 give another score than one split: the split logic is really tested."""
    assert rel(float(evaluator["is_split200"]), float(evaluator["is"])) > 100 * REL_IS


# --------------------------------------------------------------------------------------------
# precision and recall: ManifoldEstimator.evaluate_pr


def exact_membership(ref: np.ndarray, sample: np.ndarray, k: int = 3):
    """float64 decisions and the distance / radius ratios nearest to 1 (test-side reference)."""
    def sq_dist(a, b):
        a, b = a.astype(np.float64), b.astype(np.float64)
        return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None], 0)

    radius_ref = np.sort(sq_dist(ref, ref), axis=1)[:, k]
    radius_sample = np.sort(sq_dist(sample, sample), axis=1)[:, k]
    d = sq_dist(sample, ref)
    return d <= radius_ref[None], d <= radius_sample[:, None], d, radius_ref, radius_sample


@pytest.mark.parametrize("prefix", ["", "large_"])
def test_the_evaluator_differs_from_exact_only_near_a_radius(inputs, evaluator, prefix):
    """Checks the fixture itself: its float16 decisions that differ from float64 ones are close
    calls (distance within 2 % of the radius), and the float32-fallback case has no such flips."""
    ref, sample = inputs[f"ref_pool{prefix and '_large'}"], inputs[f"sample_pool{prefix and '_large'}"]
    in_ref_ball, in_sample_ball, d, r_ref, r_sample = exact_membership(ref, sample)
    flipped_samples = np.flatnonzero(in_ref_ball.any(1) != evaluator[f"{prefix}sample_in"])
    flipped_refs = np.flatnonzero(in_sample_ball.any(0) != evaluator[f"{prefix}ref_in"])
    for i in flipped_samples:
        assert np.min(np.abs(d[i] / r_ref - 1)) < 0.02, i
    for j in flipped_refs:
        assert np.min(np.abs(d[:, j] / r_sample - 1)) < 0.02, j
    if not evaluator[f"{prefix}float16"]:
        assert len(flipped_samples) == len(flipped_refs) == 0


@pytest.mark.parametrize("prefix", ["", "large_"])
@pytest.mark.parametrize("exact", [False, True])
def test_precision_recall_match_the_evaluator_up_to_borderline(adm, inputs, evaluator, prefix, exact):
    ref, sample = inputs[f"ref_pool{prefix and '_large'}"], inputs[f"sample_pool{prefix and '_large'}"]
    ours = adm.adm_precision_recall(ref, sample, k=3, exact=exact)
    assert ours.exact == exact
    # counts, not fractions: each differing decision moves a fraction by 1/N
    diff_samples = abs(round(ours.precision * len(sample)) - int(evaluator[f"{prefix}sample_in"].sum()))
    diff_refs = abs(round(ours.recall * len(ref)) - int(evaluator[f"{prefix}ref_in"].sum()))
    if exact:
        # exact has no borderline of its own: use the float16 run's, which bounds both
        bound = adm.adm_precision_recall(ref, sample, k=3, exact=False)
        assert ours.borderline_precision == ours.borderline_recall == 0
    else:
        bound = ours
    assert diff_samples <= bound.borderline_precision, (diff_samples, bound.borderline_precision)
    assert diff_refs <= bound.borderline_recall, (diff_refs, bound.borderline_recall)
    if not evaluator[f"{prefix}float16"]:  # the evaluator's float32 fallback: plain equality
        assert (ours.precision, ours.recall) == (float(evaluator[f"{prefix}precision"]),
                                                 float(evaluator[f"{prefix}recall"]))


def test_borderline_counts_cover_the_real_flips(adm, inputs, evaluator):
    """The borderline counts bound the decisions float16 really flipped (evaluator vs float64).

    They are worst-case bounds, per distance: at these sizes 359 of 3,000 samples and 125 of 2,500
    reference points against 18 and 2 real flips (squared norms ~600 against radii ~50 put every
    distance's float16 error band at a few percent of a radius), so they are only required to
    cover the flips and to leave most decisions settled."""
    ref, sample = inputs["ref_pool"], inputs["sample_pool"]
    ours = adm.adm_precision_recall(ref, sample, k=3)
    in_ref_ball, in_sample_ball, *_ = exact_membership(ref, sample)
    flips_samples = int((in_ref_ball.any(1) != evaluator["sample_in"]).sum())
    flips_refs = int((in_sample_ball.any(0) != evaluator["ref_in"]).sum())
    assert flips_samples <= ours.borderline_precision < len(sample) / 2
    assert flips_refs <= ours.borderline_recall < len(ref) / 2


# --------------------------------------------------------------------------------------------
# the sFID spatial features: torch-fidelity's Mixed_6d.branch1x1


@pytest.fixture(scope="module")
def spatial_peers():
    return dict(np.load(FIXTURES / "inception_spatial_peers.npz"))


@pytest.fixture(scope="module")
def stand_in_model(tmp_path_factory):
    return inception.build(save_stand_in(tmp_path_factory.mktemp("weights") / "stand_in.pth"))


@pytest.fixture(scope="module")
def tf_batch():
    return inception.SPEC.preprocessing("tf")(parity_images())


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_mixed_6_conv_map_matches_torch_fidelity(stand_in_model, tf_batch, spatial_peers):
    seen = []
    hook = stand_in_model.Mixed_6d.branch1x1.register_forward_hook(
        lambda module, args, output: seen.append(output.detach().clone()))
    try:
        with torch.no_grad():
            pool = stand_in_model(tf_batch, ("pool",))["pool"].numpy()
    finally:
        hook.remove()
    assert rel_err(pool, spatial_peers["tfid_2048"]) < REL_MAP
    assert rel_err(torch.cat(seen).numpy(), spatial_peers["tfid_mixed_6_conv"]) < REL_MAP


def test_sfid_output_is_the_first_7_channels_in_hwc_order(stand_in_model, tf_batch, spatial_peers):
    with torch.no_grad():
        ours = stand_in_model(tf_batch, ("sfid",))["sfid"].numpy()
    theirs = spatial_peers["tfid_mixed_6_conv"][:, :7].transpose(0, 2, 3, 1).reshape(len(ours), -1)
    assert ours.shape == (len(tf_batch), 2023)
    assert rel_err(ours, theirs) < REL_MAP
    # the (c, h, w) order holds the same numbers but is a different vector: the test can tell
    chw = spatial_peers["tfid_mixed_6_conv"][:, :7].reshape(len(ours), -1)
    assert rel_err(ours, chw) > 100 * REL_MAP
