"""The network's arithmetic during an extraction: strict fp32 unless a precision is chosen, and the
thread count of the CPU resize.

imgdist sets these only inside its own work and gives the caller's settings back.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

#: the network's dtype per precision; tf32 computes in float32 storage with TF32 tensor-core products
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def fp32_mode(precision: str):
    """float32 products exact for the block (TF32 off for cuDNN and matmul) unless ``precision`` is
    'tf32'; the caller's settings are restored afterwards. PyTorch lets cuDNN use TF32 by default:
    on a GPU that moved FD by 4.9e-4 relative (issue 16), ~100x more than the batch size does."""
    tf32 = precision == "tf32"
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    # 'highest' also keeps oneDNN from bf16 products on a CPU
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        # the flags first: setting matmul.allow_tf32 rewrites the precision string
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


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
