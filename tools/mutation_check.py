#!/usr/bin/env python3
"""Deliberate one-line bugs, and whether the test suite catches each of them.

Each case below is a bug someone could plausibly write: the file, the exact text to replace (it
must occur exactly once), the replacement, and the test files to run. The tool takes one snapshot
of the repository (the files git tracks or would track) into a temporary folder; for every case
it copies the snapshot, makes the one edit in the copy and runs ``python -m pytest -x -q`` on the
case's test files there, with the copy's ``src`` first on ``PYTHONPATH`` (checked: ``imgdist``
must import from the copy). The working tree is never modified, and edits made to it during a run
do not reach the run. A case whose old text is not found (code moved or changed)
is refused with an error before anything runs: update the case, it is not "caught".

Not part of CI and not collected by pytest (the tests live in ``tests/``). Slow: each case is a
pytest run (tens of seconds to minutes on two shared cores), so run it niced::

    nice -n 10 python tools/mutation_check.py               # every case, after a clean baseline run
    nice -n 10 python tools/mutation_check.py --case kid-biased --case prdc-k-off-by-one
    python tools/mutation_check.py --list                   # the cases, and whether each applies

Prints a Markdown table: case, file, outcome (``caught``, ``NOT CAUGHT``, ``timeout``, ``error``:
pytest failed without a failing test, e.g. a collection error) and the first test that failed.
Exit status 0 when every case was caught, 1 otherwise, 2 when a case does not apply.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    file: str           # relative to the repository root
    old: str            # exact text, found exactly once in the file
    new: str
    tests: tuple[str, ...]
    bug: str            # what goes wrong, in words


CASES = [
    # --- issue 25: the two that went through ---------------------------------------------------
    Case("fid-inf-last-point", "src/imgdist/metrics/fid_infinity.py",
         "    return fit.value",
         "    return fit.fids[-1]",
         ("tests/test_fid_infinity.py",),
         "evaluate's fid-inf is the fit's last point (FID at full N), not its intercept"),
    Case("frechet-fallback-abs", "src/imgdist/metrics/frechet.py",
         "root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T",
         "root = (v * np.sqrt(np.abs(w))) @ v.T",
         ("tests/test_frechet.py",),
         "singular fallback: negative eigenvalues of S1 taken as |lambda| instead of 0"),
    # --- issue 25: the weak assertions ---------------------------------------------------------
    Case("frechet-eigvals-abs", "src/imgdist/metrics/frechet.py",
         "return float(np.sqrt(np.clip(w, 0.0, None)).sum())",
         "return float(np.sqrt(np.abs(w)).sum())",
         ("tests/test_frechet.py",),
         "tr sqrt(S1 S2): negative eigenvalues taken as |lambda| instead of 0"),
    Case("prdc-no-dimension-check", "src/imgdist/metrics/prdc.py",
         "    if x.shape[1] != y.shape[1]:",
         "    if False:",
         ("tests/test_prdc.py",),
         "prdc: imgdist's feature-dimension check deleted (numpy's matmul error remains)"),
    Case("prdc-no-k-check", "src/imgdist/metrics/prdc.py",
         "    if k >= n:",
         "    if False:",
         ("tests/test_prdc.py",),
         "prdc: imgdist's k < N check deleted (numpy's partition error remains)"),
    Case("is-no-2d-check", "src/imgdist/metrics/inception_score.py",
         "    if z.ndim != 2:",
         "    if False:",
         ("tests/test_inception_score.py",),
         "Inception Score: the 2-D check deleted (numpy's AxisError remains)"),
    Case("is-no-splits-bound", "src/imgdist/metrics/inception_score.py",
         "    if splits < 1 or splits > n:",
         "    if splits < 1:",
         ("tests/test_inception_score.py",),
         "Inception Score: more splits than samples accepted (empty splits give NaN)"),
    Case("npz-reader-accepts-a-bare-npy", "src/imgdist/extraction/arrayfiles.py",
         'raise SourceError(f"{path}: holds a single .npy array, not a .npz archive of named arrays")',
         "return",
         ("tests/test_stats_files.py",),
         "the one .npz reader takes a bare .npy named .npz instead of refusing it in one line"),
    Case("bootstrap-never-last-real", "src/imgdist/metrics/bootstrap.py",
         "i = rng.integers(0, len(real), len(real))",
         "i = rng.integers(0, len(real) - 1, len(real))",
         ("tests/test_bootstrap.py",),
         "bootstrap: the last real sample is never drawn (exclusive bound off by one)"),
    # --- further plausible one-line bugs in the metric code -------------------------------------
    Case("prdc-precision-non-strict", "src/imgdist/metrics/prdc.py",
         "precise |= (d < r_real_pr[start:stop, None]).any(axis=0)",
         "precise |= (d <= r_real_pr[start:stop, None]).any(axis=0)",
         ("tests/test_prdc.py",),
         "precision: a fake on a real's k-NN sphere counts as inside (< made <=)"),
    Case("prdc-k-off-by-one", "src/imgdist/metrics/prdc.py",
         "radii[k][start : start + len(d)] = part[:, k]",
         "radii[k][start : start + len(d)] = part[:, k - 1]",
         ("tests/test_prdc.py",),
         "k-NN radius: the k-th smallest distance with self included (k - 1 neighbours)"),
    Case("prdc-density-without-1/k", "src/imgdist/metrics/prdc.py",
         "density=float((1.0 / k) * fake_hits.mean()),",
         "density=float(fake_hits.mean()),",
         ("tests/test_prdc.py",),
         "density not divided by k"),
    Case("kid-biased", "src/imgdist/metrics/kid.py",
         "sxx = self._pair_sum(u, au, u, au) - self._diagonal(u, au) + self._mixed(au, au, same=True)",
         "sxx = self._pair_sum(u, au, u, au) + self._mixed(au, au, same=True)",
         ("tests/test_kid.py",),
         "KID: the real-real kernel sum keeps its diagonal (the biased estimator's term)"),
    Case("kid-std-ddof1", "src/imgdist/metrics/kid.py",
         "return float(mmds.mean()), float(mmds.std())",
         "return float(mmds.mean()), float(mmds.std(ddof=1))",
         ("tests/test_kid.py",),
         "KID spread with ddof=1 instead of torch-fidelity's ddof=0"),
    Case("is-wrong-split", "src/imgdist/metrics/inception_score.py",
         "lo, hi = i * n // splits, (i + 1) * n // splits",
         "lo, hi = i * (n // splits), (i + 1) * (n // splits)",
         ("tests/test_inception_score.py",),
         "Inception Score: splits of n // splits rows, the remainder dropped"),
    Case("frechet-trace-sign", "src/imgdist/metrics/frechet.py",
         "value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt(s1, s2)",
         "value = diff @ diff + np.trace(s1) + np.trace(s2) + 2.0 * _trace_sqrt(s1, s2)",
         ("tests/test_frechet.py",),
         "Fréchet distance: + 2 tr sqrt(S1 S2)"),
    Case("mean-cov-biased", "src/imgdist/metrics/frechet.py",
         "    scatter /= n - 1",
         "    scatter /= n",
         ("tests/test_frechet.py",),
         "covariance divided by N instead of N - 1"),
    Case("fid-inf-fit-in-n", "src/imgdist/metrics/fid_infinity.py",
         "design = np.column_stack([1.0 / n, np.ones_like(n)])",
         "design = np.column_stack([n, np.ones_like(n)])",
         ("tests/test_fid_infinity.py",),
         "FID-infinity fitted as a line in N instead of 1/N"),
    Case("bootstrap-offset-sign", "src/imgdist/evaluation/compute.py",
         "low, high = np.quantile(replicates, [(1 - ci) / 2, (1 + ci) / 2]) - offset",
         "low, high = np.quantile(replicates, [(1 - ci) / 2, (1 + ci) / 2]) + offset",
         ("tests/test_evaluation.py",),
         "evaluate's bootstrap interval shifted by +offset instead of re-centred"),
    Case("provenance-ignores-precision", "src/imgdist/extraction/provenance.py",
         '_KEY_FIELDS = ("backbone", "weights_sha256", "resize_mode", "feature_layer", "precision")',
         '_KEY_FIELDS = ("backbone", "weights_sha256", "resize_mode", "feature_layer")',
         ("tests/test_precision.py", "tests/test_stats.py"),
         "provenance check: bf16/tf32 statistics pass for fp32 ones"),
    Case("cmmd-kernel-width", "src/imgdist/metrics/cmmd.py",
         "gamma = 1.0 / (2.0 * sigma * sigma)",
         "gamma = 1.0 / (sigma * sigma)",
         ("tests/test_cmmd.py",),
         "CMMD: Gaussian kernel exp(-|a-b|^2 / sigma^2), the factor 2 lost"),
    Case("vendi-entropy-sign", "src/imgdist/metrics/vendi.py",
         "return float(np.exp(-np.sum(w * np.log(w))))",
         "return float(np.exp(np.sum(w * np.log(w))))",
         ("tests/test_vendi.py",),
         "Vendi (q = 1): exp(+sum l log l), the entropy's sign lost"),
]


# --------------------------------------------------------------------------------------------

def tracked_files(root: Path) -> list[str]:
    """What git tracks or would track (no venvs, caches or build output)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and os.path.lexists(root / name)]


def copy_tree(root: Path, files: list[str], dest: Path) -> None:
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=False)


def check_applies(case: Case, tree: Path) -> str | None:
    """Why ``case`` cannot be applied to the code in ``tree``, or None."""
    path = tree / case.file
    if not path.is_file():
        return f"{case.file} does not exist"
    count = path.read_text().count(case.old)
    if count != 1:
        return f"its old text occurs {count} times in {case.file} (must be once): {case.old!r}"
    missing = [t for t in case.tests if not (tree / t).is_file()]
    if missing:
        return f"test file(s) not found: {', '.join(missing)}"
    return None


def environment(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_pytest(copy: Path, tests, timeout: float, deselect=()) -> tuple[str, str, float]:
    """(outcome, first failing test or a note, seconds) of pytest -x -q on ``tests`` in ``copy``."""
    start = time.monotonic()
    skip = [arg for node in deselect for arg in ("--deselect", node)]
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *skip, *tests],
                            cwd=copy, env=environment(copy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", f"no result in {timeout:g} s", time.monotonic() - start
    seconds = time.monotonic() - start
    if proc.returncode == 0:
        return "passed", "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.MULTILINE)  # ids may hold spaces
    if proc.returncode == 1 and failed:
        return "failed", failed[0], seconds
    tail = " | ".join(line for line in output.strip().splitlines()[-3:])
    return "error", f"pytest exit {proc.returncode}: {tail}", seconds


def imported_from(copy: Path) -> str:
    out = subprocess.run([sys.executable, "-c", "import imgdist; print(imgdist.__file__)"], cwd=copy,
                         env=environment(copy), capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", default=[], metavar="NAME", help="run only these cases")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (default 900)")
    parser.add_argument("--list", action="store_true", help="list the cases and whether each applies")
    parser.add_argument("--deselect", action="append", default=[], metavar="NODEID",
                        help="leave out a test that fails without any mutation (say so when reporting)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the unmutated copy (whose tests must pass for 'caught' to mean anything)")
    args = parser.parse_args(argv)

    names = [c.name for c in CASES]
    duplicates = {n for n in names if names.count(n) > 1}
    unknown = [n for n in args.case if n not in names]
    if duplicates or unknown:
        print(f"mutation_check: error: {'duplicate' if duplicates else 'unknown'} case name(s): "
              f"{', '.join(sorted(duplicates) or unknown)}", file=sys.stderr)
        return 2
    cases = [c for c in CASES if not args.case or c.name in args.case]
    if args.list:
        problems = [(c, check_applies(c, ROOT)) for c in cases]
        for case, problem in problems:
            print(f"{case.name:32} {case.file:44} {'ok' if problem is None else 'DOES NOT APPLY: ' + problem}")
            print(f"{'':32} {case.bug}; tests: {' '.join(case.tests)}")
        return 2 if any(p for _, p in problems) else 0

    with tempfile.TemporaryDirectory(prefix="imgdist-mutation-") as scratch:
        snapshot = Path(scratch) / "snapshot"
        copy_tree(ROOT, tracked_files(ROOT), snapshot)
        stale = [(c, p) for c in cases if (p := check_applies(c, snapshot)) is not None]
        for case, problem in stale:
            print(f"mutation_check: error: case {case.name} does not apply: {problem}", file=sys.stderr)
        if stale:
            print("mutation_check: error: update those cases (the code moved or changed); nothing was run",
                  file=sys.stderr)
            return 2
        if not args.no_baseline:
            base = Path(scratch) / "baseline"
            shutil.copytree(snapshot, base, symlinks=True)
            origin = imported_from(base)
            if not origin.startswith(str(base / "src")):
                print(f"mutation_check: error: the copy's tests would import imgdist from {origin}, not from "
                      f"the copy", file=sys.stderr)
                return 2
            tests = sorted({t for c in cases for t in c.tests})
            print(f"baseline: {len(tests)} test file(s) on the unmutated copy ...", file=sys.stderr, flush=True)
            outcome, detail, seconds = run_pytest(base, tests, args.timeout * 2, args.deselect)
            if outcome != "passed":
                print(f"mutation_check: error: the unmutated tests do not pass ({outcome}: {detail}); "
                      f"'caught' would mean nothing (fix it, or --deselect it and say so)", file=sys.stderr)
                return 2
            print(f"baseline: passed in {seconds:.0f} s", file=sys.stderr, flush=True)
            shutil.rmtree(base)
        rows = []
        for i, case in enumerate(cases, 1):
            copy = Path(scratch) / case.name.replace("/", "_")
            shutil.copytree(snapshot, copy, symlinks=True)
            target = copy / case.file
            target.write_text(target.read_text().replace(case.old, case.new, 1))
            print(f"[{i}/{len(cases)}] {case.name} ...", file=sys.stderr, flush=True)
            outcome, detail, seconds = run_pytest(copy, case.tests, args.timeout, args.deselect)
            verdict = {"failed": "caught", "passed": "NOT CAUGHT"}.get(outcome, outcome)
            print(f"[{i}/{len(cases)}] {case.name}: {verdict} ({seconds:.0f} s) {detail}", file=sys.stderr, flush=True)
            rows.append((case, verdict, detail, seconds))
            shutil.rmtree(copy)

    print("| case | bug | file | result | caught by | s |")
    print("|---|---|---|---|---|---|")
    for case, verdict, detail, seconds in rows:
        cells = [case.name, case.bug, case.file, verdict, detail, f"{seconds:.0f}"]
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    caught = sum(1 for _, verdict, _, _ in rows if verdict == "caught")
    print(f"\n{caught} of {len(rows)} caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
