import contextlib

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch / BLAS thread: on a shared 2-core machine small float64 convolutions and
    eigendecompositions run several times faster than with two competing threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1, user_api="blas")
    with limits:
        yield
    torch.set_num_threads(before)
