"""Freed activation memory is kept for the next batch during an extraction, and only then.

glibc's own accounting (``mallinfo2``) tells where a block came from: ``hblkhd`` counts the bytes
in blocks served by ``mmap``. A 64 MB allocation is such a block by default, and a heap block
inside :func:`retained_memory`; afterwards the defaults are back.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imgdist.extraction import allocator
from imgdist.extraction.allocator import retained_memory

BIG = 64 * 2**20


#: the measurements run in a fresh interpreter: in a process that has already extracted (earlier
#: tests), the heap holds large free chunks, and glibc serves a 64 MB block from one of them
#: without any mmap whatever its settings (seen under CI's test order)
PROBE = """
import ctypes, os, sys
import numpy as np
from imgdist.extraction import allocator
from imgdist.extraction.allocator import retained_memory

BIG = 64 * 2**20

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

def mmapped_bytes():
    libc = allocator._glibc()
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().hblkhd

def mmapped_by_a_big_block():
    before = mmapped_bytes()
    block = np.ones(BIG, dtype=np.uint8)  # touched, so it is really allocated
    grown = mmapped_bytes() - before
    del block
    return grown

def check(condition, what):
    if not condition:
        sys.exit(what)
"""

INSIDE_AND_OUTSIDE = PROBE + """
check(mmapped_by_a_big_block() >= BIG, "outside before: not mmapped")
with retained_memory(4 * BIG) as active:
    check(active, "not active")
    check(mmapped_by_a_big_block() == 0, "inside: mmapped")
    with retained_memory(BIG):  # nested: still on, the outer block restores
        check(mmapped_by_a_big_block() == 0, "nested: mmapped")
    check(mmapped_by_a_big_block() == 0, "after the nested block: mmapped")
check(mmapped_by_a_big_block() >= BIG, "outside after: not mmapped")
"""

USER_TUNING = PROBE + """
with retained_memory(4 * BIG) as active:
    check(not active, "active despite the user's tuning")
    check(mmapped_by_a_big_block() >= BIG, "the user's tuning was overridden")
"""


def _run(script: str, env: dict) -> None:
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr or proc.stdout


glibc = pytest.mark.skipif(allocator._glibc() is None or not hasattr(allocator._glibc(), "mallinfo2"),
                           reason="glibc >= 2.33 only")


@glibc
def test_large_blocks_come_from_the_heap_inside_and_from_mmap_outside():
    env = {k: v for k, v in os.environ.items() if k not in allocator._USER_TUNING}
    _run(INSIDE_AND_OUTSIDE, env)


@glibc
def test_a_users_own_malloc_tuning_is_left_alone():
    env = {k: v for k, v in os.environ.items() if k not in allocator._USER_TUNING}
    _run(USER_TUNING, {**env, "MALLOC_MMAP_MAX_": "65536"})


def test_other_allocators_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", None)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator._glibc() is None
    with retained_memory(BIG) as active:
        assert not active
