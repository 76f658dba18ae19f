"""Decoding processes that live as long as their :class:`~imgdist.extraction.features.FeatureExtractor`.

One command (``evaluate``: the real set, the generated set, the held-out set) starts them once;
every extraction after the first finds them ready. An extraction is a *job*: a picklable
function of a list of indices (the source and the recipe bound in), written once to a file that
each process reads on its first batch of that job, so that a 50,000-path source is not pickled
with every batch. Batches are *tasks* on one shared queue: a free process takes the next one,
whatever its neighbours are doing, and results come back tagged with job and position, for the
caller to put in order.

The processes ignore SIGINT, SIGTERM and SIGHUP (a Ctrl-C or a hangup reaches the whole process
group; the main process handles it and closes the pool), and end when their parent does: a
thread watches the parent's pid, so that even a SIGKILLed parent leaves no process behind.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from multiprocessing import util as mp_util

from ..errors import ImgdistError, one_line

#: seconds between checks that the processes are alive (while waiting for a batch) and that the
#: parent is (in each process)
POLL_S = 0.5
#: seconds a result that cannot be received waits for its sender to be seen dead (see ``_lost``)
LOST_WAIT_S = 2.0
#: seconds a closing pool gives its processes to finish the batch in hand before killing them
CLOSE_GRACE_S = 2.0
#: the signals the main process handles for the whole group (see ``cli.main``)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
#: no job is current: whatever is left on the queue is skipped
_NO_JOB = -1


def _context():
    # fork, as torch's DataLoader does on Linux: a process is ready in milliseconds (nothing to
    # import again), and a user's script without a __main__ guard still works. The children never
    # touch CUDA or torch's thread pool (one intra-op thread), the two things fork breaks.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


class DecodePool:
    """Worker processes for jobs of tasks; see the module's docstring.

    >>> pool = DecodePool(); pool.grow(4)
    >>> job = pool.start_job(pickle.dumps(functools.partial(decode, source, prep)))
    >>> pool.submit(job, 0, [0, 1, 2]); pool.result(job)  # -> (0, decode(source, prep, [0, 1, 2]))
    >>> pool.end_job(job); pool.close()
    """

    def __init__(self):
        self._ctx = _context()
        self._tasks = self._ctx.SimpleQueue()
        self._results = self._ctx.Queue()
        self._current = self._ctx.RawValue("q", _NO_JOB)
        self._folder = tempfile.mkdtemp(prefix="imgdist-decode-")
        self._procs: list = []
        self._jobs = 0
        self._paths: dict[int, str] = {}
        # at garbage collection, or at interpreter exit before multiprocessing's own exit handler
        # (which would SIGTERM daemonic children, which ignore it, and then wait for them forever)
        self._finalizer = mp_util.Finalize(self, _stop, args=(os.getpid(), self._procs, self._tasks, self._current,
                                                             self._folder), exitpriority=20)

    @property
    def size(self) -> int:
        return len(self._procs)

    @property
    def closed(self) -> bool:
        return not self._finalizer.still_active()

    @property
    def healthy(self) -> bool:
        """Open, and every process alive."""
        return not self.closed and all(p.exitcode is None for p in self._procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def grow(self, workers: int) -> None:
        """Start processes until there are ``workers`` (a pool never shrinks before it closes)."""
        while len(self._procs) < workers:
            proc = self._ctx.Process(target=_serve, args=(self._tasks, self._results, self._current, os.getpid()),
                                     name=f"imgdist-decode-{len(self._procs)}", daemon=True)
            # blocked across the fork, so that no stop signal reaches the child before it ignores them
            with _signals_blocked():
                proc.start()
            self._procs.append(proc)

    def start_job(self, payload: bytes) -> int:
        """Make ``payload`` (a pickled function of a list of indices) the current job; tasks of
        earlier jobs still queued are skipped from now on."""
        job = self._jobs
        self._jobs += 1
        path = os.path.join(self._folder, f"job-{job}.pickle")
        with open(path, "wb") as fh:
            fh.write(payload)
        self._paths[job] = path
        self._current.value = job
        return job

    def submit(self, job: int, seq: int, indices: list[int]) -> None:
        self._tasks.put((job, seq, indices, self._paths[job]))

    def result(self, job: int):
        """The next finished task of ``job``: ``(seq, value)``; a task's exception is raised here.
        Results of earlier jobs are dropped. A process that died (killed for memory, a crash in a
        decoder) is an :class:`ImgdistError` rather than a wait without end."""
        while True:
            try:
                got, seq, ok, value = self._results.get(timeout=POLL_S)
            except queue.Empty:
                self._check_alive()
                continue
            except Exception as exc:  # noqa: BLE001 - whatever receiving raises means the same
                self._lost(exc)
            if got != job:
                continue
            if ok:
                return seq, value
            exc, where = value
            exc.add_note(f"raised in a decoding process:\n{where}")
            raise exc

    def end_job(self, job: int) -> None:
        """The job is over (done or abandoned): its queued tasks are skipped, its file removed."""
        if self._current.value == job:
            self._current.value = _NO_JOB
        path = self._paths.pop(job, None)
        if path is not None:
            try:
                os.remove(path)
            except OSError:
                pass

    def close(self) -> None:
        """Stop the processes (each finishes the batch in hand, or is killed after a grace period)."""
        self._finalizer()

    def _lost(self, exc: BaseException) -> None:
        """A result that cannot be received. A batch's tensors travel in shared memory whose file
        descriptor torch fetches from the sending process as the result is unpickled: a process
        killed after sending (SIGKILL, the OOM killer) refuses that connection
        (``ConnectionRefusedError``, ``EOFError``). Its exit can lag its socket's closing by a
        moment, so the dead process is waited for before it is named."""
        deadline = time.monotonic() + LOST_WAIT_S
        while time.monotonic() < deadline and self._death() is None:
            time.sleep(0.01)
        death = self._death()
        self.close()
        raise ImgdistError(death or f"a decoded batch could not be received from a decoding process "
                                    f"({one_line(exc)}); rerun with --workers 0 to decode in the main process") from None

    def _check_alive(self) -> None:
        death = self._death()
        if death is not None:
            self.close()
            raise ImgdistError(death)

    def _death(self) -> str | None:
        """The one line naming a process that ended, or None while all live."""
        dead = next((p for p in self._procs if p.exitcode is not None), None)
        if dead is None:
            return None
        code = dead.exitcode
        cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return (f"a decoding process (pid {dead.pid}) ended unexpectedly ({cause}; e.g. killed for memory); "
                "rerun with --workers 0 to decode in the main process")


def _stop(owner: int, procs: list, tasks, current, folder: str) -> None:
    if os.getpid() != owner:  # a fork of the owner inherited this finalizer: not its children
        return
    current.value = _NO_JOB
    if any(p.is_alive() for p in procs):  # with none alive, nobody would read the queue
        for _ in procs:
            tasks.put(None)
    deadline = time.monotonic() + CLOSE_GRACE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            proc.kill()  # SIGTERM is ignored
            proc.join()
    tasks.close()
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _signals_blocked():
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _serve(tasks, results, current, parent: int) -> None:
    """A process's life: tasks until the ``None`` that closes the pool."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    import torch

    torch.set_num_threads(1)  # decoding is one image at a time; the cores are the other processes'
    threading.Thread(target=_exit_with, args=(parent,), name="imgdist-parent-watch", daemon=True).start()
    # results unread at the end are nobody's: exiting must not wait until they reach the pipe
    results.cancel_join_thread()
    loaded, work = None, None
    while (task := tasks.get()) is not None:
        job, seq, indices, path = task
        if job != current.value:  # queued by an extraction that stopped (an error, Ctrl-C)
            continue
        try:
            if loaded != job:
                work = None  # the previous job's source (an open archive) is released first
                with open(path, "rb") as fh:
                    work = pickle.load(fh)
                loaded = job
            out = (True, work(indices))
        except Exception as exc:  # noqa: BLE001 - sent to the main process, which raises it
            if job != current.value:  # e.g. the job's file was removed as it stopped
                continue
            out = (False, (_portable(exc), traceback.format_exc()))
        results.put((job, seq) + out)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (the queue pickles in a thread, where a failure would lose
    the result and leave the main process waiting), else a RuntimeError naming it."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {one_line(exc)}")


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(0)
