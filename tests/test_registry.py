"""The metric registry: one registration per metric, in the metric's own module, read by parsing,
checks, labels, the CLI and every route; and no metric name spelled out anywhere else."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import imgdist
from imgdist.evaluation import plan as P
from imgdist.evaluation.options import MetricOptions
from imgdist.metrics import registry as R
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
    def evaluate_distributed(*args, **kwargs):
        return imgdist.evaluate(*args, distributed=True, **kwargs)

    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    options = dict(metrics="all", kid_subset_size=10, is_splits=2, progress=False)
    one = imgdist.evaluate(real, fake, backbone=_backbone_of_kind(spec), **options)
    ranks = evaluate_distributed(real, fake, backbone=_backbone_of_kind(spec), **options)
    assert set(one.values) == set(ranks.values)
    expected = set(P.parse_metrics("all", P.Facts.of(spec)))
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


def test_every_registration_is_complete():
    settings = {s.name for s in R.settings()}
    for m in R.metrics():
        assert callable(m.compute), m.name
        assert m.help and m.label and m.paper, m.name
        assert set(m.setting_names) <= settings, m.name
        assert m.needs <= set(R.NEEDS), m.name
        assert m.module.startswith("imgdist."), m.name
    for group, names in R.groups().items():
        assert set(names) <= set(R.names()), group


def test_options_hold_every_setting_with_its_one_default():
    options = MetricOptions()
    assert all(getattr(options, s.name) == s.default for s in R.settings())
    with pytest.raises(imgdist.ImgdistError, match="unknown metric setting.*kid_subset\\b"):
        MetricOptions.from_keywords({"kid_subset": 3})
    assert options.replace(pr_k=7).pr_k == 7 and options.pr_k == 3
    with pytest.raises(imgdist.ImgdistError, match="pr_k \\(--pr-k\\) must be at least 1"):
        MetricOptions(pr_k=0)


def test_cli_flags_and_help_come_from_the_registrations():
    parser = build_parser()
    eval_parser = parser._subparsers._group_actions[0].choices["eval"]
    flags = {a.dest: a for a in eval_parser._actions}
    for s in R.settings():
        assert (s.name in flags) == s.cli, s.name
        if s.cli:
            assert flags[s.name].default == s.default and s.help in flags[s.name].help
    for name in R.names():
        assert name in flags["metrics"].help
    assert ",".join(R.default_metrics()) in flags["metrics"].help
    args = parser.parse_args(["eval", "a", "b", "--pr-k", "7", "--copies-percentile", "2.5"])
    assert (args.pr_k, args.copies_percentile) == (7, 2.5)


def test_building_the_cli_imports_every_metric_but_neither_torch_nor_scipy():
    # load() imports every metric module (the entry points' too) for --help; a heavy import at a
    # metric module's top would put a second or more on every command, --help included
    code = ("import sys\nfrom imgdist.cli import build_parser\nfrom imgdist.metrics import registry\n"
            "build_parser()\nprint(','.join(registry.names()))\n"
            "print(','.join(m for m in ('torch', 'scipy', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, heavy = out.split("\n")[:2]
    assert set(names.split(",")) == set(R.names()) and "lpips-diversity" in names.split(",")
    assert heavy == ""


def test_labels_and_directions_are_read_from_the_registrations():
    from imgdist.extraction.provenance import Provenance
    from imgdist.evaluation.results import Result, metric_label

    lite = Provenance(backbone="efficientnet-lite0", feature_layer="pool")
    for m in R.metrics():
        if m.published_on and m.published_on[0] == "*":  # a network of its own: no backbone in its name
            assert metric_label(m.name, lite) == m.label
            continue
        assert metric_label(m.name, lite) == f"{m.generic or m.label}[efficientnet-lite0]"
    published = Provenance(backbone="clip-vit-l14-336", resize_mode="cmmd", feature_layer="pool")
    assert metric_label("cmmd", published) == "CMMD" and metric_label("fid", published) == "FD[clip-vit-l14-336]"
    result = Result(values={"fid": 1.0, "precision": 0.5, "ct": 0.1}, labels={"fid": "FD", "precision": "p", "ct": "c"})
    metrics = result.to_dict()["metrics"]
    assert metrics["FD"]["better"] == "lower" and metrics["p"]["better"] == "higher" and "better" not in metrics["c"]


def test_parsed_once_selection_passes_through():
    chosen = P.parse_metrics("prdc,fid")
    assert isinstance(chosen, P.Selection) and chosen == ("fid", "precision", "recall", "density", "coverage")
    assert P.parse_metrics(chosen, P.Facts(has_logits=False)) is chosen
    assert P.request("all").resolve(P.Facts(features=False)) == ("fid",)
    assert P.request(None).names == frozenset(R.default_metrics())


def test_too_small_sets_are_a_typed_error():
    options = MetricOptions()
    with pytest.raises(imgdist.errors.SetTooSmall, match="pr_k \\(--pr-k\\) 3"):
        P.check_sets(("precision",), options, {"real": 3, "fake": 10})
    assert P.per_class_metrics(("fid", "precision", "ct"), options, {"real": 3, "fake": 10}) == ["fid"]


def test_a_second_owner_of_a_name_or_a_setting_is_refused():
    fid = R.get("fid")
    with pytest.raises(imgdist.ImgdistError, match="registered twice"):
        R.register(R.Metric("fid", "x", fid.compute, "X", module="somewhere.else"))
    with pytest.raises(imgdist.ImgdistError, match="the name fid-inf is taken by fid-inf"):
        R.register(R.Metric("other", "x", fid.compute, "X", aliases=("fid-inf",), module="somewhere.else"))
    with pytest.raises(imgdist.ImgdistError, match="setting pr_k is defined twice"):
        R.register(R.Metric("other2", "x", fid.compute, "X", settings=(R.Setting("pr_k", 4, "k"),),
                            module="somewhere.else"))
    assert "other" not in R.names() and "other2" not in R.names()


# ---------------------------------------------------------------- one home per metric

def _homonyms() -> set[str]:
    """Words of the extraction that happen to equal a metric's name: resize modes named after a
    protocol (CMMD's crop and resize), a backbone's outputs named after what reads them (sFID's
    maps), provenance fields (the network's arithmetic, ``precision``)."""
    import dataclasses

    from imgdist.extraction.provenance import Provenance

    words = {f.name for f in dataclasses.fields(Provenance)}
    for spec in list_specs():
        words |= set(spec.modes) | set(spec.extra_outputs)
    return words


def metric_name_literals(root) -> list[str]:
    """Every string literal outside its owner module that is a metric's name, result key, alias or
    group (``__all__`` lists name functions, the demo tells its story with them, and the
    extraction's homonyms are its own words)."""
    import ast
    from pathlib import Path

    owners = {key: m.module for m in R.metrics() for key in m.keys + m.aliases}
    owners.update({g: R.group_module(g) for g in R.groups()})
    homonyms = _homonyms()
    root = Path(root)
    found = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == "imgdist.demo":
            continue
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                for n in ast.walk(node.value)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in owners
                    and owners[node.value] != module and id(node) not in skip
                    and not (module.startswith("imgdist.extraction") and node.value in homonyms)):
                found.append(f"{module}:{node.lineno} {node.value!r}")
    return found


def test_no_metric_name_outside_its_own_module():
    assert metric_name_literals(Path(imgdist.__file__).parent) == []


def test_readme_metric_table_names_every_metric_and_its_paper():
    """README's metric table is checked against the registrations: a row for every metric, naming
    the first author of its paper (or saying it has none)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text.split("### `imgdist eval REAL FAKE`", 1)[1].split("\n\n| metric | definition |", 1)[1]
    rows = table.split("\n\n", 1)[0].splitlines()[1:]
    for m in R.metrics():
        row = next((r for r in rows if f"`{m.name}`" in r.split("|")[1]), None)
        assert row is not None, f"README's metric table has no row for {m.name}"
        author = m.paper.split()[0].rstrip(",")
        assert author == "none:" or author in row, f"{m.name}: the row does not name {author}"
