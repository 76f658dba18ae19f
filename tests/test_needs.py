"""needs.py: a missing need skips a test locally and fails it under CI=true; and every skip in the
suite is either such a need or a platform capability listed here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import needs

TESTS = Path(__file__).resolve().parent

#: the skips that stay skips in CI: what the platform cannot do, not what was not installed
#: (file -> number of skip constructs in it)
PLATFORM_SKIPS = {
    "test_sources.py": 1,     # root reads files whatever their permissions
    "test_cache.py": 1,       # root writes into any folder
    "test_decode_pool.py": 1,  # reads /proc
    "test_precision.py": 1,   # a CPU without bf16 instructions
    "test_allocator.py": 1,   # glibc without mallinfo2
    "test_fuse.py": 1,        # a torch built without oneDNN
}


@pytest.fixture(params=["true", "TRUE", "1"])
def ci(monkeypatch, request):
    monkeypatch.setenv("CI", request.param)


@pytest.fixture(params=[None, "", "false", "0"])
def local(monkeypatch, request):
    if request.param is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", request.param)


def test_a_missing_file_fails_in_ci(ci, tmp_path):
    assert needs.in_ci()
    with pytest.raises(pytest.fail.Exception, match=r"absent\.npz is missing \(run make\.py\); CI=true"):
        needs.require_file(tmp_path / "absent.npz", "run make.py")


def test_a_missing_file_skips_locally(local, tmp_path):
    assert not needs.in_ci()
    with pytest.raises(pytest.skip.Exception, match=r"absent\.npz is missing \(run make\.py\)$"):
        needs.require_file(tmp_path / "absent.npz", "run make.py")


def test_a_missing_module_fails_in_ci_and_skips_locally(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"module imgdist\.no_such_module is missing"):
        needs.require_module("imgdist.no_such_module")
    with pytest.raises(pytest.fail.Exception, match=r"module no_such_package\.data is missing \(pip install"):
        needs.require_module("no_such_package.data")  # the package above it is absent
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match=r"module imgdist\.no_such_module is missing"):
        needs.require_module("imgdist.no_such_module", "the lead's branch")


def test_what_is_there_is_returned(local, tmp_path):
    present = tmp_path / "present.npz"
    present.write_bytes(b"")
    assert needs.require_file(present, "unused") == present
    assert needs.require_module("json") is sys.modules["json"]


def test_a_module_that_is_there_but_broken_raises_its_error(monkeypatch, tmp_path):
    """Only an absent module is a missing need; one whose own imports fail is a bug to report."""
    (tmp_path / "needs_broken_module.py").write_text("import needs_nowhere_to_be_found\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(ModuleNotFoundError, match="needs_nowhere_to_be_found"):
        needs.require_module("needs_broken_module")
    (tmp_path / "needs_raising_module.py").write_text("raise ImportError('a bug')\n")
    with pytest.raises(ImportError, match="a bug"):
        needs.require_module("needs_raising_module")


def test_fashion_mnist_is_a_need(monkeypatch, tmp_path):
    monkeypatch.setattr(needs, "FASHION_MNIST", tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"train-images-idx3-ubyte\.gz is missing \(apt-get install "
                                                     r"dataset-fashion-mnist\)"):
        needs.require_fashion_mnist("train-images-idx3-ubyte.gz")


SKIP = re.compile(r"pytest\.skip\(|importorskip\(|mark\.skipif\(|mark\.skip\(|pytest\.xfail\(|mark\.xfail\(")


def test_every_other_skip_is_a_platform_capability():
    """A new skip for missing data, fixtures or modules must use needs.py, or CI would stay green
    without running the test; a new platform skip is added to PLATFORM_SKIPS."""
    found = {}
    for path in sorted(TESTS.glob("*.py")):
        if path.name in ("needs.py", Path(__file__).name):
            continue
        count = len(SKIP.findall(path.read_text()))
        if count:
            found[path.name] = count
    assert found == PLATFORM_SKIPS
