"""One pool of decoding processes per extractor (issue 16 item 4): started once, serving every set
of an ``evaluate``, closed at its end, and equal to decoding in the main process bit for bit.

Process starts are counted where any implementation must go through, ``multiprocessing``'s
``BaseProcess.start`` (torch's DataLoader too); processes alive are read from ``/proc``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgdist
from imgdist.extraction.decode_pool import DecodePool
from imgdist.errors import ImageError, ImgdistError
from imgdist.evaluation.run import evaluate
from imgdist.extraction.features import FeatureExtractor
from imgdist.extraction.sources import FileSource

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")]

SIZE = 6
PIX = dict(backbone="pixels", mode="native", progress=False, batch_size=8)
ROOT = Path(__file__).resolve().parents[1]


def _images(n, seed, brightness=0.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = []
    for _ in range(n):
        a, b = rng.uniform(-1, 1, 2)
        img = 128 + 60 * (a * xx + b * yy)[:, :, None] + rng.normal(0, 25, (SIZE, SIZE, 3)) + brightness
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _folder(path: Path, images) -> Path:
    path.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(path / f"{i:03d}.png")
    return path


def _state(pid: int) -> str | None:
    """The process's state letter from /proc, None where it no longer exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _living_children() -> list[int]:
    """This process's children that still run (a zombie has ended)."""
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _gone(pids, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not all(_state(p) in (None, "Z") for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def starts(monkeypatch):
    """pids of every process started from here on."""
    started = []
    original = BaseProcess.start

    def start(self):
        original(self)
        started.append(self.pid)

    monkeypatch.setattr(BaseProcess, "start", start)
    return started


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    return {"real": str(_folder(root / "real", _images(40, 1))),
            "fake": str(_folder(root / "fake", _images(36, 2, brightness=15))),
            "test": str(_folder(root / "test", _images(30, 3)))}


def test_one_pool_serves_all_three_sets_of_an_evaluate(sets, starts):
    assert _living_children() == []
    pooled = evaluate(sets["real"], sets["fake"], real_test=sets["test"], metrics="fid,ct", ct_cells=1, workers=2,
                      return_features=True, **PIX)
    assert len(starts) == 2  # not 2 per set: three sets, each of 4-5 batches of 8
    # closed at the end of evaluate: nothing left running
    assert multiprocessing.active_children() == [] and _living_children() == []
    assert _gone(starts, within=0)

    here = evaluate(sets["real"], sets["fake"], real_test=sets["test"], metrics="fid,ct", ct_cells=1, workers=0,
                    return_features=True, **PIX)
    assert len(starts) == 2
    assert pooled[0].values == here[0].values and set(pooled[0].values) == {"fid", "ct"}
    for a, b in zip(pooled[1:], here[1:]):
        assert a.names == b.names
        np.testing.assert_array_equal(a.features, b.features)


def test_evaluate_closes_the_pool_when_an_image_stops_it(sets, tmp_path, starts):
    bad = _folder(tmp_path / "bad", _images(20, 4))
    (bad / "012.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="012.png"):
        evaluate(sets["real"], str(bad), metrics="fid", workers=2, **PIX)
    assert len(starts) == 2 and _living_children() == []


def test_an_extractor_reuses_its_processes_until_closed(sets, starts):
    with FeatureExtractor(workers=2, **PIX) as ex:
        first = ex.extract(sets["real"])
        pids = ex._pool.pids
        second = ex.extract(sets["fake"])
        third = ex.extract(sets["real"])
        assert ex._pool.pids == pids == starts and first.timing.workers == second.timing.workers == 2
        np.testing.assert_array_equal(third.features, first.features)
    assert _living_children() == [] and _gone(pids, within=0)
    # extracting after close starts a new pool, closed again when the extractor is collected
    again = ex.extract(sets["fake"])
    assert len(starts) == 4
    np.testing.assert_array_equal(again.features, second.features)
    del ex
    assert _living_children() == []


def test_the_automatic_count_starts_once_and_is_kept(sets, starts, monkeypatch):
    """workers=None on a CPU: the first set's first batch decides (forced to 2 here); later sets
    use the processes running, without deciding again."""
    import imgdist.extraction.features as F

    asked = []

    def choose(decode_s, compute_s, device_type, cores=None):
        asked.append(device_type)
        return 2

    monkeypatch.setattr(F, "choose_workers", choose)
    result, real, fake = evaluate(sets["real"], sets["fake"], metrics="fid", return_features=True, **PIX)
    assert asked == ["cpu"] and len(starts) == 2
    assert real.timing.workers == fake.timing.workers == 2
    here = evaluate(sets["real"], sets["fake"], metrics="fid", workers=0, **PIX)
    assert result.values == here.values


def test_unreadable_images_are_skipped_and_counted_as_without_workers(tmp_path):
    images = _images(30, 5)
    folder = _folder(tmp_path / "imgs", images)
    for name in ("003.png", "017.png", "018.png"):  # in the main process's batch and in the processes'
        (folder / name).write_bytes(b"\x89PNG broken")
    pooled = imgdist.extract_features(str(folder), workers=2, on_error="skip", **PIX)
    here = imgdist.extract_features(str(folder), workers=0, on_error="skip", **PIX)
    assert pooled.timing.workers == 2
    assert [name for name, _ in pooled.skipped.items] == [name for name, _ in here.skipped.items]
    assert len(pooled.skipped.items) == 3 and pooled.skipped.items == here.skipped.items
    assert pooled.names == here.names and len(pooled) == 27
    np.testing.assert_array_equal(pooled.features, here.features)


def test_an_error_names_the_first_bad_image_and_the_pool_goes_on(tmp_path):
    folder = _folder(tmp_path / "imgs", _images(40, 6))
    (folder / "030.png").write_bytes(b"broken")
    (folder / "033.png").write_bytes(b"broken")
    good = _folder(tmp_path / "good", _images(40, 7))
    with FeatureExtractor(workers=2, **PIX) as ex:
        with pytest.raises(ImageError, match="030.png"):
            ex.extract(str(folder))
        # the stopped extraction's queued batches are skipped, not returned as this one's
        pooled = ex.extract(str(good))
    np.testing.assert_array_equal(pooled.features, imgdist.extract_features(str(good), workers=0, **PIX).features)


class SlowFirstBatches(FileSource):
    """Files whose decoding takes longer the earlier the batch: later batches finish first. Each
    load is logged, so that the test sees the order in which the processes finished."""

    def __init__(self, paths, log):
        super().__init__(paths, "slow")
        self.log = log

    def load(self, index):
        time.sleep(max(0.0, 0.06 - 0.02 * (index // 8)))
        image = super().load(index)
        with open(self.log, "a") as fh:
            fh.write(f"{index}\n")
        return image


def test_order_is_the_sources_when_batches_finish_out_of_order(tmp_path):
    folder = _folder(tmp_path / "imgs", _images(48, 8))
    paths = sorted(str(p) for p in folder.iterdir())
    log = tmp_path / "loads.log"
    pooled = FeatureExtractor(workers=2, **PIX).extract(SlowFirstBatches(paths, str(log)))
    done = [int(line) for line in log.read_text().split()]
    # batch 2 (images 16-23) was finished before batch 1 (8-15): the ordering had work to do
    assert done.index(23) < done.index(15)
    here = FeatureExtractor(workers=0, **PIX).extract(FileSource(paths, "here"))
    assert pooled.names == here.names == paths
    np.testing.assert_array_equal(pooled.features, here.features)


def test_prefetch_is_bounded(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "imgs", _images(120, 9))  # 15 batches of 8
    outstanding, most = [0], [0]
    submit, result = DecodePool.submit, DecodePool.result

    def counted_submit(self, *args):
        outstanding[0] += 1
        most[0] = max(most[0], outstanding[0])
        return submit(self, *args)

    def counted_result(self, *args):
        out = result(self, *args)
        outstanding[0] -= 1
        return out

    monkeypatch.setattr(DecodePool, "submit", counted_submit)
    monkeypatch.setattr(DecodePool, "result", counted_result)
    out = imgdist.extract_features(str(folder), workers=2, **PIX)
    assert len(out) == 120 and outstanding[0] == 0
    assert most[0] == 4  # 2 per process


class KillsItsDecoder(FileSource):
    """Decoding image 20 kills the process decoding it (as the kernel's OOM killer would)."""

    def __init__(self, paths, main_pid):
        super().__init__(paths, "killer")
        self.main_pid = main_pid

    def load(self, index):
        if index == 20 and os.getpid() != self.main_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().load(index)


def test_a_process_that_dies_is_an_error_not_a_hang(tmp_path, no_hang):
    folder = _folder(tmp_path / "imgs", _images(40, 10))
    paths = sorted(str(p) for p in folder.iterdir())
    ex = FeatureExtractor(workers=2, **PIX)
    with pytest.raises(ImgdistError, match=r"decoding process \(pid \d+\) ended unexpectedly \(signal SIGKILL"):
        ex.extract(KillsItsDecoder(paths, os.getpid()))
    assert _living_children() == []
    # the next extraction starts a new pool
    np.testing.assert_array_equal(ex.extract(str(folder)).features,
                                  imgdist.extract_features(str(folder), workers=0, **PIX).features)
    ex.close()


def _send_then_die(indices):
    """A batch as the decoding processes send it (a tensor: shared memory, its file descriptor
    fetched from the sender when the result is unpickled), from a process that is SIGKILLed
    right after sending it."""
    import threading

    import torch

    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return torch.zeros(len(indices), 3, dtype=torch.uint8)


def test_a_process_killed_after_sending_its_batch_is_the_one_line(no_hang):
    """Issue 23, item 3: the batch is on the queue, its sender dead; unpickling it cannot reach the
    sender (at 0c5d37c: ConnectionRefusedError from torch's rebuild, a traceback in 6 of 7
    tries of a SIGKILL during eval --workers 2). Now the one line that names the process."""
    import functools
    import pickle

    pool = DecodePool()
    try:
        pool.grow(1)
        job = pool.start_job(pickle.dumps(functools.partial(_send_then_die)))
        pool.submit(job, 0, [0, 1])
        deadline = time.monotonic() + 10
        while pool.healthy and time.monotonic() < deadline:  # sent, then killed
            time.sleep(0.05)
        with pytest.raises(ImgdistError, match=r"^a decoding process \(pid \d+\) ended unexpectedly \(signal "
                                               r"SIGKILL; .*rerun with --workers 0"):
            pool.result(job)
    finally:
        pool.close()
    assert _living_children() == []


def test_a_process_found_dead_between_sets_is_replaced(sets, starts):
    with FeatureExtractor(workers=2, **PIX) as ex:
        first = ex.extract(sets["real"])
        os.kill(starts[0], signal.SIGKILL)
        assert _gone(starts[:1])
        # /proc shows the killed process as a zombie while its other threads (the parent watcher)
        # are still torn down, and only then can it be reaped: wait until the pool can tell
        deadline = time.monotonic() + 10
        while ex._pool.healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        again = ex.extract(sets["real"])
    assert len(starts) == 4 and _living_children() == []
    np.testing.assert_array_equal(again.features, first.features)


def test_processes_ignore_stop_signals(sets):
    """Ctrl-C or a hangup reaches the whole process group: the main process handles it (cli.main)
    and closes the pool; the decoding processes must not die from it first."""
    with FeatureExtractor(workers=2, **PIX) as ex:
        first = ex.extract(sets["real"])
        for pid in ex._pool.pids:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                os.kill(pid, signum)
        time.sleep(0.5)
        assert all(_state(pid) not in (None, "Z") for pid in ex._pool.pids)
        np.testing.assert_array_equal(ex.extract(sets["real"]).features, first.features)


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from imgdist.extraction.features import FeatureExtractor
    ex = FeatureExtractor("pixels", mode="native", progress=False, batch_size=8, workers=2)
    ex.extract(sys.argv[1])
    print(" ".join(map(str, ex._pool.pids)), flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_no_process_outlives_the_interpreter(sets, end):
    """Without close(): a normal exit stops the pool (and does not hang on it), and a SIGKILLed
    parent's processes notice within a second and end."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, sets["real"], end], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == (0 if end == "exit" else -signal.SIGKILL), proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    assert _gone(pids, within=0.1 if end == "exit" else 5)
