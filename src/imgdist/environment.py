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


def env_int(name: str, default: int | None, *, minimum: int, hint: str = "", typed: bool = False) -> int:
    """A whole number >= ``minimum``; ``default`` when the variable is unset. ``typed``: a setting a
    person types, where empty also means the default and ``_`` may group digits (``89_478_485``);
    otherwise (values a launcher writes) the digits alone."""
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    value = (raw or "").strip()
    if typed:
        value = value.replace("_", "")
        if not value:
            return default
    if not value.isdigit() or int(value) < minimum:
        expected = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
        raise ImgdistError(f"environment variable {name}={raw!r}: expected {expected}"
                           + (f" ({hint})" if hint else ""))
    return int(value)


def env_positive_int(name: str, default: int) -> int:
    return env_int(name, default, minimum=1, typed=True)
