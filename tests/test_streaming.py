"""The streaming Evaluator as a training-loop metric: its state is a checkpoint of tensors and plain
values, read back only after checks (it is untrusted input), and every metric works in it or is
refused when it is built."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import imgdist
from imgdist.errors import ImgdistError

PIX = dict(backbone="pixels", mode="native")


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)


@pytest.fixture
def fed():
    ev = imgdist.Evaluator(**PIX, metrics="fid,kid,precision", kid_subset_size=5, kid_subsets=3)
    ev.update(real=_images(20, 0))
    ev.update(fake=_images(9, 1))
    ev.update(fake=_images(8, 2))
    return ev


def test_state_round_trip_through_a_checkpoint_file(fed, tmp_path):
    path = tmp_path / "ev.pt"
    torch.save({"evaluator": fed.state_dict()}, path)
    again = imgdist.Evaluator(**PIX, metrics="fid,kid,precision", kid_subset_size=5, kid_subsets=3)
    again.load_state_dict(torch.load(path, weights_only=True)["evaluator"])
    assert again.compute().values == fed.compute().values
    # and it goes on streaming from there
    for ev in (fed, again):
        ev.update(fake=_images(4, 3))
    assert again.compute().values == fed.compute().values
    assert fed.to("cpu") is fed


def _tampered(state, side, key, value):
    import copy

    state = copy.deepcopy(state)
    state[side]["stats" if key in ("n", "mean", "scatter") else key] = value if key not in ("n", "mean", "scatter") \
        else {**state[side]["stats"], key: value}
    return state


def _indefinite(scatter):
    """Symmetric with a positive diagonal, and not positive semi-definite: v [[1, 2], [2, 1]] on
    the first two axes has eigenvalues 3v and -v."""
    out = torch.eye(len(scatter), dtype=torch.float64) * scatter.diagonal().max()
    out[0, 1] = out[1, 0] = 2 * out[0, 0]
    return out


@pytest.mark.parametrize("change,message", [
    (lambda s: {**s, "version": 99}, "not an imgdist Evaluator state of version 1"),
    (lambda s: {**s, "metrics": ["fid"]}, "made for metrics \\['fid'\\]"),
    (lambda s: {**s, "provenance": {**s["provenance"], "backbone": "inception"}}, "produced differently"),
    (lambda s: _tampered(s, "fake", "n", -3), "image count n >= 0"),
    (lambda s: _tampered(s, "fake", "mean", torch.full((48,), float("nan"), dtype=torch.float64)), "NaN or infinity"),
    (lambda s: _tampered(s, "real", "scatter", torch.triu(s["real"]["stats"]["scatter"])),
     "not symmetric positive semi-definite"),
    (lambda s: _tampered(s, "fake", "scatter", _indefinite(s["fake"]["stats"]["scatter"])),
     "Evaluator state \\(fake\\): the scatter matrix .* is not positive semi-definite \\(smallest eigenvalue -"),
    (lambda s: _tampered(s, "fake", "features", s["fake"]["features"][:5]), "rows for 17 images"),
    (lambda s: _tampered(s, "fake", "prompts", ["a"]), "one string per image"),
])
def test_a_tampered_state_is_refused_and_changes_nothing(fed, change, message):
    before = fed.compute().values
    with pytest.raises(ImgdistError, match=message) as info:
        fed.load_state_dict(change(fed.state_dict()))
    assert "\n" not in str(info.value)
    assert fed.compute().values == before


def test_every_metric_works_or_is_refused_at_construction():
    with pytest.raises(ImgdistError, match="sfid: needs the sfid output, which pixels does not have"):
        imgdist.Evaluator(**PIX, metrics="sfid")
    with pytest.raises(ImgdistError, match="kid.*need\\(s\\) images, but real is a statistics file"):
        imgdist.Evaluator(**PIX, metrics="kid", real_stats=imgdist.GaussianStats().update(np.ones((3, 48))))
    ct = imgdist.Evaluator(**PIX, metrics="ct", ct_cells=1)  # C_T takes its held-out images by update()
    ct.update(real=_images(25, 0), fake=_images(25, 1))
    with pytest.raises(ImgdistError, match="update\\(real_test=...\\) first"):
        ct.compute()
    ct.update(real_test=_images(25, 2))
    assert np.isfinite(ct.compute()["ct"])


def test_compute_leaves_the_state_and_reset_fake_keeps_the_reals(fed):
    first = fed.compute().values
    assert fed.compute().values == first
    fed.reset_fake()
    with pytest.raises(ImgdistError, match="a set is empty"):
        fed.compute()
    fed.update(fake=_images(17, 9))
    assert fed.compute().values != first
