"""The ADM suite: ADM's Inception Score, precision/recall (float16 blocks and float64), sFID's
(h, w, c) order, ADM batch files, ``stats --format adm`` and ``eval --suite adm``."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import softmax

from imgdist.evaluation.adm import AdmBatch, evaluate_adm, read_adm_batch  # noqa: F401
from imgdist.extraction.backbones.inception import sfid_features
from imgdist.cli import main
from imgdist.errors import SourceError
from imgdist.metrics import adm as A
from imgdist.extraction.stats import is_stats_file

sys.path.insert(0, os.path.dirname(__file__))
from stand_in_weights import save_stand_in  # noqa: E402


# ------------------------------------------------------------------ pure functions

def _is_reference(logits, split):
    """Independent float64 recomputation: the improved-GAN formula, literally."""
    p = softmax(np.asarray(logits, np.float64), axis=1)
    scores = []
    for s in range(0, len(p), split):
        part = p[s:s + split]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores))


@pytest.mark.parametrize("n,split", [(23, 10), (40, 5000), (9, 1)])
def test_inception_score_matches_float64_reference(n, split):
    logits = np.random.default_rng(n).normal(scale=3.0, size=(n, 1008)).astype(np.float32)
    assert A.adm_inception_score(logits, split) == pytest.approx(_is_reference(logits, split), rel=1e-12)


def test_inception_score_short_last_split_counts_as_a_split():
    logits = np.random.default_rng(0).normal(scale=3.0, size=(11, 20))
    whole = [_is_reference(logits[:10], 10), _is_reference(logits[10:], 10)]
    assert A.adm_inception_score(logits, 10) == pytest.approx(np.mean(whole), rel=1e-12)


def _brute_pr(real, fake, k):
    def d2(a, b):
        return ((a[:, None, :].astype(np.float64) - b[None, :, :].astype(np.float64)) ** 2).sum(-1)

    r_real = np.sort(d2(real, real), axis=1)[:, k]   # (k+1)-th smallest, self included
    r_fake = np.sort(d2(fake, fake), axis=1)[:, k]
    d = d2(real, fake)
    return (d <= r_real[:, None]).any(axis=0).mean(), (d <= r_fake[None, :]).any(axis=1).mean()


@pytest.mark.parametrize("k,block", [(3, A.ADM_BLOCK), (3, 7), (1, 5), (5, 16)])
def test_exact_precision_recall_matches_brute_force(monkeypatch, k, block):
    monkeypatch.setattr(A, "ADM_BLOCK", block)   # several blocks and running k-smallest merges
    monkeypatch.setattr(A, "_CHUNK_ROWS", 3)
    rng = np.random.default_rng(k)
    real = rng.normal(size=(37, 12))
    fake = rng.normal(size=(29, 12)) * 1.3 + 0.2
    pr = A.adm_precision_recall(real, fake, k=k, exact=True)
    precision, recall = _brute_pr(real, fake, k)
    assert (pr.precision, pr.recall) == (precision, recall)
    assert pr.exact and pr.borderline_precision == pr.borderline_recall == 0


def test_ties_are_inside():
    # a sample exactly at a reference point's radius counts (<=): points on a line, squared distances exact
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[-3.0], [20.0], [30.0], [40.0], [50.0]])
    pr = A.adm_precision_recall(real, fake, k=3, exact=True)
    assert pr.precision == 0.2   # -3 is at distance 9 from 0, whose radius (3rd neighbour, 3) is 9


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (0.3, 0.5), (4.0, 1.0)])
def test_float16_differs_from_exact_only_on_borderline(scale, offset):
    rng = np.random.default_rng(7)
    real = (np.abs(rng.normal(size=(300, 64))) * scale + offset).astype(np.float32)
    fake = (np.abs(rng.normal(size=(260, 64))) * scale * 1.1 + offset).astype(np.float32)
    f16 = A.adm_precision_recall(real, fake)
    f64 = A.adm_precision_recall(real, fake, exact=True)
    assert not f16.exact
    assert abs(f16.precision - f64.precision) * len(fake) <= f16.borderline_precision
    assert abs(f16.recall - f64.recall) * len(real) <= f16.borderline_recall
    assert f16.borderline_precision < len(fake) and f16.borderline_recall < len(real)


def test_float16_error_stays_inside_the_bound():
    rng = np.random.default_rng(3)
    u = (np.abs(rng.normal(size=(200, 2048))) * 0.5).astype(np.float32)
    v = u[::-1] + rng.normal(size=u.shape).astype(np.float32) * 0.2
    d16, used16 = A.adm_distance_block(u, v)
    d64, _ = A.adm_distance_block(u, v, exact=True)
    bound = A._fp16_error(d16, A._Side(u, "u", False), 0, len(u), A._Side(v, "v", False), 0, len(v))
    assert used16 and np.all(np.abs(d16 - d64) <= bound)
    assert np.abs(d16 - d64).max() > 0.2 * bound.max()   # a bound, not a blanket
    assert np.abs(d16 - d64).max() > 0   # float16 really was used


def test_float16_step_by_step():
    # values whose products are exact in float16, summed in float32: each step rounds as stated
    u = np.array([[1.0, 2.0, 3.0]], np.float32)
    v = np.array([[1.0, 2.0, 3.5], [100.0, 0.0, 0.0]], np.float32)
    d, used16 = A.adm_distance_block(u, v)
    h = np.float16
    nu, nv = h(14.0), np.array([h(17.25), h(10000.0)])
    m = np.array([h(15.5), h(100.0)])
    expected = np.maximum((nu - h(2) * m).astype(h) + nv, 0).astype(np.float32)
    assert used16 and np.array_equal(d[0], expected)


def test_float16_overflow_falls_back_to_float32_for_the_whole_block():
    u = np.array([[300.0, 0.0], [1.0, 1.0]], np.float32)   # |u|^2 = 90000 > 65504: inf in float16
    v = np.array([[0.0, 300.0], [1.0, 2.0]], np.float32)
    d, used16 = A.adm_distance_block(u, v)
    assert not used16
    exact = ((u[:, None, :].astype(np.float64) - v[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d, exact, rtol=1e-6)


def test_radii_bounded_memory_blocks_match_one_block(monkeypatch):
    x = np.random.default_rng(5).normal(size=(50, 8)).astype(np.float32)
    whole = A.adm_radii(x, 3)
    monkeypatch.setattr(A, "ADM_BLOCK", 9)
    # float16 vs float32 is decided per block, so only exact mode is grid-independent
    np.testing.assert_allclose(A.adm_radii(x, 3, exact=True), np.sort(
        ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1), axis=1)[:, 3], rtol=1e-12)
    assert whole.shape == (50,)


def test_sfid_order_is_height_width_channel():
    n, c, h, w = 2, 9, 2, 3
    t = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)
    got = sfid_features(t).numpy()
    expected = np.array([[t[i, ch, y, x].item() for y in range(h) for x in range(w) for ch in range(7)]
                         for i in range(n)])
    assert got.shape == (n, h * w * 7) and np.array_equal(got, expected)


# ------------------------------------------------------------------ files and the suite

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_stand_in(tmp_path_factory.mktemp("w") / "standin.pth"))


def _images(n, seed, size=16):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _pool_and_sfid(images, weights, keep=True):
    from imgdist.extraction.features import FeatureExtractor

    ext = FeatureExtractor("inception", weights=weights, mode="tf", device="cpu", progress=False)
    return ext.extract(images, extra_layers=("sfid",), keep_extra=keep)


def test_stored_sfid_statistics_need_the_hwc_order(tmp_path, weights, one_thread):
    imgs = _images(6, 0)
    f = _pool_and_sfid(imgs, weights)
    s = f.extra_features["sfid"].astype(np.float64)
    assert s.shape == (6, 2023)
    np.testing.assert_allclose(s.mean(0), f.extra["sfid"].mu, rtol=1e-5, atol=1e-6)
    chw = s.reshape(6, 17, 17, 7).transpose(0, 3, 1, 2).reshape(6, -1)
    sample = tmp_path / "sample.npz"
    np.savez(sample, arr_0=imgs)
    fids = {}
    for name, feats in (("hwc", s), ("chw", chw)):
        ref = tmp_path / f"ref_{name}.npz"
        np.savez(ref, arr_0=_images(5, 1), mu=f.stats.mu, sigma=f.stats.sigma, mu_s=feats.mean(0),
                 sigma_s=np.cov(feats, rowvar=False))
        fids[name] = evaluate_adm(str(ref), str(sample), weights=weights, progress=False, device="cpu")["sfid"]
    assert fids["hwc"] < 1e-6 * fids["chw"]
    assert fids["chw"] > 1.0


def test_stored_statistics_are_preferred_over_arr_0(tmp_path, weights, one_thread):
    imgs = _images(6, 2)
    f = _pool_and_sfid(imgs, weights)
    sample, ref, plain = tmp_path / "s.npz", tmp_path / "r.npz", tmp_path / "plain.npz"
    np.savez(sample, arr_0=imgs)
    other = _images(5, 3)   # the reference's images differ from the samples; its stored statistics do not
    np.savez(ref, arr_0=other, mu=f.stats.mu, sigma=f.stats.sigma, mu_s=f.extra["sfid"].mu,
             sigma_s=f.extra["sfid"].sigma)
    np.savez(plain, arr_0=other)
    stored = evaluate_adm(str(ref), str(sample), weights=weights, progress=False, device="cpu")
    computed = evaluate_adm(str(plain), str(sample), weights=weights, progress=False, device="cpu")
    assert stored["fid"] < 1e-6 and stored["sfid"] < 1e-6
    assert computed["fid"] > 1e-3 and computed["sfid"] > 1e-3
    # precision and recall come from arr_0 either way
    assert (stored["precision-adm"], stored["recall-adm"]) == (computed["precision-adm"], computed["recall-adm"])
    assert stored.details["statistics"]["reference"].startswith("stored")
    assert list(stored.labels) == ["is-adm", "fid", "sfid", "precision-adm", "recall-adm"]
    assert stored.labels["is-adm"].startswith("Inception Score[inception:")   # stand-in weights are named


def _malformed(tmp_path):
    d = 2048
    good = dict(arr_0=_images(4, 0), mu=np.zeros(d), sigma=np.eye(d), mu_s=np.zeros(2023), sigma_s=np.eye(2023))
    cases = {
        "float_images": dict(good, arr_0=good["arr_0"].astype(np.float32)),
        "three_dims": dict(good, arr_0=good["arr_0"][..., 0]),
        "four_channels": dict(good, arr_0=np.zeros((4, 16, 16, 4), np.uint8)),
        "no_images": dict(good, arr_0=np.zeros((0, 16, 16, 3), np.uint8)),
        "stats_only": {k: v for k, v in good.items() if k != "arr_0"},
        "incomplete": {k: v for k, v in good.items() if k not in ("mu_s", "sigma_s")},
        "not_psd": dict(good, sigma=-np.eye(d)),
        "asymmetric": dict(good, sigma_s=np.eye(2023) + np.triu(np.ones((2023, 2023)), 1)),
        "nan_mu_s": dict(good, mu_s=np.full(2023, np.nan)),
        "wrong_dim": dict(good, mu=np.zeros(10), sigma=np.eye(10)),
    }
    paths = {}
    for name, arrays in cases.items():
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], **arrays)
    paths["not_a_zip"] = tmp_path / "not_a_zip.npz"
    paths["not_a_zip"].write_bytes(b"hello, not an archive")
    return paths


def test_each_malformed_adm_file_is_refused_naming_it(tmp_path):
    for name, path in _malformed(tmp_path).items():
        with pytest.raises(SourceError) as info:
            read_adm_batch(str(path))
        message = str(info.value)
        assert str(path) in message and "\n" not in message, name


def test_malformed_file_on_the_cli_is_one_line_exit_2(tmp_path, capsys):
    paths = _malformed(tmp_path)
    good = tmp_path / "good.npz"
    np.savez(good, arr_0=_images(5, 0))
    assert main(["eval", str(paths["float_images"]), str(good), "--suite", "adm", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("imgdist: error:") and "float_images.npz" in err[0]


def test_adm_batch_is_not_a_statistics_file(tmp_path):
    path = tmp_path / "ref.npz"
    np.savez(path, arr_0=_images(4, 0), mu=np.zeros(3), sigma=np.eye(3))
    assert not is_stats_file(str(path))
    stats_only = tmp_path / "stats.npz"
    np.savez(stats_only, mu=np.zeros(3), sigma=np.eye(3))
    assert is_stats_file(str(stats_only))
    with pytest.raises(SourceError, match="not an ADM batch"):
        read_adm_batch(str(stats_only))


def test_plain_eval_uses_the_images_of_an_adm_batch(tmp_path, weights, one_thread):
    from imgdist import evaluate
    from imgdist.errors import ImgdistWarning

    ref, sample = tmp_path / "ref.npz", tmp_path / "sample.npz"
    # stored statistics that would give a very different FD: they must not be used, and say so
    np.savez(ref, arr_0=_images(6, 4), mu=np.full(2048, 50.0), sigma=np.eye(2048), mu_s=np.zeros(2023),
             sigma_s=np.eye(2023))
    np.savez(sample, arr_0=_images(6, 4))
    with pytest.warns(ImgdistWarning, match="arr_0 images are used"):
        result = evaluate(str(ref), str(sample), metrics="fid,precision", backbone="inception", weights=weights,
                          device="cpu", progress=False)
    assert result["fid"] < 1e-6    # the same images on both sides
    assert result["precision"] == 1.0


def test_stats_format_adm_round_trips(tmp_path, weights, one_thread, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    imgs = _images(7, 5)
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(folder / f"{i}.png")
    ref = tmp_path / "ref.npz"
    assert main(["stats", str(folder), "--format", "adm", "-o", str(ref), "--adm-images", "5", "--seed", "3",
                 "--weights", weights, "--device", "cpu", "--no-progress"]) == 0
    batch = read_adm_batch(str(ref))
    assert batch.images.shape == (5, 16, 16, 3) and batch.stored is not None
    drawn = np.sort(np.random.default_rng(3).choice(7, size=5, replace=False))
    assert np.array_equal(np.asarray(batch.images), imgs[drawn])
    sample = tmp_path / "sample.npz"
    np.savez(sample, arr_0=imgs, arr_1=np.arange(7))
    capsys.readouterr()
    assert main(["eval", str(ref), str(sample), "--suite", "adm", "--weights", weights, "--device", "cpu",
                 "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = list(out["metrics"])
    assert [out["metrics"][n]["metric"] for n in names] == ["is-adm", "fid", "sfid", "precision-adm", "recall-adm"]
    by_key = {v["metric"]: v["value"] for v in out["metrics"].values()}
    # the stored statistics are the whole source's: the samples are that source
    assert by_key["fid"] < 1e-6 and by_key["sfid"] < 1e-6
    assert out["provenance"]["resize_mode"] == "tf"
    assert {"borderline_precision", "borderline_recall", "pr_exact"} <= set(out["details"])


def test_stats_format_adm_refuses_mixed_sizes(tmp_path, weights, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, size in enumerate((16, 16, 16, 16, 20)):
        Image.fromarray(_images(1, i, size)[0]).save(folder / f"{i}.png")
    assert main(["stats", str(folder), "--format", "adm", "-o", str(tmp_path / "r.npz"), "--weights", weights,
                 "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one size" in err[0]


# ------------------------------------------------------------------ through the catalogue

def test_sfid_is_a_catalogue_metric_for_any_image_pair(tmp_path, weights, one_thread):
    """``--metrics sfid`` on two folders: the Fréchet distance of the sFID maps, against scipy's
    float64 sqrtm on numpy's covariances of the same maps."""
    import scipy.linalg

    import imgdist

    real, fake = _images(9, 10), _images(8, 11)
    for name, imgs in (("real", real), ("fake", fake)):
        (tmp_path / name).mkdir()
        for i, im in enumerate(imgs):
            Image.fromarray(im).save(tmp_path / name / f"{i}.png")
    result = imgdist.evaluate(str(tmp_path / "real"), str(tmp_path / "fake"), metrics="sfid,fid",
                              backbone="inception", weights=weights, mode="tf", progress=False, device="cpu")
    maps = [_pool_and_sfid(x, weights).extra_features["sfid"].astype(np.float64) for x in (real, fake)]
    mu = [m.mean(0) for m in maps]
    cov = [np.cov(m, rowvar=False) for m in maps]
    root = scipy.linalg.sqrtm(cov[0] @ cov[1]).real
    expected = float(((mu[0] - mu[1]) ** 2).sum() + np.trace(cov[0] + cov[1] - 2 * root))
    assert result["sfid"] == pytest.approx(expected, rel=1e-6)
    assert result.labels["sfid"] == "sFD[inception:" + result.provenance.weights_sha256[:8] + "]"
    assert list(result.values) == ["fid", "sfid"]


def test_sfid_needs_a_backbone_with_the_maps(weights):
    import imgdist
    from imgdist.errors import ImgdistError

    with pytest.raises(ImgdistError, match="sfid: needs the sfid output, which efficientnet-lite0 does not have"):
        imgdist.evaluate(_images(5, 0), _images(5, 1), metrics="sfid", backbone="efficientnet-lite0", progress=False)
    with pytest.raises(ImgdistError, match="sfid: needs the sfid output, which efficientnet-lite0 does not have"):
        imgdist.Evaluator(backbone="efficientnet-lite0", metrics="sfid")


def test_streaming_evaluator_gives_sfid_and_adm_variants(weights):
    """The streaming Evaluator computes the backbone's extra outputs batch by batch: sFID and ADM's
    Inception Score equal evaluate()'s on the same images."""
    import imgdist

    real, fake = _images(9, 20), _images(8, 21)
    metrics = "sfid,is-adm,precision-adm"
    whole = imgdist.evaluate(real, fake, metrics=metrics, backbone="inception", weights=weights, mode="tf",
                             progress=False, device="cpu")
    ev = imgdist.Evaluator(backbone="inception", metrics=metrics, weights=weights, mode="tf", device="cpu")
    for part in (real[:4], real[4:]):
        ev.update(real=part)
    for part in (fake[:3], fake[3:]):
        ev.update(fake=part)
    streamed = ev.compute()
    assert streamed.values.keys() == whole.values.keys()
    for key, value in whole.values.items():
        assert streamed[key] == pytest.approx(value, rel=1e-6), key


def test_suite_refuses_flags_that_change_nothing(tmp_path, capsys):
    a = tmp_path / "a.npz"
    np.savez(a, arr_0=_images(5, 0))
    for extra in (["--pr-k", "5"], ["--metrics", "fid"], ["--report", ""]):
        assert main(["eval", str(a), str(a), "--suite", "adm", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "would change nothing in its table" in err[0] and extra[0] in err[0]


def test_a_run_with_sfid_says_it_goes_without_the_cache(tmp_path, weights, one_thread):
    import warnings

    from imgdist.errors import ImgdistWarning
    from imgdist.extraction.features import FeatureExtractor

    ext = FeatureExtractor("inception", weights=weights, mode="tf", device="cpu", progress=False,
                           cache=str(tmp_path / "cache"))
    (tmp_path / "imgs").mkdir()
    for i, im in enumerate(_images(4, 0)):
        Image.fromarray(im).save(tmp_path / "imgs" / f"{i}.png")
    for layers, told in ((("sfid",), True), ((), False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ext.extract(str(tmp_path / "imgs"), extra_layers=layers)
        said = [w for w in caught if issubclass(w.category, ImgdistWarning)
                and "feature cache is not used for sfid" in str(w.message)]
        assert bool(said) == told
