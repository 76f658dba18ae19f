"""The network's arithmetic during an extraction: strict fp32 unless a precision is chosen, and the
thread count of the CPU resize.

imgdist sets these only inside its own work and gives the caller's settings back.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

#: the network's dtype per precision; tf32 computes in float32 storage with TF32 tensor-core products
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


#: what an extraction sets through torch's ``fp32_precision`` API (torch >= 2.9): float32 matrix
#: products and convolutions on NVIDIA GPUs (cuBLAS, cuDNN) and on CPUs (oneDNN, which would
#: otherwise be free to use bf16 products)
_FP32_OPS = (("cuda", "matmul"), ("cuda", "conv"), ("mkldnn", "matmul"), ("mkldnn", "conv"))


@contextmanager
def fp32_mode(precision: str):
    """float32 products exact for the block (TF32 off for cuDNN and matmul) unless ``precision`` is
    'tf32'; the caller's settings are restored afterwards. PyTorch lets cuDNN use TF32 by default:
    on a GPU that moved FD by 4.9e-4 relative (issue 16), ~100x more than the batch size does.

    One API family only (issue 23): where torch has the ``fp32_precision`` attributes, reading a
    legacy flag (``allow_tf32``, ``get_float32_matmul_precision``) raises once a caller has mixed
    the two families, so only ``fp32_precision`` is read and written there; the legacy flags only
    where torch has nothing else (before 2.9)."""
    tf32 = precision == "tf32"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        saved = {key: _own_fp32_precision(*key) for key in _FP32_OPS}
        try:
            for backend, op in _FP32_OPS:
                torch._C._set_fp32_precision_setter(backend, op, "tf32" if tf32 and backend == "cuda" else "ieee")
            yield
        finally:
            for (backend, op), value in saved.items():
                torch._C._set_fp32_precision_setter(backend, op, value)
        return
    # before torch 2.9: allow_tf32 of cuBLAS is the matmul precision string ('highest' <-> False)
    before = (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    try:
        torch.backends.cudnn.allow_tf32 = tf32
        # 'highest' also keeps oneDNN from bf16 products on a CPU
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])


def _own_fp32_precision(backend: str, op: str) -> str:
    """The caller's own ``fp32_precision`` of ``backend``/``op``: ``'none'`` where it inherits from
    ``backend``'s ``all`` (and that from the generic one). torch's getter answers the inherited
    value, and restoring that explicitly would cut the link (a later global setting would no longer
    reach it), so where the two agree the parent is moved for a moment to see whether it follows."""
    get, put = torch._C._get_fp32_precision_getter, torch._C._set_fp32_precision_setter
    value = get(backend, op)
    parent = None if backend == "generic" else ((backend, "all") if op != "all" else ("generic", "all"))
    if parent is None or value != get(*parent):
        return value
    parent_own = _own_fp32_precision(*parent)
    # a probe both levels accept, unlike the present value
    probe = "ieee" if value != "ieee" else ("tf32" if backend == "cuda" else "bf16")
    put(*parent, probe)
    try:
        follows = get(backend, op) == probe
    finally:
        put(*parent, parent_own)
    return "none" if follows else value


@contextmanager
def threads(count: int):
    """torch's intra-op threads set to ``count`` for the block."""
    before = torch.get_num_threads()
    if before != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if before != count:
            torch.set_num_threads(before)
