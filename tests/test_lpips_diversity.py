"""LPIPS diversity of a set: the pairs drawn, the mean, its interval, the decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import lpips_stand_in as S
from imgdist.errors import ImageError, ImgdistError
from imgdist.extraction.perceptual.diversity import bootstrap_mean_interval, draw_pairs, lpips_diversity
from imgdist.extraction.perceptual.lpips import LPIPS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    net = LPIPS("squeeze")
    net.load_state_dict({k: v for k, v in S.lpips_state_dict("squeeze").items() if not k.startswith("lins.")})
    net.label = "LPIPS[squeeze:stand-in]"
    return net.eval()


@pytest.fixture(scope="module")
def group():
    _, a, b, reference = next(p for p in S.parity_pairs() if p[0] == "64x64")
    return a, b, reference["lpips_squeeze"]


def test_draw_pairs():
    pairs = draw_pairs(10, 20, seed=3)
    assert pairs.shape == (20, 2) and np.all(pairs[:, 0] < pairs[:, 1]) and pairs.min() >= 0 and pairs.max() <= 9
    assert len({tuple(p) for p in pairs.tolist()}) == 20
    assert np.array_equal(pairs, draw_pairs(10, 20, seed=3))
    assert not np.array_equal(pairs, draw_pairs(10, 20, seed=4))
    every = draw_pairs(10, 45, seed=3)
    assert every.tolist() == [[i, j] for i in range(10) for j in range(i + 1, 10)]
    assert np.array_equal(draw_pairs(10, 1000), every) and draw_pairs(2, 1000).tolist() == [[0, 1]]


def test_draw_pairs_is_uniform():
    """Each of the 6 pairs of 4 images is one of 3 drawn in half of the seeds."""
    counts = np.zeros((4, 4))
    for seed in range(2000):
        for i, j in draw_pairs(4, 3, seed):
            counts[i, j] += 1
    shares = counts[np.triu_indices(4, 1)] / 2000
    assert np.all(np.abs(shares - 0.5) < 0.05), shares


def test_bootstrap_interval_matches_the_normal_one():
    values = np.random.default_rng(0).normal(3.0, 2.0, 4000)
    lo, hi = bootstrap_mean_interval(values, 2000, 0.95, seed=1)
    half = 1.959964 * values.std(ddof=1) / np.sqrt(len(values))
    assert lo == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_two_images_give_the_reference_value(model, group):
    """A set of two images has one pair: its value is the lpips package's for that pair."""
    a, b, reference = group
    for k in (0, 5, 10):
        result = lpips_diversity(np.stack([a[k], b[k]]), model, pairs=10)
        assert len(result.pairs) == 1 and result.decoded == 2
        assert result.value == pytest.approx(reference[k], rel=1e-5)
        assert result.interval == pytest.approx((result.value, result.value))
        assert result.label == "LPIPS[squeeze:stand-in]"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, group):
    _, b, _ = group
    root = tmp_path_factory.mktemp("set")
    for i, image in enumerate(b[:6]):
        Image.fromarray(image).save(root / f"{i}.png")
    return root, b[:6]


def _each(model, images, pairs) -> np.ndarray:
    """Every pair through the network on its own (the reference package's way)."""
    with torch.inference_mode():
        return np.array([model(model.to_input(torch.from_numpy(images[i][None]).permute(0, 3, 1, 2)),
                               model.to_input(torch.from_numpy(images[j][None]).permute(0, 3, 1, 2))).item()
                         for i, j in pairs])


def test_mean_over_pairs(model, folder):
    root, images = folder
    every = lpips_diversity(str(root), model, pairs=1000, workers=1)  # decoded by a decoding process
    assert len(every.pairs) == 15 and every.decoded == 6
    np.testing.assert_allclose(every.distances, _each(model, images, every.pairs), rtol=1e-5)
    assert every.value == pytest.approx(_each(model, images, every.pairs).mean(), rel=1e-5)
    lo, hi = every.interval
    assert lo < every.value < hi
    some = lpips_diversity(str(root), model, pairs=5, seed=7, batch_size=2)
    assert np.array_equal(some.pairs, draw_pairs(6, 5, 7))
    assert some.value == pytest.approx(_each(model, images, some.pairs).mean(), rel=1e-5)


def test_unreadable_and_mixed_sizes(model, folder, tmp_path):
    root, images = folder
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    (tmp_path / "9.png").write_text("not an image")
    with pytest.raises(ImageError, match="9.png"):
        lpips_diversity(str(tmp_path), model, pairs=1000)
    skipped = lpips_diversity(str(tmp_path), model, pairs=1000, on_error="skip")
    assert len(skipped.skipped) == 1 and len(skipped.pairs) == 15 and skipped.images == 7
    (tmp_path / "9.png").unlink()
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(tmp_path / "9.png")
    with pytest.raises(ImageError, match="LPIPS compares images of one size"):
        lpips_diversity(str(tmp_path), model, pairs=1000)
    with pytest.raises(ImgdistError, match="pairs of distinct images need at least 2"):
        lpips_diversity(images[:1], model)
    with pytest.raises(ImgdistError, match="lpips_pairs \\(--lpips-pairs\\) must be at least 1"):
        lpips_diversity(images, model, pairs=0)


def test_as_a_metric_of_score_and_eval(tmp_path, capsys):
    """``--metrics lpips-diversity`` in ``score`` and ``eval`` gives what the function gives, with
    the interval, labelled by its network and weights."""
    import json

    from imgdist.cli import main

    folder = tmp_path / "fakes"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    weights = tmp_path / "squeeze.pth"
    torch.save(S.lpips_state_dict("squeeze"), weights)
    expected = lpips_diversity(str(folder), "squeeze", weights=str(weights), pairs=20, seed=0, bootstrap=200)
    args = ["--metrics", "lpips-diversity", "--lpips-net", "squeeze", "--lpips-weights", str(weights),
            "--lpips-pairs", "20", "--bootstrap", "200", "--json", "--no-progress", "--no-cache", "--workers", "0"]
    assert main(["score", str(folder), *args]) == 0
    data = json.loads(capsys.readouterr().out)
    (label, item), = data["metrics"].items()
    assert label.startswith("LPIPS_diversity[net=squeeze,weights=") and item["better"] == "higher"
    assert item["value"] == pytest.approx(expected.value, rel=1e-12)
    assert item["ci"] == pytest.approx(list(expected.interval), rel=1e-12)
    assert main(["eval", str(folder), str(folder), *args[:-5], "--json", "--backbone", "pixels", "--no-progress",
                 "--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"][label]["value"] == pytest.approx(expected.value, rel=1e-12)


def test_the_runs_on_error_reaches_the_metric(tmp_path, capsys):
    """``--on-error skip`` skips an unreadable fake in the extraction and in the metric's own decode
    alike; with ``raise`` the run fails naming it."""
    import json

    from imgdist.cli import main

    folder = tmp_path / "fakes"
    folder.mkdir()
    rng = np.random.default_rng(6)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "8.png").write_text("not an image")
    weights = tmp_path / "squeeze.pth"
    torch.save(S.lpips_state_dict("squeeze"), weights)
    expected = lpips_diversity(str(folder), "squeeze", weights=str(weights), pairs=20, seed=0, bootstrap=200,
                               on_error="skip")
    args = ["score", str(folder), "--metrics", "lpips-diversity", "--lpips-net", "squeeze", "--lpips-weights",
            str(weights), "--lpips-pairs", "20", "--bootstrap", "200", "--json", "--no-progress", "--no-cache",
            "--workers", "0"]
    assert main([*args, "--on-error", "skip"]) == 0
    (item,) = json.loads(capsys.readouterr().out)["metrics"].values()
    assert len(expected.skipped) == 1 and item["value"] == pytest.approx(expected.value, rel=1e-12)
    assert main(args) == 2
    assert "8.png" in capsys.readouterr().err
