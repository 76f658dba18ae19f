"""The metric catalogue: one entry per metric, read by parsing, checks, labels, the CLI and torchrun."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import imgdist
from imgdist.evaluation import catalogue as C
from imgdist.extraction.backbones import list_specs
from imgdist.extraction.backbones.custom import custom_backbone
from imgdist.cli import build_parser


class _Tiny(nn.Module):
    """A fixed random projection of the pooled image, with logits where the kind has a classifier."""

    def __init__(self, classes: int, extra: dict):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(3 * 16, 12, generator=g), requires_grad=False)
        self.head = nn.Parameter(torch.randn(12, max(classes, 1), generator=g), requires_grad=False)
        self.extra = {name: nn.Parameter(torch.randn(3 * 16, size, generator=g), requires_grad=False)
                      for name, size in extra.items()}
        self.classes = classes

    def forward(self, x):
        pooled = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        feats = pooled @ self.proj
        out = {"pool": feats, **{name: pooled @ w for name, w in self.extra.items()}}
        if self.classes:
            out["logits"] = feats @ self.head
        return out


def _backbone_of_kind(spec):
    """A tiny network standing in for ``spec``: same name, classifier and extra outputs (smaller),
    16 px input."""
    extra = {name: 5 + i for i, name in enumerate(spec.extra_outputs)}
    bb = custom_backbone(_Tiny(spec.num_classes, extra), input_size=16, name=spec.name)
    bb.spec = dataclasses.replace(bb.spec, name=spec.name, num_classes=spec.num_classes, extra_outputs=extra)
    return bb


def _kinds():
    """One registered backbone of each kind: extra outputs (Inception: sFID's maps), a classifier,
    no classifier, CLIP."""
    specs = list_specs()
    pick = {"extra outputs": next(s for s in specs if s.extra_outputs),
            "classifier": next(s for s in specs if s.has_logits and not s.extra_outputs),
            "no classifier": next(s for s in specs if not s.has_logits and not s.name.startswith("clip-")),
            "clip": next(s for s in specs if s.name.startswith("clip-"))}
    return list(pick.items())


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("kind,spec", _kinds(), ids=[k for k, _ in _kinds()])
def test_all_is_the_same_set_in_one_process_and_under_torchrun(kind, spec, one_rank_group):
    from imgdist.distributed import evaluate_distributed

    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    options = dict(metrics="all", kid_subset_size=10, is_splits=2, progress=False)
    one = imgdist.evaluate(real, fake, backbone=_backbone_of_kind(spec), **options)
    ranks = evaluate_distributed(real, fake, backbone=_backbone_of_kind(spec), **options)
    assert set(one.values) == set(ranks.values)
    expected = set(C.parse_metrics("all", C.Facts.of(spec)))
    assert expected <= set(one.values)
    assert ("cmmd" in one.values) == (kind == "clip")
    assert ("is" in one.values) == (kind in ("classifier", "extra outputs"))
    assert ("sfid" in one.values) == (kind == "extra outputs")
    if kind == "extra outputs":  # the extra outputs travel through torchrun's gathers too
        assert ranks["sfid"] == pytest.approx(one["sfid"], rel=1e-9)
        assert "is-adm" not in one.values  # ADM's variants come with --suite adm, not with 'all'
        extra = dict(options, metrics="sfid,is-adm,precision-adm")
        one = imgdist.evaluate(real, fake, backbone=_backbone_of_kind(spec), **extra)
        ranks = evaluate_distributed(real, fake, backbone=_backbone_of_kind(spec), **extra)
        assert one.values == pytest.approx(ranks.values, rel=1e-9)


def test_every_entry_is_complete():
    for m in C.CATALOGUE:
        assert callable(m.compute), m.name
        assert m.help and m.label, m.name
        assert set(m.settings) <= set(C.SETTING), m.name
        assert m.needs <= {C.FEATURES, C.LOGITS, C.REAL_TEST, C.CLIP}, m.name
    for group, names in C.GROUPS.items():
        assert set(names) <= set(C.METRIC), group


def test_options_and_settings_are_one_table():
    assert [f.name for f in dataclasses.fields(C.MetricOptions)] == [s.name for s in C.SETTINGS]
    assert all(getattr(C.MetricOptions(), s.name) == s.default for s in C.SETTINGS)
    with pytest.raises(imgdist.ImgdistError, match="unknown metric setting.*kid_subset\\b"):
        C.MetricOptions.from_keywords({"kid_subset": 3})


def test_cli_flags_and_help_come_from_the_catalogue():
    parser = build_parser()
    eval_parser = parser._subparsers._group_actions[0].choices["eval"]
    flags = {a.dest: a for a in eval_parser._actions}
    for s in C.SETTINGS:
        assert (s.name in flags) == s.cli, s.name
        if s.cli:
            assert flags[s.name].default == s.default and s.help in flags[s.name].help
    for name in C.METRICS:
        assert name in flags["metrics"].help
    args = parser.parse_args(["eval", "a", "b", "--pr-k", "7", "--copies-percentile", "2.5"])
    assert (args.pr_k, args.copies_percentile) == (7, 2.5)


def test_labels_and_directions_are_read_from_the_entries():
    from imgdist.extraction.provenance import Provenance
    from imgdist.evaluation.results import Result, metric_label

    lite = Provenance(backbone="efficientnet-lite0", feature_layer="pool")
    for m in C.CATALOGUE:
        label = metric_label(m.name, lite)
        assert label == f"{m.generic or m.label}[efficientnet-lite0]"
    result = Result(values={"fid": 1.0, "precision": 0.5, "ct": 0.1}, labels={"fid": "FD", "precision": "p", "ct": "c"})
    metrics = result.to_dict()["metrics"]
    assert metrics["FD"]["better"] == "lower" and metrics["p"]["better"] == "higher" and "better" not in metrics["c"]


def test_parsed_once_selection_passes_through():
    chosen = C.parse_metrics("prdc,fid")
    assert isinstance(chosen, C.Selection) and chosen == ("fid", "precision", "recall", "density", "coverage")
    assert C.parse_metrics(chosen, C.Facts(has_logits=False)) is chosen
    assert C.request("all").resolve(C.Facts(features=False)) == ("fid",)


def test_too_small_sets_are_a_typed_error():
    options = C.MetricOptions()
    with pytest.raises(imgdist.errors.SetTooSmall, match="pr_k \\(--pr-k\\) 3"):
        options.check_sets(("precision",), {"real": 3, "fake": 10})
    assert C.per_class_metrics(("fid", "precision", "ct"), options, 3, 10) == ["fid"]
