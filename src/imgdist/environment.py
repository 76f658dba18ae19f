"""imgdist's environment variables, read and checked where they are used.

The environment is input like any other: ``IMGDIST_OFFLINE=2`` or ``IMGDIST_MAX_PIXELS=lots`` is a
one-line error naming the variable, never a traceback at import and never a silent guess.

* ``IMGDIST_CACHE``       cache root (weights, features); default ``~/.cache/imgdist``
* ``IMGDIST_OFFLINE``     1/true/yes/on forbids downloads; 0/false/no/off or unset allows them
* ``IMGDIST_MAX_PIXELS``  largest image (width x height) decoded; default 89,478,485 (Pillow's)
"""

from __future__ import annotations

import os

from .errors import ImgdistError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def env_flag(name: str) -> bool:
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImgdistError(f"environment variable {name}={raw!r}: use 1/true/yes/on or 0/false/no/off")


def env_positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ImgdistError(f"environment variable {name}={os.environ[name]!r}: expected a positive whole number")
    return int(raw)
