"""``imgdist demo`` runs on the runtime dependencies alone and its numbers say what it prints.

The main run is the installed ``imgdist`` command in a subprocess where scikit-image, scikit-learn
and matplotlib cannot be imported (a meta-path blocker loaded through ``sitecustomize``), offline,
with an empty cache folder. Its numbers are checked against recomputations from the files it
wrote (numpy on the PNGs, and the ``imgdist`` commands it prints), and for the direction of each
contrast it puts into words.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from imgdist.cli import main
from needs import require_module

BLOCKED = ("skimage", "sklearn", "matplotlib")

_BLOCKER = textwrap.dedent('''
    import os, sys

    BLOCKED = {blocked!r}
    LOG = os.environ.get("DEMO_TEST_IMPORT_LOG")


    class _Blocker:
        """Any import of a blocked package fails, as if it were not installed (and is logged)."""

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                if LOG:
                    with open(LOG, "a") as fh:
                        fh.write(name + "\\n")
                raise ImportError(f"No module named {{name!r}} (blocked by the test)")
            return None


    sys.meta_path.insert(0, _Blocker())
''').format(blocked=BLOCKED)


def _imgdist_command() -> list[str]:
    script = shutil.which("imgdist", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "imgdist"]


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocked")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(_BLOCKER)
    env = dict(os.environ)
    # the blocker first; then whatever PYTHONPATH names (a checkout's src/ run without installing it
    # must be the imgdist the subprocess imports, not an installed copy)
    path = os.pathsep.join([str(root / "site")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(PYTHONPATH=path, IMGDIST_OFFLINE="1", IMGDIST_CACHE=str(root / "cache"),
               # one thread: on a busy 2-core machine two threads per process run several times slower
               OMP_NUM_THREADS="1")
    return env, root


@pytest.fixture(scope="module")
def demo_run(blocked_env):
    """``imgdist demo --out DIR`` without the blocked packages: (stdout, DIR, numbers, import log)."""
    env, root = blocked_env
    out, log = root / "out", root / "demo_imports.log"
    proc = subprocess.run(_imgdist_command() + ["demo", "--out", str(out), "--no-progress", "--device", "cpu"],
                          env=dict(env, DEMO_TEST_IMPORT_LOG=str(log)), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    attempted = set(log.read_text().split()) if log.exists() else set()
    numbers = json.loads((out / "demo.json").read_text())
    return proc.stdout, out, numbers, attempted


def test_subprocess_imports_this_imgdist(blocked_env):
    import imgdist

    env, _ = blocked_env
    proc = subprocess.run([sys.executable, "-c", "import imgdist; print(imgdist.__file__)"], env=env,
                          capture_output=True, text=True)
    assert proc.stdout.strip() == imgdist.__file__, proc.stderr


def test_blocker_works(blocked_env):
    env, _ = blocked_env
    for name in BLOCKED:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert proc.returncode != 0 and "blocked by the test" in proc.stderr, name


def test_runtime_dependencies_only(demo_run):
    stdout, _, _, attempted = demo_run
    # matplotlib is tried (the plot is optional) and the run goes on without it; nothing else is
    assert {a.split(".")[0] for a in attempted} <= {"matplotlib"}
    assert "matplotlib is not installed" in stdout


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int64)


def test_lecture_example(demo_run):
    stdout, out, numbers, _ = demo_run
    a, b = _png(out / "lecture" / "a.png"), _png(out / "lecture" / "b.png")
    assert a.size == 6 and np.all(np.abs(a - b) == 150)
    assert np.abs(a - b).sum() == 900
    assert numbers["lecture"]["sum_abs_diff"] == 900
    assert numbers["lecture"]["identical_sum_abs_diff"] == 0
    assert "sum of absolute differences, A vs B: 900 " in stdout
    assert "A vs A (identical):" in stdout and stdout.split("A vs A (identical):")[1].split()[0] == "0"


def test_pair_contrast(demo_run):
    stdout, out, numbers, _ = demo_run
    rob = numbers["robustness"]
    ratio = {p: {m: v["ratio"] for m, v in d.items()} for p, d in rob["perturbations"].items()}
    # the written copies are the ones measured: recompute two distances from the files
    photo = _png(out / "pair" / "chelsea.png")
    shifted = _png(out / "pair" / "chelsea_shift1.png")
    other = _png(out / "pair" / "coffee.png")
    assert np.array_equal(shifted[:, 1:], photo[:, :-1]) and np.array_equal(shifted[:, 0], photo[:, 0])
    assert rob["perturbations"]["shift1"]["sum_abs_diff"]["distance"] == np.abs(photo - shifted).sum()
    assert rob["reference"]["sum_abs_diff"] == np.abs(photo - other).sum()
    # the lecture's point: the shift barely moves feature_cosine, unlike pixel L1 and feature_l2 ...
    assert ratio["shift1"]["feature_cosine"] < ratio["shift1"]["sum_abs_diff"] / 5
    assert ratio["shift1"]["feature_cosine"] < ratio["shift1"]["feature_l2"] / 3
    # ... while noise and blur move it far more than the shift does
    assert ratio["noise20"]["feature_cosine"] > 5 * ratio["shift1"]["feature_cosine"]
    assert ratio["blur4"]["feature_cosine"] > 5 * ratio["shift1"]["feature_cosine"]
    reading = " ".join(numbers["pair_reading"].split())
    assert "in feature_cosine, the distance that moves least" in reading
    assert "feature_l2 moves" in reading and "not the robust one" in reading
    assert "feature_cosine reacts strongly" in reading
    assert reading.split()[:3] == " ".join(stdout.split("Read: ")[1].split()).split()[:3]
    # offline, with an empty cache: no LPIPS column, and one line that says why
    note = "lpips: not shown, no LPIPS[alex] weights here (the demo never downloads; --lpips-weights PATH)"
    assert "   " + note in stdout.splitlines() and numbers["lpips"] == {"note": note}
    assert "lpips" not in rob["reference"]


def test_readme_intro_numbers_are_the_demos(demo_run):
    # the README opens with a robustness table on the demo's two photos: it must be what runs today
    from pathlib import Path

    stdout, _, numbers, _ = demo_run
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ imgdist robustness demo/pair/chelsea.png demo/pair/coffee.png\n")[1].split("...")[0]
    header, *rows = [line.split() for line in block.strip().splitlines()]
    assert header[0] == "perturbation" and len(rows) >= 4
    assert "imgdist robustness" in stdout and "/pair/chelsea.png" in stdout and "/pair/coffee.png" in stdout
    ratios = numbers["robustness"]["perturbations"]
    for name, *values in rows:
        for metric, printed in zip(header[1:], values):
            # 1e-3: the printed digits, up to thread-count rounding of float32 features
            assert float(printed) == pytest.approx(ratios[name][metric]["ratio"], rel=1e-3), (name, metric)


def test_set_contrast(demo_run):
    stdout, out, numbers, _ = demo_run
    sets = numbers["sets"]
    score = {(s["space"], s["fake"]): s for s in sets["scores"]}
    fd = {k: s["fd"] for k, s in score.items()}
    px, ft = "pixels", "efficientnet-lite0"

    def per_noise(space):  # what the shift adds to the clean FD, in units of what the noise adds
        return (fd[space, "shift1"] - fd[space, "clean"]) / (fd[space, "noise20"] - fd[space, "clean"])

    assert per_noise(px) > 5 * per_noise(ft)
    noise_ratio = {sp: fd[sp, "noise20"] / fd[sp, "clean"] for sp in (px, ft)}
    assert noise_ratio[ft] > 5 * noise_ratio[px]
    assert score[ft, "noise20"]["precision"] < score[px, "noise20"]["precision"]
    assert sets["shift_per_noise"][px] == pytest.approx(per_noise(px), rel=1e-12)
    reading = " ".join(sets["reading"].split())
    assert "pixel statistics weigh the shift" in reading and "The noise is what the features react to" in reading
    assert f"{fd[px, 'shift1']:.2f}" in stdout and f"{fd[ft, 'noise20']:.2f}" in stdout

    # the sets on disk are what was measured: shifted and noised copies of the clean fakes
    n = sets["crops"]
    for name in ("real", "clean", "shift1", "noise20"):
        assert sorted(os.listdir(out / "sets" / name)) == [f"{i:04d}.png" for i in range(n)]
    clean = np.stack([_png(out / "sets" / "clean" / f"{i:04d}.png") for i in range(n)])
    shifted = np.stack([_png(out / "sets" / "shift1" / f"{i:04d}.png") for i in range(n)])
    noised = np.stack([_png(out / "sets" / "noise20" / f"{i:04d}.png") for i in range(n)])
    assert clean.shape == (n, 32, 32, 3)
    assert np.array_equal(shifted[:, :, 1:], clean[:, :, :-1]) and np.array_equal(shifted[:, :, 0], clean[:, :, 0])
    assert 15 < (noised - clean).std() < 21  # sigma 20, a little less where 0..255 clips


def _commands(stdout: str) -> list[list[str]]:
    block = stdout.split("Recompute from the files:")[1].split("\n\n")[0]
    return [shlex.split(line)[1:] for line in block.strip().splitlines()]


def test_printed_commands_recompute_the_numbers(demo_run, capsys, one_thread):
    stdout, out, numbers, _ = demo_run
    commands = _commands(stdout)
    assert [c[0] for c in commands] == ["compare", "compare", "robustness", "eval", "eval", "eval"]
    capsys.readouterr()
    assert main(commands[0] + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sum_abs_diff"] == 900
    pixel_eval = commands[3]
    assert pixel_eval[pixel_eval.index("--backbone") + 1] == "pixels"
    assert main(pixel_eval + ["--json", "--no-progress", "--no-cache"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    score = next(s for s in numbers["sets"]["scores"] if s["space"] == "pixels" and s["fake"] == "shift1")
    assert metrics["FD[pixels]"]["value"] == pytest.approx(score["fd"], rel=1e-9)
    assert metrics["precision[pixels]"]["value"] == score["precision"]
    assert metrics["recall[pixels]"]["value"] == score["recall"]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.title, self._in_title = [], "", False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def test_out_files_without_matplotlib(demo_run):
    stdout, out, numbers, _ = demo_run
    assert not (out / "robustness.png").exists() and "robustness plot" not in numbers["files"]
    assert "--plot" not in stdout  # the robustness command offers no plot that cannot be made
    html = (out / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(html)
    parser.close()
    assert parser.title == "imgdist report"
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert "FD[efficientnet-lite0]" in html and "install matplotlib for the plot" in html
    for role, path in numbers["files"].items():
        assert os.path.exists(path.replace("*", "shift1")), role


def test_json_with_plot(tmp_path, capsys, one_thread):
    """In-process, with matplotlib present and few crops: --json and the plot."""
    require_module("matplotlib")
    out = tmp_path / "demo"
    assert main(["demo", "--json", "--out", str(out), "--crops", "8", "--no-progress", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "demo.json").read_text())
    assert printed["lecture"]["sum_abs_diff"] == 900 and printed["lecture"]["identical_sum_abs_diff"] == 0
    assert printed["sets"]["crops"] == 8 and len(os.listdir(out / "sets" / "real")) == 8
    plot = out / "robustness.png"
    assert printed["files"]["robustness plot"] == str(plot)
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 300
    assert any("--plot" in c for c in printed["commands"])


@pytest.mark.parametrize("args, message", [
    (["--crops", "2"], "crops"),
    (["--out", "{file}"], "is a file"),
    (["--out", "{foreign}"], "holds other files"),
])
def test_bad_arguments_fail_in_one_line(tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "old" / "sets" / "real").mkdir(parents=True)
    (tmp_path / "old" / "sets" / "real" / "cat.png").write_bytes(b"")
    args = [a.format(file=tmp_path / "file.txt", foreign=tmp_path / "old") for a in args]
    assert main(["demo", "--no-progress"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgdist: error: ") and message in err and "\n" not in err
