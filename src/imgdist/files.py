"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_write(path, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None,
                 fsync: bool = False):
    """Yield a file open in ``mode`` beside ``path``; when the block completes it replaces ``path``
    (readable by all, like any file the user writes), and on any failure, an interrupt included,
    it is removed and ``path`` is left as it was. ``fsync``: flush to disk before the rename (for
    large downloads that must survive a crash)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.part-", dir=folder)
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else newline) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
