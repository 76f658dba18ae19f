"""The metric tester: every registered metric, through every route, equals its pure function.

The pattern of torchmetrics' MetricTester, over imgdist's routes. One small set of images (4 x 4
pixels) goes through a network whose outputs are exact elementwise functions of the pixels (so
that every route, whatever its batches, sees bit-identical features): the pool features are the
pixels / 255, the logits and the extra outputs (sFID's maps, ADM's unbiased logits) fixed
multiples of them. Each route's value is compared with the metric's registered pure function
(``Metric.function``) on those features: exactly for counts, to 1e-12 relative for sums (the
Fréchet distances, whose statistics each route sums in its own order, to 1e-9).

Routes: ``evaluate_features`` on plain arrays, ``evaluate`` on image folders, the streaming
``Evaluator`` fed uneven batches, ``evaluate(distributed=True)`` on two gloo ranks, and
``--per-class`` with one class. A metric added later joins by being registered.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import imgdist
from imgdist.evaluation.options import MetricOptions
from imgdist.extraction.backbones.base import Backbone, BackboneSpec
from imgdist.extraction.preprocess import Preprocessing
from imgdist.metrics import registry as R

pytestmark = pytest.mark.usefixtures("one_thread")

# 170 real and fake images: TopP&R needs at least 161 per set
SIZE, N_REAL, N_FAKE, N_TEST, CLASSES = 4, 170, 170, 24, 10
D = 3 * SIZE * SIZE
#: settings that fit these small sets (what every route is given)
SETTINGS = dict(kid_subsets=5, kid_subset_size=10, is_splits=2, ct_cells=2, fwd_level=2)
#: the Fréchet distances: statistics summed in another order per route
FRECHET_RTOL = 1e-9


class ExactText(torch.nn.Module):
    """A text tower whose embedding of a prompt is an exact function of its characters: ids are
    the characters' codes (77 at most, the rest 0), the embedding the first D ids / 10."""

    cfg = SimpleNamespace(embed_dim=D)

    def tokenizer(self, prompts):
        from imgdist.extraction.tokenizer import Tokens

        ids = np.zeros((len(prompts), 77), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            codes = [1 + ord(c) % 200 for c in prompt][:77]
            ids[row, :len(codes)] = codes
        return Tokens(ids, np.array([len(p) > 77 for p in prompts]))

    def forward(self, ids):
        return ids[:, :D].float() / 10.0


class ExactNet(Backbone):
    """Features that are exact elementwise functions of the pixels, whatever the batch."""

    text_tower = None  # set per instance (a module attribute would register it as a submodule)

    def forward(self, x, outputs=("pool",)):
        pool = x.flatten(1)
        out = {"pool": pool, "logits": 3.0 * pool[:, :CLASSES], "sfid": 2.0 * pool,
               "logits_unbiased": 5.0 * pool[:, :CLASSES]}
        return {name: out[name] for name in outputs}


SPEC = BackboneSpec(name="exact-test-net", feature_dim=D, input_size=None,
                    modes={"native": Preprocessing("native", None, "none", mean=0.0, std=255.0)},
                    default_mode="native", build=lambda path=None: None, num_classes=CLASSES,
                    extra_outputs={"sfid": D, "logits_unbiased": CLASSES}, text=lambda path: ExactText())


def exact_net() -> ExactNet:
    net = ExactNet()
    net.spec = SPEC
    object.__setattr__(net, "text_tower", ExactText())
    return net.eval()


def _prompts(n: int) -> list[str]:
    """One prompt per fake; one longer than 77 characters (truncated)."""
    return [f"image {i} " + "ab" * (i % 5) + ("x" * 90 if i == 4 else "") for i in range(n)]


def _routed_metrics() -> list[R.Metric]:
    return [m for m in R.metrics() if m.function is not None]


def _asked(metric: R.Metric) -> str:
    """How the routes name a metric: on the test network, or on its own space where the network
    lacks what it reads (FWD's wavelet packets: ``fwd@wavelets``)."""
    return metric.name if set(metric.outputs) <= set(SPEC.extra_outputs) else f"{metric.name}@{metric.space[0]}"


def _streams(metric: R.Metric) -> bool:
    """Whether the streaming Evaluator takes it (it has one network: not a metric of another space)."""
    return "@" not in _asked(metric)


def _images(n, seed, level):
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(level + rng.normal(0, 45, (n, SIZE, SIZE, 3))), 0, 255).astype(np.uint8)


def _write(folder, images):
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    images = {"real": _images(N_REAL, 1, 110), "fake": _images(N_FAKE, 2, 135), "test": _images(N_TEST, 3, 110)}
    images["fake"][:2] = images["real"][[3, 7]]  # two copies, so that copies and authenticity count something
    for side, imgs in images.items():
        _write(root / side / "only", imgs)   # one class subfolder: the per-class route
    (root / "prompts.txt").write_text("\n".join(_prompts(N_FAKE)) + "\n")  # one per line, in the fakes' order
    return root, images


def _sets(images) -> SimpleNamespace:
    ex = imgdist.FeatureExtractor(exact_net(), progress=False)
    out = {side: ex.embed_outputs(images[side], logits=True, extra=("sfid", "logits_unbiased"))
           for side in ("real", "fake", "test")}
    from imgdist.extraction.wavelets import haar_packets

    def packets(x):  # FWD's Gaussians computed here: Haar packets of x / 255, numpy's mean and covariance
        coefficients = haar_packets(torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255.0, SETTINGS["fwd_level"])
        c = coefficients.numpy()
        return c.mean(axis=0), np.stack([np.cov(c[:, p], rowvar=False) for p in range(c.shape[1])])

    return SimpleNamespace(real=out["real"]["features"], fake=out["fake"]["features"],
                           packets={side: packets(images[side]) for side in ("real", "fake")},
                           fake_logits=out["fake"]["logits"], real_test=out["test"]["features"],
                           extra={name: (out["real"][name], out["fake"][name]) for name in ("sfid", "logits_unbiased")},
                           fake_prompts=_prompts(N_FAKE),
                           fake_text=ExactText()(torch.from_numpy(ExactText().tokenizer(_prompts(N_FAKE)).ids)).numpy())


def _expected(metric: R.Metric, sets) -> dict:
    """The metric's own values (a function may give those of the metrics sharing its pass too),
    under the keys the routes give them (``fwd@wavelets``)."""
    out = metric.function(sets, MetricOptions(**SETTINGS))
    out = out if isinstance(out, dict) else {metric.name: out}
    suffix = _asked(metric)[len(metric.name):]
    return {key + suffix: out[key] for key in metric.keys}


def _check(metric: R.Metric, got: dict, expected: dict, route: str) -> None:
    for key, value in expected.items():
        assert key in got, f"{route}: {metric.name} gave no {key}"
        if isinstance(value, (int, np.integer)):
            assert got[key] == value, f"{route}: {key} {got[key]} != {value}"
        else:
            rtol = FRECHET_RTOL if metric.gaussian or metric.covariance and metric.outputs else 1e-12
            assert got[key] == pytest.approx(value, rel=rtol, abs=1e-15), f"{route}: {key}"


# ---------------------------------------------------------------- the routes

@pytest.fixture(scope="module")
def routes(data, tmp_path_factory):
    root, images = data
    names = ",".join(_asked(m) for m in _routed_metrics())
    streamed = ",".join(_asked(m) for m in _routed_metrics() if _streams(m))
    sets = _sets(images)
    got = {}
    with _quiet():
        got["evaluate"] = imgdist.evaluate(root / "real", root / "fake", real_test=root / "test", metrics=names,
                                           backbone=exact_net(), progress=False, workers=0,
                                           prompts=root / "prompts.txt", **SETTINGS).values
        ev = imgdist.Evaluator(exact_net(), metrics=streamed, **SETTINGS)
        prompts = _prompts(N_FAKE)
        for side, key in (("real", "real"), ("fake", "fake"), ("test", "real_test")):
            at = 0
            for part in np.split(images[side], [7, 8, 19]):  # uneven batches, one of a single image
                ev.update(**{key: part}, **({"prompts": prompts[at:at + len(part)]} if side == "fake" else {}))
                at += len(part)
        # a checkpoint: tensors and plain values only, restored into a new evaluator
        state_path = tmp_path_factory.mktemp("state") / "ev.pt"
        torch.save(ev.state_dict(), state_path)
        restored = imgdist.Evaluator(exact_net(), metrics=streamed, **SETTINGS)
        restored.load_state_dict(torch.load(state_path, weights_only=True))
        got["Evaluator"] = ev.compute().values
        got["Evaluator, restored"] = restored.compute().values
        per_class = imgdist.evaluate(root / "real", root / "fake", real_test=root / "test",
                                     metrics=",".join(m.name for m in _routed_metrics() if m.per_class),
                                     backbone=exact_net(), progress=False, workers=0, per_class=True,
                                     prompts=root / "prompts.txt", **SETTINGS)
        got["per-class"] = per_class.per_class["only"].values
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank, args=(2, str(out / "init"), str(root), names, str(out)), nprocs=2, join=True)
    for rank in range(2):
        got[f"torchrun rank {rank}"] = json.loads((out / f"rank{rank}.json").read_text())
    return got, sets


class _quiet:
    """The small sets give singular-covariance warnings; they are not what this test is about."""

    def __enter__(self):
        import warnings

        self.ctx = warnings.catch_warnings()
        self.ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)


def _rank(rank, world, init, root, names, out):
    import warnings

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        result = imgdist.evaluate(os.path.join(root, "real"), os.path.join(root, "fake"),
                                  real_test=os.path.join(root, "test"), metrics=names, backbone=exact_net(),
                                  progress=False, workers=0, batch_size=8, distributed=True,
                                  prompts=os.path.join(root, "prompts.txt"), **SETTINGS)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump(result.values, fh)
    finally:
        dist.destroy_process_group()


def test_every_registered_metric_has_a_pure_function():
    """Every metric but those that run a network of their own on the images (LPIPS diversity, whose
    routes tests/test_lpips_diversity.py checks against its function) is compared here."""
    missing = [m.name for m in R.metrics() if m.function is None and R.IMAGES not in m.needs]
    assert not missing, f"register a function= for {missing}: the tester compares every route with it"


def test_the_wavelet_space_refuses_the_streaming_evaluator():
    with pytest.raises(imgdist.ImgdistError, match="fwd: needs the packets output"):
        imgdist.Evaluator(exact_net(), metrics="fwd")


@pytest.mark.parametrize("name", [m.name for m in _routed_metrics()])
def test_evaluate_features_on_arrays(name, data):
    """Plain arrays in (user features), and Features that carry logits and extra outputs."""
    _, images = data
    sets = _sets(images)
    metric = R.get(name)
    expected = _expected(metric, sets)
    if "@" in _asked(metric):  # another space: its statistics as that space's extraction gives them
        from imgdist.extraction.wavelet_space import WaveletExtractor

        root, _ = data
        ex = WaveletExtractor(level=SETTINGS["fwd_level"], progress=False, workers=0)
        real, fake = (ex.extract(str(root / side), keep_features=False) for side in ("real", "fake"))
        got = {k + _asked(metric)[len(metric.name):]: v
               for k, v in imgdist.evaluate_features(real, fake, metrics=name, **SETTINGS).values.items()}
    elif metric.needs & {R.LOGITS, R.PROMPTS} or metric.outputs:
        real, fake = (imgdist.Features.from_array(x) for x in (sets.real, sets.fake))
        fake.logits = sets.fake_logits
        fake.prompts, fake.text = sets.fake_prompts, sets.fake_text
        fake.prompts_truncated = np.array([len(p) > 77 for p in sets.fake_prompts])
        for output, rows in sets.extra.items():
            for feats, part in ((real, rows[0]), (fake, rows[1])):
                feats.extra[output] = imgdist.GaussianStats().update(part)
                feats.extra_features[output] = part
        got = imgdist.evaluate_features(real, fake, metrics=name, **SETTINGS).values
    else:
        with _quiet():
            got = imgdist.evaluate_features(sets.real, sets.fake, metrics=name, real_test=sets.real_test,
                                            **SETTINGS).values
    _check(metric, got, expected, "evaluate_features")


@pytest.mark.parametrize("name", [m.name for m in _routed_metrics()])
def test_routes(name, routes):
    got, sets = routes
    metric = R.get(name)
    expected = _expected(metric, sets)
    for route, values in got.items():
        if (route == "per-class" and not metric.per_class) or (route.startswith("Evaluator") and not _streams(metric)):
            assert not set(expected) & set(values)
            continue
        _check(metric, values, expected, route)
