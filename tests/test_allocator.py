"""Freed activation memory is kept for the next batch during an extraction, and only then.

glibc's own accounting (``mallinfo2``) tells where a block came from: ``hblkhd`` counts the bytes
in blocks served by ``mmap``. A 64 MB allocation is such a block by default, and a heap block
inside :func:`retained_memory`; afterwards the defaults are back.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from imgdist.extraction import allocator
from imgdist.extraction.allocator import retained_memory

BIG = 64 * 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _mmapped_bytes() -> int:
    libc = allocator._glibc()
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


def _mmapped_by_a_big_block() -> int:
    before = _mmapped_bytes()
    block = np.ones(BIG, dtype=np.uint8)  # touched, so it is really allocated
    grown = _mmapped_bytes() - before
    del block
    return grown


glibc = pytest.mark.skipif(allocator._glibc() is None or not hasattr(allocator._glibc(), "mallinfo2"),
                           reason="glibc >= 2.33 only")


@glibc
def test_large_blocks_come_from_the_heap_inside_and_from_mmap_outside(monkeypatch):
    for name in allocator._USER_TUNING:
        monkeypatch.delenv(name, raising=False)
    assert _mmapped_by_a_big_block() >= BIG
    with retained_memory(4 * BIG) as active:
        assert active
        assert _mmapped_by_a_big_block() == 0
        with retained_memory(BIG):  # nested: still on, the outer block restores
            assert _mmapped_by_a_big_block() == 0
        assert _mmapped_by_a_big_block() == 0
    assert _mmapped_by_a_big_block() >= BIG


@glibc
def test_a_users_own_malloc_tuning_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    with retained_memory(4 * BIG) as active:
        assert not active
        assert _mmapped_by_a_big_block() >= BIG


def test_other_allocators_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", None)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator._glibc() is None
    with retained_memory(BIG) as active:
        assert not active
