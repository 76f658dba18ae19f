"""evaluate / evaluate_features / Evaluator against direct metric calls on independently built features.

The ``pixels`` backbone in 'native' mode makes the features computable here without imgdist
(``img / 255`` flattened as C, H, W), so every number can be checked against the metric functions
called on those arrays. Images are 6 x 6 (d = 108) so that N > d and everything stays fast.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import imgdist
from imgdist import metrics as M
from imgdist.errors import ImgdistError, SourceError
from imgdist.evaluation.run import Evaluator, Result, evaluate, evaluate_features, metric_label, parse_metrics
from imgdist.extraction.provenance import Provenance
from imgdist.extraction.stats import GaussianStats
from needs import require_module

SIZE = 6
PIX = dict(backbone="pixels", mode="native", progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def _set(n, seed, brightness=0.0):
    """Smooth random images plus noise; ``brightness`` moves the whole distribution."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        base = 128 + 50 * (a * xx + b * yy) + 30 * np.sin(6 * c * xx)
        img = base[:, :, None] + rng.normal(0, 25, (SIZE, SIZE, 3)) + brightness
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _feats(images):
    """The pixels/native features, computed without imgdist."""
    return (images.astype(np.float32) / np.float32(255)).transpose(0, 3, 1, 2).reshape(len(images), -1)


@pytest.fixture(scope="module")
def real():
    return _set(160, seed=1)


@pytest.fixture(scope="module")
def fake():
    return _set(140, seed=2, brightness=12)


KID_ARGS = dict(kid_subsets=20, kid_subset_size=60, seed=3)


def test_evaluate_equals_direct_metric_calls(real, fake):
    result = evaluate(real, fake, metrics="fid,kid,prdc", **KID_ARGS, **PIX)
    xr, xf = _feats(real), _feats(fake)
    assert result.values["fid"] == pytest.approx(M.fid_from_features(xr, xf), rel=1e-9)
    kid, kid_std = M.kid(xr, xf, subsets=20, subset_size=60, seed=3)
    assert result.values["kid"] == pytest.approx(kid, rel=1e-12)
    assert result.stds["kid"] == pytest.approx(kid_std, rel=1e-12)
    p3, p5 = M.prdc(xr, xf, k=3), M.prdc(xr, xf, k=5)
    assert (result["precision"], result["recall"]) == (p3.precision, p3.recall)
    assert (result["density"], result["coverage"]) == (p5.density, p5.coverage)
    assert (result["precision"], result["recall"]) == M.precision_recall(xr, xf, k=3)
    assert result.counts == {"real": 160, "fake": 140}
    assert result.details["precision_recall_k"] == 3 and result.details["density_coverage_k"] == 5
    assert result.values["fid"] > 0.05 and result.values["kid"] > 0  # the sets do differ
    assert list(result.values) == ["fid", "kid", "precision", "recall", "density", "coverage"]


def test_pr_and_dc_k_are_passed_through(real, fake):
    result = evaluate(real, fake, metrics="prdc", pr_k=5, dc_k=3, **PIX)
    xr, xf = _feats(real), _feats(fake)
    assert (result["precision"], result["recall"]) == M.precision_recall(xr, xf, k=5)
    assert (result["density"], result["coverage"]) == M.density_coverage(xr, xf, k=3)


def test_evaluate_features_equals_evaluate(real, fake):
    fr = imgdist.extract_features(real, **PIX)
    ff = imgdist.extract_features(fake, **PIX)
    np.testing.assert_array_equal(fr.features, _feats(real))
    direct = evaluate_features(fr, ff, metrics="fid,kid,pr", **KID_ARGS)
    via = evaluate(real, fake, metrics="fid,kid,pr", **KID_ARGS, **PIX)
    assert direct.values == via.values
    assert direct.labels == via.labels


def test_identical_sets_give_zero(real):
    result = evaluate(real, real, metrics="fid,prdc", **PIX)
    assert result["fid"] == pytest.approx(0.0, abs=1e-9)
    assert result["precision"] == result["recall"] == result["coverage"] == 1.0


def test_metric_labels():
    inception = Provenance(backbone="inception", feature_layer="pool", resize_mode="pytorch-fid")
    assert [metric_label(m, inception) for m in ("fid", "kid", "is", "fid-inf", "precision")] == \
        ["FID", "KID", "IS", "FID_inf", "precision"]
    pixels = Provenance(backbone="pixels", feature_layer="pool", resize_mode="antialias")
    assert [metric_label(m, pixels) for m in ("fid", "kid", "is", "fid-inf")] == \
        ["FD[pixels]", "KD[pixels]", "IS[pixels]", "FD_inf[pixels]"]
    pool768 = Provenance(backbone="inception", feature_layer="pool768", resize_mode="pytorch-fid")
    assert metric_label("fid", pool768) == "FD[inception/pool768]"
    assert metric_label("fid", Provenance(imgdist_version=None)) == "FD[unknown]"  # foreign statistics: no FID
    published = "6726825d" + "0" * 56
    official = Provenance(backbone="inception", feature_layer="pool", weights_sha256=published)
    assert metric_label("fid", official) == "FID"
    other = Provenance(backbone="inception", feature_layer="pool", weights_sha256="d37b7cb1" + "1" * 56)
    assert [metric_label(m, other) for m in ("fid", "kid", "is")] == \
        ["FD[inception:d37b7cb1]", "KD[inception:d37b7cb1]", "IS[inception:d37b7cb1]"]


def test_labels_from_a_real_evaluation(real, fake):
    result = evaluate(real, fake, metrics="fid,kid", **KID_ARGS, **PIX)
    assert result.labels == {"fid": "FD[pixels]", "kid": "KD[pixels]"}
    data = json.loads(result.to_json())
    assert set(data["metrics"]) == {"FD[pixels]", "KD[pixels]"}
    assert data["metrics"]["FD[pixels]"]["value"] == result["fid"]
    assert data["provenance"]["backbone"] == "pixels"


def test_inception_768_label_from_the_extractor(tmp_path):
    from stand_in_weights import save_stand_in

    weights = save_stand_in(tmp_path / "standin.pth")
    ext = imgdist.FeatureExtractor("inception", weights=str(weights), dims=768, progress=False)
    assert ext.provenance.feature_layer == "pool768"
    # the stand-in weights are not the published ones: their hash is part of the name
    tag = ext.provenance.weights_sha256[:8]
    assert metric_label("fid", ext.provenance) == f"FD[inception:{tag}/pool768]"


def test_bootstrap_intervals(real, fake):
    kwargs = dict(metrics="fid,kid", bootstrap=40, ci=0.9, **KID_ARGS, **PIX)
    result = evaluate(real, fake, **kwargs)
    for metric in ("fid", "kid"):
        low, high = result.intervals[metric]
        assert low < result[metric] < high, metric
        assert f"{metric}_bootstrap_offset" in result.details
    assert result.details["ci_level"] == 0.9 and result.details["bootstrap_samples"] == 40
    again = evaluate(real, fake, **kwargs)
    assert again.intervals == result.intervals
    other_seed = evaluate(real, fake, **{**kwargs, "seed": 4})
    assert other_seed.intervals["fid"] != result.intervals["fid"]

    # independent: the replicates, their bias and the re-centred quantiles
    xr, xf = _feats(real), _feats(fake)
    reps = M.bootstrap_replicates(M.fid_from_features, xr, xf, n_boot=40, seed=3)
    offset = reps.mean() - result["fid"]
    assert result.details["fid_bootstrap_offset"] == pytest.approx(offset, rel=1e-9)
    assert offset > 0  # resampling with replacement inflates FID
    lo, hi = np.quantile(reps, [0.05, 0.95]) - offset
    assert result.intervals["fid"] == pytest.approx((lo, hi), rel=1e-9)
    data = json.loads(result.to_json())
    assert data["metrics"]["FD[pixels]"]["ci"] == pytest.approx(list(result.intervals["fid"]))


def test_stats_file_as_real(tmp_path, real, fake):
    stats = imgdist.compute_stats(real, **PIX)
    path = tmp_path / "real_stats.npz"
    stats.save(path)
    from_file = evaluate(str(path), fake, metrics="fid", **PIX)
    from_images = evaluate(real, fake, metrics="fid", **PIX)
    assert from_file["fid"] == pytest.approx(from_images["fid"], rel=1e-9)
    assert from_file.labels["fid"] == "FD[pixels]"
    assert from_file.counts["real"] == 160
    with pytest.raises(ImgdistError, match="statistics"):
        evaluate(str(path), fake, metrics="fid,kid", **PIX)
    with pytest.raises(ImgdistError, match="statistics"):
        evaluate(str(path), fake, metrics="fid", bootstrap=5, **PIX)


def test_stats_file_with_other_provenance_is_refused(tmp_path, real, fake):
    path = tmp_path / "other.npz"
    imgdist.compute_stats(real, "pixels", mode="native", progress=False).save(path)
    small = np.stack([np.asarray(Image.fromarray(i).resize((32, 32))) for i in fake[:40]])
    with pytest.raises(imgdist.ProvenanceError, match="resize_mode"):
        evaluate(str(path), small, metrics="fid", backbone="pixels", progress=False)


def test_inception_score_needs_logits(real, fake):
    with pytest.raises(ImgdistError, match="logits"):
        evaluate(real, fake, metrics="is", **PIX)


def _photo_crops(n=20, size=96):
    data = require_module("skimage.data")
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - 2 * size)
        x = rng.integers(0, photo.shape[1] - 2 * size)
        crops.append(np.ascontiguousarray(photo[y:y + 2 * size, x:x + 2 * size]))
    return crops


def test_inception_score_with_efficientnet(tmp_path):
    folder = tmp_path / "fake"
    folder.mkdir()
    for i, crop in enumerate(_photo_crops()):
        Image.fromarray(crop).save(folder / f"{i:02d}.png")
    cache = str(tmp_path / "cache")
    feats = imgdist.extract_features(str(folder), "efficientnet-lite0", keep_logits=True, cache=cache,
                                     progress=False, workers=0, batch_size=10)
    assert feats.logits.shape == (20, 1000)
    # the real side only needs statistics for IS: a foreign (provenance-less) file will do
    stats = tmp_path / "foreign.npz"
    np.savez(stats, mu=feats.stats.mu, sigma=feats.stats.sigma)
    result = evaluate(str(stats), str(folder), metrics="is", backbone="efficientnet-lite0", is_splits=2,
                      cache=cache, progress=False, workers=0)  # logits come back from the cache
    score, std = M.inception_score(feats.logits, splits=2)
    assert result["is"] == pytest.approx(score, rel=1e-6)
    assert result.stds["is"] == pytest.approx(std, rel=1e-5, abs=1e-6)
    assert result.labels["is"] == "IS[efficientnet-lite0]"
    assert 1.0 < result["is"] < 20.0


def test_parse_metrics():
    assert parse_metrics("prdc") == ("precision", "recall", "density", "coverage")
    assert parse_metrics("KID, fid ,dc") == ("fid", "kid", "density", "coverage")
    assert parse_metrics(["is", "fid_inf"]) == ("is", "fid-inf")
    every = {"fid", "kid", "is", "precision", "recall", "density", "coverage", "fid-inf", "vendi",
             "authenticity", "copies", "realism", "rarity", "p-precision", "p-recall", "precision-cover",
             "recall-cover", "rke", "sw"}
    # 'all': every metric that applies -- C_T only with a held-out set, IS only with logits,
    # only FID from a statistics file
    assert set(parse_metrics("all")) == every
    assert set(parse_metrics("all", real_test=True)) == every | {"ct"}
    assert set(parse_metrics("all", has_logits=False)) == every - {"is"}
    assert parse_metrics("all", features=False) == ("fid",)
    assert parse_metrics("memorization", real_test=True) == ("authenticity", "ct", "copies")
    with pytest.raises(ImgdistError, match="unknown metric 'fod'"):
        parse_metrics("fid,fod")
    with pytest.raises(ImgdistError, match="no metric"):
        parse_metrics(" , ")


def test_empty_folder(tmp_path, fake):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        evaluate(str(tmp_path / "empty"), fake, **PIX)


def test_folder_with_one_image(tmp_path, real, fake):
    (tmp_path / "one").mkdir()
    Image.fromarray(real[0]).save(tmp_path / "one" / "a.png")
    with pytest.raises(ImgdistError, match="covariance"):
        evaluate(str(tmp_path / "one"), fake, metrics="fid", **PIX)
    with pytest.raises(ImgdistError, match="covariance"):
        evaluate(str(tmp_path / "one"), fake, **PIX)  # default metrics: fid first


@pytest.mark.parametrize("metric", ["kid", "precision", "density"])
def test_too_few_images_for_knn_or_kid_is_a_user_error(real, fake, metric):
    # a ValueError here would reach the CLI user as a traceback
    with pytest.raises(ImgdistError, match=metric) as info:
        evaluate(real[:1], fake, metrics=metric, **PIX)
    assert "\n" not in str(info.value) and "  " not in str(info.value)


def test_result_json_without_nan():
    result = Result(values={"fid": float("nan"), "kid": 0.5}, labels={"fid": "FID", "kid": "KID"},
                    stds={"kid": float("inf")}, intervals={"kid": (0.1, 0.9)},
                    details={"array": np.arange(3), "x": np.float64(2.5)})
    text = result.to_json()
    data = json.loads(text)
    assert "NaN" not in text and "Infinity" not in text
    assert data["metrics"]["FID"]["value"] is None
    assert data["metrics"]["KID"] == {"metric": "kid", "value": 0.5, "better": "lower", "std": None, "ci": [0.1, 0.9]}
    assert data["details"] == {"array": [0, 1, 2], "x": 2.5}
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert math.isnan(result["fid"])


# ------------------------------------------------------------------ Evaluator

EV_KID = dict(kid_subsets=10, kid_subset_size=50, seed=1)


def _evaluator(**kwargs):
    return Evaluator("pixels", mode="native", metrics="fid,kid", **EV_KID, **kwargs)


def test_evaluator_batches_equal_evaluate(real, fake):
    ev = _evaluator()
    for start in range(0, 160, 50):
        ev.update(real=real[start:start + 50])
    import torch

    for start in range(0, 140, 45):  # also as uint8 N x C x H x W tensors
        ev.update(fake=torch.from_numpy(fake[start:start + 45]).permute(0, 3, 1, 2))
    streamed = ev.compute()
    whole = evaluate(real, fake, metrics="fid,kid", **EV_KID, **PIX)
    assert streamed["fid"] == pytest.approx(whole["fid"], rel=1e-9)
    assert streamed["kid"] == pytest.approx(whole["kid"], rel=1e-12)
    assert streamed.labels == whole.labels


def test_evaluator_reset_fake_keeps_real(real, fake):
    ev = _evaluator()
    ev.update(real=real, fake=fake)
    ev.reset_fake()
    with pytest.raises(ImgdistError, match="empty"):
        ev.compute()
    other = _set(120, seed=9, brightness=-20)
    ev.update(fake=other)
    expected = evaluate(real, other, metrics="fid,kid", **EV_KID, **PIX)
    got = ev.compute()
    assert got["fid"] == pytest.approx(expected["fid"], rel=1e-9)
    assert got["kid"] == pytest.approx(expected["kid"], rel=1e-12)
    assert got.counts == {"real": 160, "fake": 120}


def test_evaluator_merge_equals_one_evaluator(real, fake):
    a, b, one = _evaluator(), _evaluator(), _evaluator()
    a.update(real=real[:70], fake=fake[:90])
    b.update(real=real[70:], fake=fake[90:])
    one.update(real=real, fake=fake)
    a.merge(b)
    merged, single = a.compute(), one.compute()
    assert merged.counts == single.counts == {"real": 160, "fake": 140}
    assert merged["fid"] == pytest.approx(single["fid"], rel=1e-9)
    assert merged["kid"] == pytest.approx(single["kid"], rel=1e-12)


def test_evaluator_with_real_stats(real, fake, tmp_path):
    stats = imgdist.compute_stats(real, **PIX)
    assert isinstance(stats, GaussianStats)
    ev = Evaluator("pixels", mode="native", real_stats=stats)
    ev.update(fake=fake)
    expected = evaluate(real, fake, metrics="fid", **PIX)
    assert ev.compute()["fid"] == pytest.approx(expected["fid"], rel=1e-9)
    with pytest.raises(ImgdistError, match="real"):
        ev.update(real=real[:5])
    # and from a file
    stats.save(tmp_path / "s.npz")
    ev2 = Evaluator("pixels", mode="native", real_stats=str(tmp_path / "s.npz"))
    ev2.update(fake=fake)
    assert ev2.compute()["fid"] == pytest.approx(expected["fid"], rel=1e-9)


class _Encoded:
    """A source of encoded images that counts how often each one is read."""

    def __init__(self, items):
        self.items, self.reads = list(items), 0

    def __len__(self):
        return len(self.items)

    def content_bytes(self, i):
        self.reads += 1
        return self.items[i]


def test_held_out_set_read_once_for_both_checks():
    """C_T's held-out set is compared by content with the training set and with the fakes, each of
    its images read once; the counts in the warnings are those of the sets built here."""
    from imgdist.evaluation.side_checks import check_held_out

    train, fakes = _Encoded([b"a", b"b", b"c"]), _Encoded([b"d", b"e"])
    held = _Encoded([b"a", b"d", b"e", b"x"])
    notes = check_held_out(train, fakes, held, "held/")
    assert held.reads == 4 and train.reads == 3 and fakes.reads == 2
    assert [n.split(", by content")[0] for n in notes] == [
        "--real-test held/: 1 of its 4 images are also in the training (real) set",
        "--real-test held/: 2 of its 4 images are also in the fake set"]
    assert check_held_out(train, None, held, "held/") == notes[:1]
    with pytest.raises(ImgdistError, match="every one of its 2 images is also in the training"):
        check_held_out(train, fakes, _Encoded([b"b", b"c"]), "held/")


def test_all_with_a_held_out_set_on_features():
    """``all`` with ``real_test`` brings in C_T, and the size checks of ``all`` count the held-out set
    (they once did not, and refused C_T for want of the very real_test given)."""
    rng = np.random.default_rng(3)
    real, fake, held = (rng.normal(size=(60, 8)) for _ in range(3))
    everything = evaluate_features(real, fake, metrics="all", real_test=held, ct_cells=2)
    alone = evaluate_features(real, fake, metrics="ct", real_test=held, ct_cells=2)
    assert everything.values["ct"] == alone.values["ct"]
