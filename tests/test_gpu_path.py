"""The extraction engine's GPU path, tested with the CPU as the device (issue 16).

* strict fp32: TF32 is off inside every extraction and the caller's flags come back afterwards;
  ``tf32`` is an opt-in precision, labelled and keyed apart;
* features do not depend on the batch size beyond fp32 rounding;
* the streaming statistics accumulated on the device equal the numpy host path;
* a CUDA out-of-memory error halves the batch; one decoding pool serves a whole command;
* fp16 activations that overflow are refused in one line;
* SIGTERM and SIGHUP keep every finished batch in the cache.

References are independent: float64 numpy recomputations, or the same extraction run another way
(one batch size against another, host statistics against device statistics).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

import imgdist
import imgdist.extraction.stats
from imgdist.extraction import features as F
from imgdist.extraction import scheduling
from imgdist.extraction.backbones.custom import custom_backbone
from imgdist.cli import main
from imgdist.errors import ImgdistError, ProvenanceError
from imgdist.extraction.features import FeatureExtractor
from imgdist.extraction.provenance import Provenance
from imgdist.evaluation.results import metric_label

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 8


def _images(n, seed, brightness=0, size=SIZE):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120 + brightness, 40, (n, size, size, 3)), 0, 255).astype(np.uint8)


def _flags():
    return (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
            torch.get_float32_matmul_precision())


class FlagRecorder(nn.Module):
    """Records the TF32 flags each time the network runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.seen = []

    def forward(self, x):
        self.seen.append(_flags())
        return self.conv(x)


@pytest.fixture
def tf32_on():
    """The caller's flags set to TF32 everywhere (the opposite of strict fp32); put back after."""
    before = _flags()
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    torch.backends.cuda.matmul.allow_tf32 = True
    yield _flags()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before[:2]
    torch.set_float32_matmul_precision(before[2])


# ------------------------------------------------------------------ 1. fp32 means fp32


def test_tf32_is_off_during_extraction_and_the_callers_flags_come_back(tf32_on):
    assert tf32_on == (True, True, "high")
    net = FlagRecorder()
    ex = FeatureExtractor(custom_backbone(net, input_size=SIZE), device="cpu", progress=False, workers=0,
                          batch_size=4)
    net.seen.clear()  # custom_backbone ran it once to learn the feature size
    ex.extract(_images(10, 0))
    ex.embed_images(_images(3, 1))
    assert net.seen and set(net.seen) == {(False, False, "highest")}
    assert _flags() == (True, True, "high")


def test_the_callers_flags_come_back_after_an_error(tf32_on):
    class Broken(FlagRecorder):
        def forward(self, x):
            super().forward(x)
            raise RuntimeError("broken network")

    net = Broken()
    ex = FeatureExtractor(custom_backbone(net, input_size=SIZE, feature_dim=6), device="cpu", progress=False,
                          workers=0, batch_size=4)
    with pytest.raises(RuntimeError, match="broken network"):
        ex.extract(_images(10, 0))
    assert net.seen == [(False, False, "highest")]
    assert _flags() == (True, True, "high")


def test_tf32_is_refused_on_cpu_in_one_line(tmp_path, capsys):
    with pytest.raises(ImgdistError, match=r"^precision \(--precision\) tf32 is only offered on NVIDIA GPUs"):
        FeatureExtractor(custom_backbone(FlagRecorder(), input_size=SIZE), device="cpu", precision="tf32")
    code = main(["stats", str(tmp_path), "-o", str(tmp_path / "s.npz"), "--precision", "tf32", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "tf32 is only offered on NVIDIA GPUs" in err, err


def test_tf32_turns_tf32_on_and_is_labelled_and_keyed_apart(monkeypatch, tmp_path):
    # as on a GPU: the CPU refusal is what keeps tf32 off a CPU, so it is lifted here
    monkeypatch.setattr(F, "check_cpu_precision", lambda precision: None)
    net = FlagRecorder()
    backbone = custom_backbone(net, input_size=SIZE)
    fp32 = FeatureExtractor(backbone, device="cpu", progress=False, workers=0, cache=str(tmp_path))
    tf32 = FeatureExtractor(backbone, device="cpu", progress=False, workers=0, cache=str(tmp_path),
                            precision="tf32")
    assert tf32.dtype == torch.float32
    before = _flags()
    tf32.embed_images(_images(2, 0))
    assert net.seen[-1] == (True, True, "high") and _flags() == before
    assert tf32.provenance.precision == "tf32" and tf32.provenance.reduced_precision
    assert tf32._cache_path() != fp32._cache_path() and "tf32" in tf32._extractor_id()
    with pytest.raises(ProvenanceError, match="precision fp32 vs tf32"):
        fp32.provenance.check_compatible(tf32.provenance, "FID")
    published = "6726825d" + "0" * 56
    inception = Provenance(backbone="inception", weights_sha256=published, resize_mode="pytorch-fid",
                           feature_layer="pool", precision="tf32")
    assert metric_label("fid", inception) == "FD[inception,tf32]"
    assert metric_label("fid", Provenance(**{**inception.to_dict(), "precision": "fp32"})) == "FID"


def _smooth_images(n, seed, size=32):
    """Images with structure at several scales (a network's features then vary between images)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 220, (n, 4, 4, 3))
    up = np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)
    return np.clip(np.rint(up + rng.normal(0, 20, up.shape)), 0, 255).astype(np.uint8)


@pytest.mark.filterwarnings("ignore:60 images for 1280")
def test_batch_size_moves_fd_by_fp32_rounding_only():
    """Guard (issue 16): batch 7 and batch 40 give FD within 1e-6 relative."""
    real, fake = _smooth_images(60, 1), _smooth_images(60, 2)
    fds = []
    for batch in (7, 40):
        ex = FeatureExtractor("efficientnet-lite0", device="cpu", progress=False, workers=0, batch_size=batch)
        a, b = ex.extract(real, keep_features=False), ex.extract(fake, keep_features=False)
        fds.append(a.stats.frechet_distance(b.stats))
    assert fds[0] > 1.0
    assert math.isclose(fds[0], fds[1], rel_tol=1e-6), fds


# ------------------------------------------------------------------ 2. statistics on the device


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_device_statistics_equal_the_host_path(offset):
    rng = np.random.default_rng(3)
    # spread ~100: at an offset of 1e6 a float64 mean is known to 1.2e-10 (its ulp), which moves
    # the covariance of features of spread ~3 by ~5e-12 in either path (each rounds differently)
    x = rng.normal(size=(257, 12)) @ rng.normal(size=(12, 12)) * 30 + offset
    dev = imgdist.extraction.stats.DeviceStats()
    for start in range(0, len(x), 40):  # uneven batches: the pairwise update is exercised
        dev.update(torch.from_numpy(x[start:start + 40]))
    host = imgdist.extraction.stats.GaussianStats()
    for start in range(0, len(x), 40):
        host.update(x[start:start + 40])
    got = dev.to_host()
    centred = x - x.mean(axis=0)  # independent two-pass float64 reference
    assert got.n == 257
    assert _rel(got.mu, host.mu) <= 1e-12 and _rel(got.sigma, host.sigma) <= 1e-12
    # against the two-pass formula: float64 rounding of the offset itself (3.7e-12 at 1e6)
    assert _rel(got.mu, x.mean(axis=0)) <= 1e-12 and _rel(got.sigma, centred.T @ centred / 256) <= 1e-10


class Offset(nn.Module):
    """A feature map with a large common offset: a one-pass sum of squares would lose every digit."""

    def __init__(self, offset):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.offset = offset

    def forward(self, x):
        return self.conv(x) * 1000 + self.offset  # spread ~100, well above float32 steps at 1e6 (0.06)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_extraction_statistics_equal_host_statistics_of_its_features(offset):
    backbone = custom_backbone(Offset(offset), input_size=SIZE)
    ex = FeatureExtractor(backbone, device="cpu", progress=False, workers=0, batch_size=7)
    real, fake = ex.extract(_images(40, 0)), ex.extract(_images(33, 1, brightness=20))
    for feats in (real, fake):
        host = imgdist.extraction.stats.GaussianStats().update(feats.features)  # float32 features, float64 sums
        assert feats.stats.n == len(feats.features)
        assert _rel(feats.stats.mu, host.mu) <= 1e-12 and _rel(feats.stats.sigma, host.sigma) <= 1e-12
    host_fd = imgdist.extraction.stats.GaussianStats().update(real.features).frechet_distance(
        imgdist.extraction.stats.GaussianStats().update(fake.features))
    assert host_fd > 0 and math.isclose(real.stats.frechet_distance(fake.stats), host_fd, rel_tol=1e-12)


def test_statistics_only_runs_send_no_features_to_the_host():
    ex = FeatureExtractor(custom_backbone(Offset(0.0), input_size=SIZE), device="cpu", progress=False, workers=0,
                          batch_size=7)
    kept, only_stats = ex.extract(_images(20, 0)), ex.extract(_images(20, 0), keep_features=False)
    assert only_stats.features is None
    assert _rel(only_stats.stats.sigma, kept.stats.sigma) == 0.0
    assert ex._launch(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), False, host=False).result() == (None, None)


# ------------------------------------------------------------------ 3. batch size by device


def test_automatic_batch_size_by_device(monkeypatch):
    from imgdist.extraction.backbones import get_spec

    spec = get_spec("inception")
    prep = spec.preprocessing(None)
    assert scheduling.choose_batch_size(spec, prep, torch.device("cpu"), "fp32") == 50
    ex = FeatureExtractor(custom_backbone(Offset(0.0), input_size=SIZE), device="cpu", progress=False)
    assert ex.batch_size == 50
    # a GPU with 8 GiB free: 0.8 * 8 GiB / 16 MB per image = 409 -> the knee; 2 GiB free -> 102
    for free, expected in ((8 * 2**30, 256), (2 * 2**30, 102), (2**20, 1)):
        monkeypatch.setattr(scheduling, "available_memory", lambda device, free=free: free)
        assert scheduling.choose_batch_size(spec, prep, torch.device("cuda"), "fp32") == expected
    monkeypatch.setattr(scheduling, "available_memory", lambda device: 2 * 2**30)
    assert scheduling.choose_batch_size(spec, prep, torch.device("cuda"), "bf16") == 204  # half the activations


def test_out_of_memory_halves_the_batch_and_changes_nothing_beyond_rounding(monkeypatch):
    backbone = custom_backbone(Offset(0.0), input_size=SIZE)
    images = _images(45, 4)
    whole = FeatureExtractor(backbone, device="cpu", progress=False, workers=0, batch_size=20).extract(images)
    ex = FeatureExtractor(backbone, device="cpu", progress=False, workers=0, batch_size=20)
    network, sizes = ex._network, []

    def limited(batch, outputs):  # as a GPU with memory for 6 images at a time
        sizes.append(len(batch))
        if len(batch) > 6:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return network(batch, outputs)

    monkeypatch.setattr(ex, "_network", limited)
    with pytest.warns(imgdist.errors.ImgdistWarning) as caught:
        halved = ex.extract(images)
    messages = [str(w.message) for w in caught]
    assert messages == ["cpu ran out of memory with batches of 20 images; going on with 10 (numbers change by "
                        "fp32 rounding only); use --batch-size 10 to start there",
                        "cpu ran out of memory with batches of 10 images; going on with 5 (numbers change by "
                        "fp32 rounding only); use --batch-size 5 to start there"]
    assert max(sizes[sizes.index(5):]) == 5 and ex._fits == 5
    np.testing.assert_allclose(halved.features, whole.features, rtol=1e-5, atol=1e-3)
    assert math.isclose(halved.stats.frechet_distance(ex.extract(_images(30, 5)).stats),
                        whole.stats.frechet_distance(ex.extract(_images(30, 5)).stats), rel_tol=1e-6)


def test_out_of_memory_with_one_image_is_one_line(monkeypatch):
    ex = FeatureExtractor(custom_backbone(Offset(0.0), input_size=SIZE), device="cpu", progress=False, workers=0,
                          batch_size=2)

    def no_memory(batch, outputs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(ex, "_network", no_memory)
    with pytest.warns(imgdist.errors.ImgdistWarning), \
            pytest.raises(ImgdistError, match="^custom on cpu: out of memory with a single image"):
        ex.extract(_images(4, 0))


# ------------------------------------------------------------------ 6. SIGTERM and SIGHUP

SLOW_CLI = textwrap.dedent("""
    import sys, time
    from imgdist.extraction import features
    from imgdist.cli import main

    network = features.FeatureExtractor._network

    def slow(self, batch, outputs):  # a slow network: the signal comes while batches are computed
        time.sleep(0.15)
        return network(self, batch, outputs)

    features.FeatureExtractor._network = slow
    sys.exit(main(sys.argv[1:]))
""")


def _cached_rows(folder):
    import sqlite3

    paths = [os.path.join(folder, p) for p in os.listdir(folder) if p.endswith(".sqlite")] \
        if os.path.isdir(folder) else []
    if not paths:
        return 0
    try:
        with sqlite3.connect(f"file:{paths[0]}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    except sqlite3.Error:  # not created yet, or locked for a moment
        return 0


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_keep_every_finished_batch(tmp_path, signame):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(_images(40, 7)):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    cache = str(tmp_path / "cache")
    args = [sys.executable, "-c", SLOW_CLI, "stats", str(folder), "-o", str(tmp_path / "s.npz"), "--backbone",
            "pixels", "--resize-mode", "native", "--batch-size", "4", "--workers", "0", "--no-progress",
            "--cache-dir", cache]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _cached_rows(cache) < 4:  # the first batch is computed and committed
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.02)
    signum = getattr(signal, signame)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert err.count("\n") == 1 and err.startswith(f"imgdist: interrupted ({signame}); features already"), err
    rows = _cached_rows(cache)
    assert 4 <= rows < 40 and rows % 4 == 0  # whole batches only, none lost after the first


# ------------------------------------------------------------------ 5. fp16 safe or refused


class Overflows(nn.Module):
    """Activations beyond fp16's range (65504) for every image, finite in fp32."""

    def forward(self, x):
        return (x.float().abs() + 1).to(x.dtype).mean(dim=(2, 3), keepdim=True) * 300 * 300


def test_fp16_overflow_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(F, "check_cpu_precision", lambda precision: None)  # as on a GPU
    backbone = custom_backbone(Overflows(), input_size=SIZE, feature_dim=3)
    fp32 = FeatureExtractor(backbone, device="cpu", progress=False, workers=0, batch_size=4).extract(_images(8, 0))
    assert np.isfinite(fp32.features).all()
    ex = FeatureExtractor(backbone, device="cpu", progress=False, workers=0, batch_size=4, precision="fp16")
    with pytest.raises(ImgdistError) as info:
        ex.extract(_images(8, 0))
    assert str(info.value) == ("custom's fp16 activations overflow (non-finite features; first image of the "
                               "batch: <array>[0]); use --precision bf16")
