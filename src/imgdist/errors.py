"""Errors that reach the user as one line: what failed, on which file, and why.

The CLI prints ``str(error)`` and exits with status 2 for every :class:`ImgdistError`;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os


class ImgdistError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ImageError(ImgdistError):
    """An image that cannot be read or decoded."""

    #: how ``Skipped`` counts it ("skipped 3 unreadable image(s)")
    kind = "unreadable"

    def __init__(self, name: str | os.PathLike, cause: str):
        self.name = str(name)
        self.cause = " ".join(str(cause).split())  # one line, whatever the library said
        super().__init__(f"{self.name}: {self.cause}")


class SourceError(ImgdistError):
    """A source (folder, archive, array, glob) that yields no usable images."""


class WeightsError(ImgdistError):
    """Model weights that cannot be found, downloaded or verified."""


class ProvenanceError(ImgdistError):
    """Statistics or features produced in incompatible ways (backbone, weights, resize mode)."""


class ImgdistWarning(UserWarning):
    """Something the user should know, where the result is still right (e.g. running without the
    cache). The CLI prints each as one line ``imgdist: warning: ...`` on stderr."""


def one_line(text) -> str:
    """Any message (a library's multi-line text included) as one line; an exception that carries
    no message by its type's name."""
    line = " ".join(str(text).split())
    return line or (type(text).__name__ if isinstance(text, BaseException) else "")


class SetTooSmall(ImgdistError):
    """A set with too few images for a metric's settings (a k, splits, cells); per-class
    evaluation leaves such a metric out for a small class instead of failing."""


class PromptError(ImgdistError):
    """Prompts that do not give every image exactly one prompt: a prompt file or sidecar that is
    missing, duplicated, unmatched, empty or not UTF-8."""
