"""What a test needs that a machine may lack: Debian's Fashion-MNIST, a committed fixture, a test
dependency (``pip install -e ".[test]"``), an imgdist module a parity test imports.

Locally, a missing need skips the test and says how to provide it. In CI (the environment variable
``CI`` set to ``true``, as ``.ci/run`` and CI services set it) it fails the test instead: a parity
test that skips in CI checks nothing while CI stays green (issue 25). Every such skip in the suite
goes through here; ``test_needs.py`` checks that.

Platform capabilities are not needs: tests that cannot mean anything as root, without ``/proc``,
without bf16 instructions and the like skip with ``pytest.mark.skipif`` on any machine that lacks
them (``test_needs.PLATFORM_SKIPS`` lists them).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
INSTALL_FASHION_MNIST = "apt-get install dataset-fashion-mnist"
INSTALL_TEST_EXTRAS = "pip install -e '.[test]'"


def in_ci() -> bool:
    """Whether this run is CI's: ``CI`` is ``true`` (any case) or ``1``."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing(what: str, remedy: str) -> NoReturn:
    """Skip the calling test (or module, at import time), or fail it under ``CI=true``."""
    message = f"{what} is missing ({remedy})"
    if in_ci():
        pytest.fail(f"{message}; CI=true: a test whose data or code is missing fails, it does not skip",
                    pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_file(path: str | os.PathLike, remedy: str) -> Path:
    """``path`` if it is a file, else :func:`missing`."""
    path = Path(path)
    if not path.is_file():
        missing(str(path), remedy)
    return path


def require_fashion_mnist(name: str) -> Path:
    """One of Debian's Fashion-MNIST IDX files, e.g. ``train-images-idx3-ubyte.gz``."""
    return require_file(FASHION_MNIST / name, INSTALL_FASHION_MNIST)


def require_module(name: str, remedy: str = INSTALL_TEST_EXTRAS) -> ModuleType:
    """The imported module ``name``, or :func:`missing` where it (or a package above it) is not
    installed. A module that is there but fails to import raises its error: that is a bug, not a
    missing need."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        absent = error.name or ""
        if name == absent or name.startswith(absent + "."):
            missing(f"module {name}", remedy)
        raise
