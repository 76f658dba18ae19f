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


@pytest.fixture
def no_hang():
    """Turn a hang (e.g. a blocking open of a FIFO) into a failure after 30 s instead of a stuck run."""
    import signal

    def timeout(signum, frame):
        raise TimeoutError("the test hung for 30 s")

    before = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
