"""Two gloo processes on CPU give exactly the single-process result."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import imgdist
from imgdist.evaluation.distributed import all_reduce_stats
from imgdist.extraction.stats import GaussianStats


def _images(seed, n=37):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        real, fake = _images(0), _images(1)
        # batches of 8: each rank extracts its share (with the default 50 rank 1's would be empty,
        # the case the torchrun command-line test covers)
        result = imgdist.evaluate(real, fake, metrics="fid,kid,prdc", backbone="pixels", mode="native",
                                  kid_subset_size=20, kid_subsets=5, batch_size=8, distributed=True, progress=False)
        ev = imgdist.Evaluator(backbone="pixels", mode="native", metrics="fid,kid", kid_subset_size=20,
                               kid_subsets=5)
        ev.update(real=real[rank::world])
        ev.update(fake=fake[rank::world])
        streamed = ev.compute()  # every rank's updates together
        assert ev.compute().values == streamed.values  # and this rank's own state is unchanged by it
        stats = GaussianStats().update(real[rank::world].reshape(-1, 108).astype(np.float64))
        merged = all_reduce_stats(stats)
        # a large common offset: the gathered (n, mean, centred scatter) states merge without loss
        shifted = all_reduce_stats(GaussianStats().update(real[rank::world].reshape(-1, 108) + 1e6))
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), shifted_mu=shifted.mu, shifted_sigma=shifted.sigma,
                 values=np.array([result.values[k] for k in ("fid", "kid", "precision", "recall",
                                                             "density", "coverage")]),
                 streamed_fid=streamed.values["fid"], n=merged.n, mu=merged.mu, sigma=merged.sigma)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    real, fake = _images(0), _images(1)
    single = imgdist.evaluate(real, fake, metrics="fid,kid,prdc", backbone="pixels", mode="native",
                              kid_subset_size=20, kid_subsets=5, progress=False)
    expected = np.array([single.values[k] for k in ("fid", "kid", "precision", "recall", "density", "coverage")])
    flat = real.reshape(-1, 108).astype(np.float64)
    for rank in range(world):
        got = np.load(tmp_path / f"rank{rank}.npz")
        # features are gathered back in source order, so even KID's seeded subsets coincide;
        # FID sees sums added in another order, amplified by the singular covariance (N < d)
        np.testing.assert_allclose(got["values"][1:], expected[1:], rtol=1e-12)
        assert got["values"][0] == pytest.approx(expected[0], rel=1e-8)
        assert float(got["streamed_fid"]) == pytest.approx(single.values["fid"], rel=1e-8)
        assert int(got["n"]) == len(real)
        np.testing.assert_allclose(got["mu"], flat.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(got["sigma"], np.cov(flat, rowvar=False), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got["shifted_mu"] - 1e6, flat.mean(axis=0), rtol=0, atol=1e-8)
        np.testing.assert_allclose(got["shifted_sigma"], np.cov(flat, rowvar=False), rtol=1e-9, atol=1e-9)
    # merged in rank order on every rank: identical statistics everywhere, bit for bit
    first, second = (np.load(tmp_path / f"rank{rank}.npz") for rank in range(world))
    for key in ("mu", "sigma", "shifted_mu", "shifted_sigma"):
        np.testing.assert_array_equal(first[key], second[key])


def test_needs_initialised_process_group():
    with pytest.raises(imgdist.ImgdistError, match="torchrun"):
        all_reduce_stats(GaussianStats(2))


# ---------------------------------------------------------------- the metrics' work split over ranks

def _protocol_sets(n=2300, d=12):
    rng = np.random.default_rng(7)
    real = rng.normal(size=(n, d)) + 3.0
    fake = rng.normal(size=(n, d)) * 1.1 + 3.2
    return real.astype(np.float32), fake.astype(np.float32)


PROTOCOL = dict(metrics="fid,kid,prdc,fid-inf", kid_subsets=6, kid_subset_size=300, pr_k=3, dc_k=5,
                fid_inf_sizes=(400, 800, 1600, 2300))
KEYS = ("fid", "kid", "precision", "recall", "density", "coverage", "fid-inf")


def _small_blocks(monkeypatch=None):
    """Distance blocks of 100 rows, so that two ranks share 23 of them."""
    import importlib

    prdc = importlib.import_module("imgdist.metrics.prdc")  # the package attribute is the function
    bytes_ = 8 * 100 * 2300
    if monkeypatch is None:
        prdc.DEFAULT_BLOCK_BYTES = bytes_
    else:
        monkeypatch.setattr(prdc, "DEFAULT_BLOCK_BYTES", bytes_)


def _features_worker(rank, world, init_file, out_dir):
    from imgdist.evaluation.distributed import evaluate_features_distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _small_blocks()
        real, fake = _protocol_sets()
        result = evaluate_features_distributed(real, fake, **PROTOCOL)
        np.savez(os.path.join(out_dir, f"features{rank}.npz"), values=np.array([result.values[k] for k in KEYS]),
                 kid_std=result.stds["kid"])
    finally:
        dist.destroy_process_group()


def test_features_protocol_split_over_two_ranks_equals_one_process(tmp_path, monkeypatch):
    from imgdist.evaluation.run import evaluate_features
    from imgdist.extraction.features import Features

    world = 2
    mp.spawn(_features_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    _small_blocks(monkeypatch)
    real, fake = _protocol_sets()
    single = evaluate_features(Features.from_array(real), Features.from_array(fake), **PROTOCOL)
    expected = np.array([single.values[k] for k in KEYS])
    for rank in range(world):
        got = np.load(tmp_path / f"features{rank}.npz")
        assert got["values"][0] == pytest.approx(expected[0], rel=1e-8)  # statistics merged in another order
        np.testing.assert_array_equal(got["values"][1:], expected[1:])   # the same blocks and subsets
        assert float(got["kid_std"]) == single.stds["kid"]


def test_torchrun_command_line_equals_one_process(tmp_path):
    import json
    import subprocess
    import sys

    from PIL import Image

    for side, seed in (("real", 0), ("fake", 1)):
        folder = tmp_path / side
        folder.mkdir()
        for i, image in enumerate(_images(seed)):
            Image.fromarray(image).save(folder / f"{i:02d}.png")
    args = ["eval", str(tmp_path / "real"), str(tmp_path / "fake"), "--backbone", "pixels", "--resize-mode",
            "native", "--metrics", "fid,kid,prdc", "--kid-subset-size", "20", "--kid-subsets", "5", "--json",
            "--no-progress", "--no-cache"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    many = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "imgdist", *args, "--per-image", str(tmp_path / "many.csv")],
                          capture_output=True, text=True, env=env, timeout=300)
    one = subprocess.run([sys.executable, "-m", "imgdist", *args, "--per-image", str(tmp_path / "one.csv")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert many.returncode == 0 and one.returncode == 0, many.stderr[-2000:]
    # the per-image table under torchrun: rank 0 writes the gathered rows, in source order
    assert (tmp_path / "many.csv").read_text() == (tmp_path / "one.csv").read_text()
    got, expected = json.loads(many.stdout), json.loads(one.stdout)  # rank 0 alone printed: one document
    values = {k: v["value"] for k, v in got["metrics"].items()}
    reference = {k: v["value"] for k, v in expected["metrics"].items()}
    assert values.keys() == reference.keys()
    for label, value in values.items():
        if label.startswith("FD"):
            assert value == pytest.approx(reference[label], rel=1e-8)
        else:
            assert value == reference[label], label
    assert got["details"]["processes"] == 2
    # the table: warnings on stderr as imgdist: warning: lines (once, from rank 0), as in one process
    table = [a for a in args if a != "--json"]
    many = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "imgdist", *table], capture_output=True, text=True, env=env, timeout=300)
    one = subprocess.run([sys.executable, "-m", "imgdist", *table], capture_output=True, text=True, env=env,
                         timeout=300)

    def warnings_of(proc):
        return [line for line in proc.stderr.splitlines() if line.startswith("imgdist: warning:")]

    assert many.returncode == 0 and "warning" not in many.stdout
    assert warnings_of(many) == warnings_of(one) == [f"imgdist: warning: {w}" for w in expected["warnings"]]
    assert warnings_of(one), "the sets are chosen to give a singular-covariance warning"


def test_torchrun_environment_is_checked(tmp_path, monkeypatch, capsys):
    from imgdist.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    code = main(["eval", str(tmp_path), str(tmp_path), "--per-class", "--backbone", "pixels"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "WORLD_SIZE is set but RANK is not" in err[0]
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert main(["eval", str(tmp_path), str(tmp_path), "--backbone", "pixels"]) == 2
    assert "WORLD_SIZE='two'" in capsys.readouterr().err


# ---------------------------------------------------------------- devices and backends per rank

def test_backend_and_collective_device():
    from imgdist.evaluation.distributed import backend_for, collective_device

    assert backend_for("cuda:3") == "nccl"
    assert backend_for("cpu") == backend_for("mps") == "gloo"
    # NCCL reduces CUDA tensors only: the statistics must travel on this rank's GPU
    assert collective_device("nccl", 3) == "cuda:3"
    assert collective_device("gloo", 3) == "cpu"
    assert collective_device("cpu:gloo,cuda:nccl", 1) == "cpu"  # a mixed group takes CPU tensors via gloo


def test_rank_device():
    from imgdist.evaluation.distributed import rank_device

    assert rank_device("cuda", 5, 8) == "cuda:5"
    assert rank_device("cuda", 3, 1) == "cuda:0"      # the launcher gave each process one GPU
    assert rank_device("cuda:0", 2, 8) == "cuda:0"    # explicit: the user's; shared GPUs refused later
    assert rank_device("cpu", 2, 8) == "cpu"
    with pytest.raises(imgdist.ImgdistError, match=r"LOCAL_RANK=4 has no GPU.*--nproc_per_node 4"):
        rank_device("cuda", 4, 4)


def test_shared_gpus_and_rank_lists():
    from imgdist.evaluation.distributed import format_ranks, shared_gpus

    assert shared_gpus([None, None]) == []
    assert shared_gpus([["a", "u0"], ["a", "u1"], ["b", "u0"]]) == []  # uuids are per host here
    assert shared_gpus([["a", "u0"], ["a", "u1"], ["a", "u0"], ["a", "u0"]]) == [[0, 2, 3]]
    assert format_ranks([7, 1, 2, 3, 5]) == "1-3, 5, 7"
    assert format_ranks([0]) == "0"


def _torchrun_env(monkeypatch, rank, local, world, port=29500):
    for name, value in (("RANK", rank), ("LOCAL_RANK", local), ("WORLD_SIZE", world),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port)):
        monkeypatch.setenv(name, str(value))


class _Joined:
    """What the rendezvous hands over once every rank has joined (no TCP store here)."""

    def __init__(self):
        self.timeout = None

    def set_timeout(self, timeout):
        self.timeout = timeout


@pytest.mark.parametrize("asked, cuda, count, local, device, backend", [
    ("auto", True, 4, 2, "cuda:2", "nccl"),
    ("cuda", True, 8, 7, "cuda:7", "nccl"),
    ("auto", False, 0, 1, "cpu", "gloo"),
    ("cpu", True, 4, 3, "cpu", "gloo"),
])
def test_init_from_environment_picks_rank_device_and_backend(monkeypatch, asked, cuda, count, local, device, backend):
    """Each rank on cuda:LOCAL_RANK with NCCL where CUDA is, gloo on the CPU (CUDA faked here)."""
    import imgdist.evaluation.distributed as D

    _torchrun_env(monkeypatch, local, local, 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    chosen, joined = {}, _Joined()
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.setdefault("set", str(d)))
    monkeypatch.setattr(D, "_gpu_claim", lambda d: ["host", f"uuid-of-{d}"] if d.startswith("cuda") else None)

    def rendezvous(addr, port, rank, world, timeout, claim):
        chosen.update(rank=rank, timeout=timeout, claim=claim)
        return joined, [claim] + [None] * (world - 1)

    monkeypatch.setattr(D, "_rendezvous", rendezvous)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: chosen.update(backend=backend, **kw))
    monkeypatch.delenv("IMGDIST_DIST_TIMEOUT", raising=False)
    assert D.init_from_environment(asked) == device
    assert chosen["backend"] == backend and chosen["rank"] == local and chosen["world_size"] == 8
    assert chosen.get("set") == (device if cuda and device != "cpu" else None)
    assert chosen["timeout"] == D.DIST_TIMEOUT
    assert joined.timeout.total_seconds() == 1800  # collectives after the rendezvous keep torch's patience


def test_ranks_sharing_a_gpu_are_refused(monkeypatch):
    import imgdist.evaluation.distributed as D

    _torchrun_env(monkeypatch, 1, 1, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(D, "_gpu_claim", lambda d: ["node7", "GPU-0"])
    monkeypatch.setattr(D, "_rendezvous", lambda *a: (_Joined(), [["node7", "GPU-0"], ["node7", "GPU-0"]]))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    with pytest.raises(imgdist.ImgdistError, match=r"ranks 0-1 would share one GPU \(host node7.*--device cuda"):
        D.init_from_environment("cuda:0")


def test_dist_timeout_from_flag_or_environment(monkeypatch):
    from imgdist.evaluation.distributed import DIST_TIMEOUT, dist_timeout

    monkeypatch.delenv("IMGDIST_DIST_TIMEOUT", raising=False)
    assert dist_timeout() == DIST_TIMEOUT == 300
    monkeypatch.setenv("IMGDIST_DIST_TIMEOUT", "45")
    assert dist_timeout() == 45 and dist_timeout(7) == 7
    with pytest.raises(imgdist.ImgdistError, match=r"dist_timeout \(--dist-timeout\) must be at least 1"):
        dist_timeout(0)
    monkeypatch.setenv("IMGDIST_DIST_TIMEOUT", "soon")
    with pytest.raises(imgdist.ImgdistError, match="IMGDIST_DIST_TIMEOUT='soon'"):
        dist_timeout()


# ---------------------------------------------------------------- a rank whose peers never come

def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank, world, missing", [(1, 2, "rank(s) 0 "), (0, 2, "rank(s) 1 "), (0, 4, "rank(s) 1-3 ")])
def test_missing_ranks_are_one_line_within_the_timeout(tmp_path, rank, world, missing):
    """Guard row: torch's 30 minutes, then a C++ stack trace and a retry, were the old way; now the
    CLI's whole stderr is one line naming the ranks that never joined, exit 2."""
    import subprocess
    import sys
    import time

    for side in ("real", "fake"):
        (tmp_path / side).mkdir()
    env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    env.pop("IMGDIST_DIST_TIMEOUT", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imgdist", "eval", str(tmp_path / "real"), str(tmp_path / "fake"),
                           "--backbone", "pixels", "--no-progress", "--dist-timeout", "2"],
                          capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.monotonic() - start
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("imgdist: error: torchrun: " + missing), lines[:5]
    assert "did not join within 2 s (127.0.0.1:" in lines[0] and "--dist-timeout" in lines[0]
    assert elapsed < 20, elapsed  # 2 s of waiting plus a cold start of python and torch on a busy machine
