"""A metric is one file: README's "Adding a metric" example, dropped into a copy of the tree with no
other edit, works in every route; and another package adds a metric through the entry-point group
``imgdist.metrics``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgdist
from imgdist.metrics import registry

REPO = Path(__file__).resolve().parents[1]
SIZE = 4
PIX = ["--backbone", "pixels", "--resize-mode", "native", "--no-progress", "--no-cache", "--workers", "0"]


def readme_block() -> tuple[str, str]:
    """(path, code) of the first ```python block of README's "Adding a metric" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Adding a metric\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    first = code.splitlines()[0]
    assert first.startswith("# ") and first.endswith(".py"), first
    return first[2:].strip(), code


def _norm_gap(real: np.ndarray, fake: np.ndarray) -> float:
    """The README's definition, computed here from the features ``pixels`` gives at native size."""
    return abs(float(np.linalg.norm(fake, axis=1).mean() - np.linalg.norm(real, axis=1).mean()))


def _feats(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / np.float32(255)).transpose(0, 3, 1, 2).reshape(len(images), -1)


def _images(n, seed, level):
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(level + rng.normal(0, 40, (n, SIZE, SIZE, 3))), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of ``src/`` with the README's file dropped in, and two sets in class folders."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    path, code = readme_block()
    target = root / path
    assert not target.exists(), f"{path} is already in the tree"
    target.write_text(code)
    sets = {}
    for side, seed in (("real", 1), ("fake", 2)):
        sets[side] = {"a": _images(12, seed, 90), "b": _images(10, seed + 5, 160 + 20 * (side == "fake"))}
        for cls, images in sets[side].items():
            (root / side / cls).mkdir(parents=True)
            for i, img in enumerate(images):
                Image.fromarray(img).save(root / side / cls / f"{i:02d}.png")
    return {"root": root, "sets": sets}


def _run(tree, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(tree["root"] / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=tree["root"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _expected(tree, cls=None):
    sets = tree["sets"]
    pick = (lambda side: np.concatenate([sets[side][c] for c in ("a", "b")])) if cls is None else \
        (lambda side: sets[side][cls])
    return _norm_gap(_feats(pick("real")), _feats(pick("fake")))


def test_the_readme_metric_is_not_in_the_package():
    # the example must prove the drop-in, not describe a metric that ships
    assert "norm-gap" not in registry.names()


def test_help_lists_the_dropped_in_metric(tree):
    out = _run(tree, "-m", "imgdist", "eval", "--help").stdout
    assert "norm-gap" in " ".join(out.split())


def test_eval_table(tree):
    r = tree["root"]
    out = _run(tree, "-m", "imgdist", "eval", str(r / "real"), str(r / "fake"), "--metrics", "norm-gap", *PIX).stdout
    line = next(line for line in out.splitlines() if line.startswith("norm_gap[pixels]"))
    assert float(line.split()[1]) == pytest.approx(_expected(tree), rel=1e-5)  # the table rounds


def test_eval_json_and_per_class(tree):
    r = tree["root"]
    out = _run(tree, "-m", "imgdist", "eval", str(r / "real"), str(r / "fake"), "--metrics", "norm-gap,fid",
               "--per-class", "--bootstrap", "20", "--json", *PIX).stdout
    data = json.loads(out)
    item = data["metrics"]["norm_gap[pixels]"]
    assert item["value"] == pytest.approx(_expected(tree), rel=1e-6) and item["better"] == "lower"
    assert item["ci"][0] <= item["value"] <= item["ci"][1]  # its bootstrap hook gave an interval
    for cls in ("a", "b"):
        assert data["per_class"][cls]["norm_gap[pixels]"] == pytest.approx(_expected(tree, cls), rel=1e-6)


def test_python_routes(tree):
    """evaluate, evaluate_features (features and plain arrays) and the streaming Evaluator."""
    r = tree["root"]
    script = textwrap.dedent(f"""
        import json, numpy as np, imgdist
        from imgdist.extraction.sources import open_source
        pix = dict(backbone="pixels", mode="native", progress=False, workers=0)
        res = imgdist.evaluate({str(r / "real")!r}, {str(r / "fake")!r}, metrics="norm-gap", **pix)
        feats = {{side: imgdist.extract_features({str(r)!r} + "/" + side, "pixels", mode="native", progress=False,
                                                workers=0) for side in ("real", "fake")}}
        via_features = imgdist.evaluate_features(feats["real"], feats["fake"], metrics="norm-gap")
        via_arrays = imgdist.evaluate_features(feats["real"].features, feats["fake"].features, metrics="norm-gap")
        ev = imgdist.Evaluator("pixels", mode="native", metrics="norm-gap")
        for side in ("real", "fake"):
            src = open_source({str(r)!r} + "/" + side)
            images = np.stack([src.load(i) for i in range(len(src))])
            for part in np.array_split(images, [5, 6, 13]):  # uneven batches
                ev.update(**{{side: part}})
        out = {{"evaluate": res.values["norm-gap"], "features": via_features.values["norm-gap"],
               "arrays": via_arrays.values["norm-gap"], "arrays_label": via_arrays.labels["norm-gap"],
               "evaluator": ev.compute().values["norm-gap"]}}
        print(json.dumps(out))
    """)
    got = json.loads(_run(tree, "-c", script).stdout)
    expected = _expected(tree)
    for route in ("evaluate", "features", "arrays", "evaluator"):
        assert got[route] == pytest.approx(expected, rel=1e-6), route
    assert got["arrays_label"] == "norm_gap[user-features]"


def test_torchrun(tree):
    r = tree["root"]
    out = _run(tree, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "imgdist", "eval",
               str(r / "real"), str(r / "fake"), "--metrics", "norm-gap", "--batch-size", "8", "--json", *PIX).stdout
    data = json.loads(out)
    assert data["details"]["processes"] == 2
    assert data["metrics"]["norm_gap[pixels]"]["value"] == pytest.approx(_expected(tree), rel=1e-6)


# ---------------------------------------------------------------- another package's metric

PLUGIN = '''
"""A metric from another package: the absolute difference of the feature means' first entries."""
import numpy as np
from imgdist.metrics.registry import FEATURES, Metric, Setting

METRIC = Metric(name="first-mean-gap", help="|mean fake[:, j] - mean real[:, j]| of column j",
                compute=lambda run: abs(float(run.xf[:, run.options.gap_column].mean()
                                              - run.xr[:, run.options.gap_column].mean())),
                label="first_mean_gap", lower_is_better=True, needs={FEATURES}, paper="a test plugin",
                settings=(Setting("gap_column", 0, "first-mean-gap: the feature column"),))
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """A tiny package, installed with pip into its own folder, that adds a metric through the
    entry-point group (and a second entry point that fails to load)."""
    root = tmp_path_factory.mktemp("entry_point")
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "imgdist_gap_plugin.py").write_text(PLUGIN)
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=70.1"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "imgdist-gap-plugin"
        version = "0.1"
        [project.entry-points."imgdist.metrics"]
        gap = "imgdist_gap_plugin:METRIC"
        broken = "imgdist_gap_plugin_missing"
        [tool.setuptools]
        py-modules = ["imgdist_gap_plugin"]
    """))
    site = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(pkg)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return site


def test_entry_point_plugin(installed_plugin):
    env = dict(os.environ, PYTHONPATH=str(installed_plugin))
    script = textwrap.dedent("""
        import json, warnings
        import numpy as np
        import imgdist
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rng = np.random.default_rng(0)
            real, fake = rng.normal(size=(30, 4)), rng.normal(size=(25, 4)) + 0.5
            res = imgdist.evaluate_features(real, fake, metrics="first-mean-gap", gap_column=2)
            real, fake = real.astype(np.float32), fake.astype(np.float32)  # user features are kept as float32
        print(json.dumps({"value": res.values["first-mean-gap"], "expected": abs(float(fake[:, 2].mean() - real[:, 2].mean())),
                          "warnings": [str(w.message) for w in caught]}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["value"] == pytest.approx(got["expected"], rel=1e-12)
    assert any("metric plugin broken" in w and "left out" in w for w in got["warnings"])
    helped = subprocess.run([sys.executable, "-m", "imgdist", "eval", "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert "first-mean-gap" in " ".join(helped.stdout.split()) and "--gap-column" in helped.stdout
