"""Keep freed activation memory in the process during extraction instead of returning it each batch.

glibc serves every allocation above its mmap threshold (at most 32 MiB, however it adapts) with a
fresh ``mmap`` and gives it back with ``munmap`` when freed. A CNN batch allocates and frees
dozens of such buffers (Inception at batch 50: 50 x 64 x 147 x 147 floats = 277 MB for one
activation), so every batch faults all of them in again, page by page: on two cores a third of
the CPU time of an Inception run was system time, with the same FID (issue 11's profile).

:func:`retained_memory` switches that off for the duration of a ``with`` block: ``mallopt`` with
``M_MMAP_MAX = 0`` puts large blocks on the heap, where freed memory is reused by the next batch,
and ``M_TRIM_THRESHOLD = bound`` lets the heap keep at most ``bound`` free bytes at its top
before giving the rest back. On exit, the glibc defaults (65,536 mappings, a 128 KiB trim
threshold) are restored and ``malloc_trim(0)`` returns every free page, so the memory kept is
bounded by ``bound`` (one batch's activations, see :func:`imgdist.extraction.features.FeatureExtractor`)
while extracting, and by nothing after. Other allocators (jemalloc or tcmalloc preloaded, musl,
macOS, Windows) are left alone: there the block does nothing.

It is process-wide while it lasts (glibc has one set of parameters): other threads allocating
during an extraction also take heap memory rather than mappings, which only changes where
their memory comes from. A user who tuned glibc through ``MALLOC_MMAP_MAX_``,
``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_`` keeps their settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading

# glibc's mallopt parameters and defaults (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_USER_TUNING = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_lock = threading.Lock()
_depth = 0
_libc = None


def _glibc():
    """glibc's ``mallopt``/``malloc_trim`` when they govern this process's ``malloc``, else None."""
    global _libc
    if _libc is None:
        _libc = False
        preload = os.environ.get("LD_PRELOAD", "")
        if any(name in preload for name in _OTHER_ALLOCATORS):
            return None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc or None


def available() -> bool:
    """Whether :func:`retained_memory` does anything here (glibc, not tuned by the user)."""
    return _glibc() is not None and not any(os.environ.get(name) for name in _USER_TUNING)


@contextlib.contextmanager
def retained_memory(bound: int):
    """Within the block, freed large allocations stay in the heap for reuse, at most ``bound``
    free bytes kept at its top; afterwards glibc's defaults and a trim (see the module docstring).

    Nested and concurrent blocks share one setting (the first block's bound); the last to leave
    restores the defaults."""
    global _depth
    libc = _glibc() if available() else None
    if libc is None:
        yield False
        return
    bound = int(min(max(bound, 64 * 2**20), 2**31 - 1))  # mallopt takes an int
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, bound)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
