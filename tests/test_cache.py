"""The feature cache as untrusted input (imgdist.extraction.cache).

Damaged rows, damaged files, locks, unusable folders, concurrent writers and a run killed in the
middle of a batch: every case must end with the numbers of a run without the cache (to 1e-9
relative), with at most one warning per extraction naming the cache, and never a traceback.

References: features of the ``pixels`` backbone at native size are ``img / 255`` in C, H, W order,
computed here without imgdist; set-level values (FID, KID, precision/recall, density/coverage) come
from the same evaluation with ``cache=False``. Damage is done with the sqlite3 module and plain file
writes, seeded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from PIL import Image

import imgdist
import imgdist.extraction.cache as cache_module
from imgdist.extraction.cache import FeatureCache, row_checksum
from imgdist.cli import main
from imgdist.errors import ImageError, ImgdistWarning
from imgdist.extraction.features import FeatureExtractor

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, N = 4, 16  # 4 x 4 images: d = 48, every run takes milliseconds
EVAL = dict(backbone="pixels", mode="native", metrics="fid,kid,prdc", kid_subsets=20, kid_subset_size=8,
            pr_k=3, dc_k=3, progress=False, workers=0, batch_size=4)
PIX = ["--backbone", "pixels", "--resize-mode", "native", "--metrics", "fid,kid,prdc", "--kid-subsets", "20",
       "--kid-subset-size", "8", "--pr-k", "3", "--dc-k", "3", "--batch-size", "4", "--workers", "0",
       "--no-progress", "--json"]


def _images(n, seed, brightness=0.0, size=SIZE):
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 190, (n, 1, 1, 3)) + brightness
    return np.clip(np.rint(base + rng.normal(0, 30, (n, size, size, 3))), 0, 255).astype(np.uint8)


def _native(images):
    return (images.astype(np.float32) / np.float32(255)).transpose(0, 3, 1, 2).reshape(len(images), -1)


def _write(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"img_{i:03d}.png")
    return str(folder)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    real, fake = _images(N, 1), _images(N, 2, brightness=15)
    return {"root": root, "real": real, "fake": fake, "real_dir": _write(root / "real", real),
            "fake_dir": _write(root / "fake", fake)}


def _evaluate(sets, cache):
    """(metric values, messages of the ImgdistWarnings the extraction gave)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = imgdist.evaluate(sets["real_dir"], sets["fake_dir"], cache=cache, **EVAL)
    return result.values, [str(w.message) for w in caught if issubclass(w.category, ImgdistWarning)]


def _extract(folder, cache, **kwargs):
    """(Features, warning messages) of one extraction on the pixels backbone at native size."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ext = FeatureExtractor("pixels", mode="native", progress=False, workers=0, batch_size=4, cache=cache)
        feats = ext.extract(folder, **kwargs)
    return feats, [str(w.message) for w in caught if issubclass(w.category, ImgdistWarning)]


def _assert_same(values, reference):
    assert values.keys() == reference.keys()
    for key, ref in reference.items():
        assert math.isclose(values[key], ref, rel_tol=1e-9, abs_tol=1e-12), (key, values[key], ref)


@pytest.fixture(scope="module")
def reference(sets):
    values, messages = _evaluate(sets, False)
    assert not messages and values["fid"] > 1.0
    return values


@pytest.fixture(scope="module")
def built(sets, tmp_path_factory):
    """A sound cache of both sets, built once; tests damage copies of it."""
    folder = tmp_path_factory.mktemp("built")
    _evaluate(sets, str(folder))
    (path,) = [p for p in folder.iterdir() if p.suffix == ".sqlite"]
    return path


@pytest.fixture
def cache(built, tmp_path):
    """(folder, database file): a fresh copy of the sound cache."""
    folder = tmp_path / "cache"
    folder.mkdir()
    shutil.copy(built, folder / built.name)
    return str(folder), str(folder / built.name)


def _sql(db, statement, params=()):
    con = sqlite3.connect(db)
    with con:
        con.execute(statement, params)
    con.close()


def _rows(db):
    con = sqlite3.connect(db)
    rows = {r[0]: r[1:] for r in con.execute("SELECT key, feat, feat_len, logits, logits_len, checksum "
                                              "FROM features ORDER BY key")}
    con.close()
    return rows


def _keys_of(folder):
    import hashlib

    return [hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder))]


# ------------------------------------------------------------------ damaged rows


def _random_bytes(rng, db, keys):
    feat = bytearray(_rows(db)[keys[0]][0])
    at = int(rng.integers(0, len(feat) - 64))
    feat[at:at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    _sql(db, "UPDATE features SET feat = ? WHERE key = ?", (bytes(feat), keys[0]))
    return 1


def _one_float(rng, db, keys):
    feat = np.frombuffer(_rows(db)[keys[0]][0], np.float32).copy()
    feat[int(rng.integers(0, len(feat)))] = 0.5
    _sql(db, "UPDATE features SET feat = ? WHERE key = ?", (feat.tobytes(), keys[0]))
    return 1


def _truncated(rng, db, keys):
    feat = _rows(db)[keys[0]][0]
    _sql(db, "UPDATE features SET feat = ? WHERE key = ?", (feat[:int(rng.integers(0, len(feat)))], keys[0]))
    return 1


def _truncated_with_its_length(rng, db, keys):
    feat = _rows(db)[keys[0]][0]
    cut = 4 * int(rng.integers(1, len(feat) // 4))
    _sql(db, "UPDATE features SET feat = ?, feat_len = ? WHERE key = ?", (feat[:cut], cut // 4, keys[0]))
    return 1


def _swapped(rng, db, keys):
    rows = _rows(db)
    a, b = keys[0], keys[1]
    for mine, theirs in ((a, b), (b, a)):
        _sql(db, "UPDATE features SET feat = ?, feat_len = ?, logits = ?, logits_len = ?, checksum = ? "
                 "WHERE key = ?", (*rows[theirs], mine))
    return 2


def _copied(rng, db, keys):
    rows = _rows(db)
    _sql(db, "UPDATE features SET feat = ?, feat_len = ?, logits = ?, logits_len = ?, checksum = ? "
             "WHERE key = ?", (*rows[keys[1]], keys[0]))
    return 1


def _nan_with_a_forged_checksum(rng, db, keys):
    # the checksum is right, so only the finiteness check can catch it
    feat = np.frombuffer(_rows(db)[keys[0]][0], np.float32).copy()
    feat[int(rng.integers(0, len(feat)))] = np.nan
    data = feat.tobytes()
    _sql(db, "UPDATE features SET feat = ?, checksum = ? WHERE key = ?",
         (data, row_checksum(keys[0], data, len(feat), None, None), keys[0]))
    return 1


def _text_instead_of_a_blob(rng, db, keys):
    _sql(db, "UPDATE features SET feat = 'garbage', feat_len = 'x' WHERE key = ?", (keys[0],))
    return 1


def _checksum_garbled(rng, db, keys):
    _sql(db, "UPDATE features SET checksum = randomblob(16) WHERE key = ?", (keys[0],))
    return 1


ROW_FAULTS = [_random_bytes, _one_float, _truncated, _truncated_with_its_length, _swapped, _copied,
              _nan_with_a_forged_checksum, _text_instead_of_a_blob, _checksum_garbled]


@pytest.mark.parametrize("fault", ROW_FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_damaged_row_is_dropped_recomputed_and_rewritten(sets, cache, fault):
    folder, db = cache
    keys = _keys_of(sets["real_dir"])
    dropped = fault(np.random.default_rng(0), db, keys[2:])
    feats, messages = _extract(sets["real_dir"], folder)
    np.testing.assert_array_equal(feats.features, _native(sets["real"]))
    # the statistics hold the recomputed rows (mean merged batch by batch: equal to rounding)
    np.testing.assert_allclose(feats.stats.mu, _native(sets["real"]).astype(np.float64).mean(axis=0), rtol=1e-13)
    assert feats.cached == N - dropped
    assert messages == [f"feature cache {db}: dropped {dropped} damaged row(s) of {sets['real_dir']} (checksum, "
                        "length or non-finite values); their images are recomputed"]
    again, messages = _extract(sets["real_dir"], folder)  # the recomputed rows were written back
    assert (again.cached, messages) == (N, [])
    np.testing.assert_array_equal(again.features, _native(sets["real"]))


def test_the_issue_findings_give_the_uncached_numbers(sets, cache, reference):
    # 64 random bytes in one blob gave FD 1.5e66; one float set to 0.5 moved FD in the 6th digit
    folder, db = cache
    keys = _keys_of(sets["fake_dir"])
    _random_bytes(np.random.default_rng(1), db, keys[:1])
    _one_float(np.random.default_rng(2), db, keys[5:])
    values, messages = _evaluate(sets, folder)
    _assert_same(values, reference)
    assert messages == [f"feature cache {db}: dropped 2 damaged row(s) of {sets['fake_dir']} (checksum, length or "
                        "non-finite values); their images are recomputed"]


def test_rows_are_checked_against_the_lengths_the_extractor_expects(tmp_path):
    path = str(tmp_path / "c.sqlite")
    rng = np.random.default_rng(0)
    feats, logits = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    c = FeatureCache.open(path, feature_dim=8, logits_dim=5, extractor="test")
    c.put(["k0", "k1", "k2"], feats, logits)
    c.close()
    # lengths that match their blobs and a checksum that matches both, but not what the extractor gives
    short, long_logits = feats[1, :7].tobytes(), np.zeros(6, np.float32).tobytes()
    _sql(path, "UPDATE features SET feat = ?, feat_len = 7, checksum = ? WHERE key = 'k1'",
         (short, row_checksum("k1", short, 7, logits[1].tobytes(), 5)))
    _sql(path, "UPDATE features SET logits = ?, logits_len = 6, checksum = ? WHERE key = 'k2'",
         (long_logits, row_checksum("k2", feats[2].tobytes(), 8, long_logits, 6)))
    c = FeatureCache.open(path, feature_dim=8, logits_dim=5, extractor="test")
    rows = c.get(["k0", "k1", "k2", "absent"], need_logits=True)
    assert list(rows) == ["k0"]
    np.testing.assert_array_equal(rows["k0"][0], feats[0])
    np.testing.assert_array_equal(rows["k0"][1], logits[0])
    with pytest.warns(ImgdistWarning, match="dropped 2 damaged row"):
        c.close()
    # and what reading would reject is never written
    c = FeatureCache.open(path, feature_dim=8, logits_dim=5, extractor="test")
    bad = feats.copy()
    bad[0, 3] = np.inf
    c.put(["n0", "n1", "n2"], bad, logits)
    assert set(c.get(["n0", "n1", "n2"])) == {"n1", "n2"}
    c.close()


def test_rows_without_logits_are_missing_not_damaged_when_logits_are_needed(tmp_path):
    path = str(tmp_path / "c.sqlite")
    feats = np.arange(16, dtype=np.float32).reshape(2, 8)
    c = FeatureCache.open(path, feature_dim=8, logits_dim=5, extractor="test")
    c.put(["a", "b"], feats, None)
    assert set(c.get(["a", "b"], need_logits=False)) == {"a", "b"}
    assert c.get(["a", "b"], need_logits=True) == {}
    assert c.dropped == 0
    c.close()


# ------------------------------------------------------------------ damaged files


def _garbage(path, rng):
    open(path, "wb").write(b"these are not the bytes of an SQLite database\n" * 50)


def _truncated_file(path, rng):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 3])


def _garbled_header(path, rng):
    data = bytearray(open(path, "rb").read())
    data[:16] = b"Not SQLite 3 \x00\x00\x00"
    open(path, "wb").write(bytes(data))


def _old_format(path, rng):
    # the layout of format 1 (hash -> feat, logits), with rows: another schema
    os.remove(path)
    _sql(path, "CREATE TABLE features (hash TEXT PRIMARY KEY, feat BLOB, logits BLOB)")
    _sql(path, "INSERT INTO features VALUES ('x', randomblob(192), NULL)")


def _other_extractor(path, rng):
    _sql(path, "UPDATE meta SET value = 'inception|...' WHERE name = 'extractor'")


def _no_meta(path, rng):
    _sql(path, "DROP TABLE meta")


FILE_FAULTS = {_garbage: "file is not a database", _truncated_file: "database disk image is malformed",
               _garbled_header: "file is not a database", _old_format: "not an imgdist feature cache",
               _other_extractor: "extractor is 'inception|...'", _no_meta: "no such table: meta"}


@pytest.mark.parametrize("fault", FILE_FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_unreadable_file_is_moved_aside_and_rebuilt(sets, cache, reference, fault):
    folder, db = cache
    fault(db, None)
    damaged = open(db, "rb").read()
    values, messages = _evaluate(sets, folder)
    _assert_same(values, reference)
    (aside,) = [os.path.join(folder, f) for f in os.listdir(folder) if ".corrupt-" in f]
    assert open(aside, "rb").read() == damaged  # kept for the user, byte for byte
    assert os.path.basename(aside).startswith(os.path.basename(db) + ".corrupt-")
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"feature cache {db} could not be read (")
    assert FILE_FAULTS[fault] in messages[0]
    assert messages[0].endswith(f"); moved it to {aside} and started a new cache")
    # the new cache works: everything is cached the next time, silently
    values, messages = _evaluate(sets, folder)
    _assert_same(values, reference)
    assert messages == []
    assert len(_rows(db)) == 2 * N


def test_an_empty_file_is_a_new_cache(sets, tmp_path):
    folder = tmp_path / "c"
    ext = FeatureExtractor("pixels", mode="native", progress=False, workers=0, cache=str(folder))
    folder.mkdir()
    open(ext._cache_path(), "wb").close()
    feats, messages = _extract(sets["real_dir"], str(folder))
    assert (feats.cached, messages) == (0, [])
    assert len(_rows(ext._cache_path())) == N


def test_damage_found_after_opening_moves_the_file_aside(sets, cache, reference, monkeypatch):
    # the file opens and passes its checks, then a query fails: same treatment as on opening
    folder, db = cache
    original = FeatureCache._select
    calls = []

    def failing_select(self, keys):
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return original(self, keys)

    monkeypatch.setattr(FeatureCache, "_select", failing_select)
    values, messages = _evaluate(sets, folder)
    _assert_same(values, reference)
    assert len(messages) == 1 and "moved it to" in messages[0] and "malformed" in messages[0]


# ------------------------------------------------------------------ locks


HOLDER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    if sys.argv[2] == "exclusive":
        db.execute("BEGIN EXCLUSIVE")
    else:  # a reader in the middle of a transaction: others may read, nobody may commit
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM features").fetchall()
    print("holding", flush=True)
    sys.stdin.read()
    db.execute("COMMIT")
""")


class _LockHolder:
    """Another process holding a lock on the cache until the block ends."""

    def __init__(self, db, kind):
        self.args = [sys.executable, "-c", HOLDER, db, kind]

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "holding"
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def _locked_message(db):
    return (f"feature cache {db} is locked by another process (waited 0.3 s); this run goes on without "
            "reading or updating it")


def test_locked_at_open_runs_without_the_cache(sets, cache, reference, monkeypatch):
    folder, db = cache
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.3)
    with _LockHolder(db, "exclusive"):
        start = time.monotonic()
        feats, messages = _extract(sets["real_dir"], folder)
        assert time.monotonic() - start < 10
        assert feats.cached == 0 and messages == [_locked_message(db)]
        np.testing.assert_array_equal(feats.features, _native(sets["real"]))
        values, messages = _evaluate(sets, folder)
    _assert_same(values, reference)
    assert messages == [_locked_message(db)]  # once: the second set does not try again


def test_locked_at_write_keeps_what_was_read(sets, tmp_path, monkeypatch):
    folder = str(tmp_path / "c")
    _extract(sets["real_dir"], folder)  # the real set is cached, the fake set is not
    db = FeatureExtractor("pixels", mode="native", progress=False, cache=folder)._cache_path()
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.3)
    both = str(sets["root"] / "*" / "*.png")
    with _LockHolder(db, "shared"):
        feats, messages = _extract(both, folder)
    assert feats.cached == N  # read while the other process only reads
    assert messages == [_locked_message(db)]  # the first write could not commit
    np.testing.assert_array_equal(feats.features, _native(np.concatenate([sets["fake"], sets["real"]])))
    assert len(_rows(db)) == N  # nothing half-written


# ------------------------------------------------------------------ unusable folders


def test_cache_folder_that_is_a_file(sets, tmp_path, reference, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    values, messages = _evaluate(sets, str(not_a_folder))
    _assert_same(values, reference)
    expected = (f"feature cache folder {not_a_folder} is not usable (it is a file, not a folder); this run goes "
                "on without the cache")
    assert messages == [expected]
    # IMGDIST_CACHE naming a file: the default cache folder lies below it
    monkeypatch.setenv("IMGDIST_CACHE", str(not_a_folder))
    feats, messages = _extract(sets["real_dir"], True)
    np.testing.assert_array_equal(feats.features, _native(sets["real"]))
    assert messages == [f"feature cache folder {not_a_folder / 'features'} is not usable (cannot create it: "
                        "Not a directory); this run goes on without the cache"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_unwritable_cache_folder(sets, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o500)
    try:
        feats, messages = _extract(sets["real_dir"], str(folder))
    finally:
        os.chmod(folder, 0o700)
    np.testing.assert_array_equal(feats.features, _native(sets["real"]))
    assert messages == [f"feature cache folder {folder} is not usable (not writable); this run goes on "
                        "without the cache"]


def test_unwritable_cache_folder_as_any_user(sets, tmp_path, monkeypatch):
    # the test above, for root too: the folder reports no write access
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(folder) else real_access(p, mode))
    feats, messages = _extract(sets["real_dir"], str(folder))
    np.testing.assert_array_equal(feats.features, _native(sets["real"]))
    assert messages == [f"feature cache folder {folder} is not usable (not writable); this run goes on "
                        "without the cache"]
    assert os.listdir(folder) == []


def _connect_with(monkeypatch, setup):
    """Every cache connection made through ``setup(path, kwargs) -> connection``."""
    real = sqlite3.connect
    monkeypatch.setattr(cache_module.sqlite3, "connect", lambda path, **kw: setup(real, path, kw))


def test_read_only_database_keeps_what_was_read(sets, tmp_path, monkeypatch):
    # what a read-only file system or a file without write permission gives SQLite
    folder = str(tmp_path / "c")
    _extract(sets["real_dir"], folder)
    db = FeatureExtractor("pixels", mode="native", progress=False, cache=folder)._cache_path()
    _connect_with(monkeypatch, lambda real, path, kw: real(f"file:{path}?mode=ro", uri=True, **kw))
    feats, messages = _extract(str(sets["root"] / "*" / "*.png"), folder)
    assert feats.cached == N
    np.testing.assert_array_equal(feats.features, _native(np.concatenate([sets["fake"], sets["real"]])))
    assert messages == [f"feature cache {db} is not usable (attempt to write a readonly database); this run "
                        "goes on without the cache"]


def test_disk_full(sets, tmp_path, monkeypatch):
    folder = str(tmp_path / "c")
    _extract(sets["real_dir"], folder)
    db = FeatureExtractor("pixels", mode="native", progress=False, cache=folder)._cache_path()

    def full(real, path, kw):  # the file may not grow by a single page
        con = real(path, **kw)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {pages}")
        return con

    _connect_with(monkeypatch, full)
    feats, messages = _extract(str(sets["root"] / "*" / "*.png"), folder)
    np.testing.assert_array_equal(feats.features, _native(np.concatenate([sets["fake"], sets["real"]])))
    assert messages == [f"feature cache {db} is not usable (database or disk is full); this run goes on "
                        "without the cache"]


# ------------------------------------------------------------------ entries the hashing pass cannot read


def test_unreadable_entries_get_no_key_and_fail_as_images(sets, tmp_path, no_hang):
    folder = tmp_path / "imgs"
    _write(folder, sets["real"][:6])
    os.mkfifo(folder / "img_002b.png")  # sorts between img_002 and img_003
    os.symlink(folder / "gone.png", folder / "img_004b.png")
    cache = str(tmp_path / "cache")
    for attempt in range(2):  # the second run reads the good images from the cache
        feats, messages = _extract(str(folder), cache, on_error="skip")
        assert messages == [] and feats.cached == 6 * attempt
        np.testing.assert_array_equal(feats.features, _native(sets["real"][:6]))
        assert [(os.path.basename(n), c.split(" (")[0]) for n, c in feats.skipped.items] == [
            ("img_002b.png", "not a regular file"), ("img_004b.png", "broken symbolic link")]
    with pytest.raises(ImageError) as info:
        _extract(str(folder), cache)
    assert info.value.name == str(folder / "img_002b.png")
    assert str(info.value) == f"{folder / 'img_002b.png'}: not a regular file (a FIFO (named pipe))"


def test_a_folder_listed_as_an_image_fails_as_an_image(sets, tmp_path):
    from imgdist.extraction.sources import FileSource

    folder = tmp_path / "imgs"
    paths = [os.path.join(_write(folder, sets["real"][:3]), f"img_{i:03d}.png") for i in range(3)]
    (folder / "dir.png").mkdir()
    source = FileSource(paths[:1] + [str(folder / "dir.png")] + paths[1:], "four")
    feats, messages = _extract(source, str(tmp_path / "cache"), on_error="skip")
    np.testing.assert_array_equal(feats.features, _native(sets["real"][:3]))
    assert feats.skipped.items == [(str(folder / "dir.png"), "not a regular file (a folder)")]


# ------------------------------------------------------------------ the fault test of issue 7


def test_random_damage_to_rows_never_changes_a_number(sets, built, reference, tmp_path):
    rng = np.random.default_rng(7)
    keys = _keys_of(sets["real_dir"]) + _keys_of(sets["fake_dir"])
    for trial in range(24):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        db = str(folder / built.name)
        shutil.copy(built, db)
        order = rng.permutation(len(keys))
        for k in range(int(rng.integers(1, 4))):  # each fault on its own pair of rows
            fault = ROW_FAULTS[int(rng.integers(len(ROW_FAULTS)))]
            fault(rng, db, [keys[j] for j in order[2 * k:2 * k + 2]])
        values, messages = _evaluate(sets, str(folder))
        _assert_same(values, reference)
        assert messages and all(m.startswith(f"feature cache {db}: dropped ") for m in messages), messages
        values, messages = _evaluate(sets, str(folder))
        _assert_same(values, reference)
        assert messages == []


def test_random_damage_to_the_file_never_changes_a_number(sets, built, reference, tmp_path):
    rng = np.random.default_rng(11)
    clean = built.read_bytes()
    page = 4096
    for trial in range(30):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        db = str(folder / built.name)
        data = bytearray(clean)
        kind = trial % 3
        if kind == 0:  # truncated anywhere
            data = data[:int(rng.integers(0, len(data)))]
        elif kind == 1:  # bytes of the 100-byte header garbled
            at = int(rng.integers(0, 100))
            data[at:at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        else:  # whole pages overwritten with random bytes
            for p in rng.choice(len(data) // page, size=int(rng.integers(1, 3)), replace=False):
                data[p * page:(p + 1) * page] = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
        open(db, "wb").write(bytes(data))
        for _ in range(2):  # the run that meets the damage, and the one after it
            values, messages = _evaluate(sets, str(folder))
            _assert_same(values, reference)
            assert all(m.startswith(f"feature cache {db}") for m in messages), messages


WRITER = textwrap.dedent("""
    import os, sys, time, warnings
    import numpy as np
    import imgdist
    from imgdist.errors import ImgdistWarning
    from imgdist.extraction.features import FeatureExtractor

    source, cache, out, ready, others = sys.argv[1:6]
    warnings.simplefilter("error", ImgdistWarning)  # no lock warning, no dropped row: exit status 1
    launch = FeatureExtractor._launch

    def slow_launch(self, batch, *args, **kwargs):
        time.sleep(0.01)  # the writers take turns batch by batch
        return launch(self, batch, *args, **kwargs)

    FeatureExtractor._launch = slow_launch
    open(ready, "w").close()
    while not all(os.path.exists(p) for p in others.split(",")):  # start together
        time.sleep(0.01)
    ext = FeatureExtractor("pixels", mode="native", progress=False, workers=0, batch_size=2, cache=cache)
    np.save(out, ext.extract(source).features)
""")


def test_concurrent_writers(sets, tmp_path, reference):
    cache = str(tmp_path / "cache")
    both = str(sets["root"] / "*" / "*.png")  # fake then real: overlaps the other writer's set
    ready = [str(tmp_path / f"ready{k}") for k in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, source, cache, str(tmp_path / f"out{k}.npy"),
                               ready[k], ",".join(ready)], stderr=subprocess.PIPE, text=True)
             for k, source in enumerate([sets["real_dir"], both])]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    np.testing.assert_array_equal(np.load(tmp_path / "out0.npy"), _native(sets["real"]))
    np.testing.assert_array_equal(np.load(tmp_path / "out1.npy"),
                                  _native(np.concatenate([sets["fake"], sets["real"]])))
    values, messages = _evaluate(sets, cache)  # everything cached, every row sound
    _assert_same(values, reference)
    assert messages == []
    db = FeatureExtractor("pixels", mode="native", progress=False, cache=cache)._cache_path()
    assert len(_rows(db)) == 2 * N


KILLED = textwrap.dedent("""
    import os, signal, sqlite3, sys, time
    from imgdist.extraction.features import FeatureExtractor

    source, cache, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    connect, inserts = sqlite3.connect, []

    class Connection:  # kills the process after the INSERTs of batch kill_at, before they commit
        def __init__(self, db):
            object.__setattr__(self, "db", db)

        def __getattr__(self, name):
            return getattr(self.db, name)

        def __setattr__(self, name, value):
            setattr(self.db, name, value)

        def executemany(self, sql, rows):
            result = self.db.executemany(sql, rows)
            if "INTO features" in sql:
                inserts.append(1)
                if len(inserts) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

        def execute(self, *args):
            return self.db.execute(*args)

    sqlite3.connect = lambda *args, **kwargs: Connection(connect(*args, **kwargs))
    ext = FeatureExtractor("pixels", mode="native", progress=False, workers=0, batch_size=4, cache=cache)
    ext.extract(source)
""")


def test_sigkill_in_the_middle_of_a_batch_loses_that_batch_only(sets, tmp_path, reference):
    cache = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-c", KILLED, sets["real_dir"], cache, "3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    db = FeatureExtractor("pixels", mode="native", progress=False, cache=cache)._cache_path()
    assert os.path.exists(db + "-journal")  # killed inside the transaction: a hot journal is left
    feats, messages = _extract(sets["real_dir"], cache)
    assert (feats.cached, messages) == (8, [])  # two batches of four were committed
    np.testing.assert_array_equal(feats.features, _native(sets["real"]))
    values, messages = _evaluate(sets, cache)
    _assert_same(values, reference)
    assert messages == []


def test_sigkill_at_a_random_moment(sets, tmp_path, reference):
    cache = str(tmp_path / "cache")
    script = WRITER.replace("time.sleep(0.01)  # the writers", "time.sleep(0.03)  # the writers")
    ready = str(tmp_path / "ready")
    proc = subprocess.Popen([sys.executable, "-c", script, str(sets["root"] / "*" / "*.png"), cache,
                             str(tmp_path / "out.npy"), ready, ready], stderr=subprocess.PIPE)
    while not os.path.exists(ready):
        time.sleep(0.01)
        assert proc.poll() is None
    time.sleep(float(np.random.default_rng(3).uniform(0.1, 0.4)))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    values, messages = _evaluate(sets, cache)
    _assert_same(values, reference)
    assert messages == []


# ------------------------------------------------------------------ the command line


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _values(out):
    return {k: v["value"] for k, v in json.loads(out)["metrics"].items()}


def _cache_lines(err):
    """The cache's warning lines; every stderr line must be a warning (the result's own warnings,
    e.g. a singular covariance, are there too)."""
    lines = err.splitlines()
    assert all(line.startswith("imgdist: warning: ") for line in lines), err
    return [line for line in lines if "feature cache" in line]


def test_cli_damaged_cache_file_is_one_warning_line(sets, cache, capsys):
    folder, db = cache
    code, out, err = _cli(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--no-cache")
    assert code == 0, err
    reference = _values(out)
    _garbage(db, None)
    code, out, err = _cli(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX, "--cache-dir", folder)
    assert code == 0 and "Traceback" not in err
    lines = _cache_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"imgdist: warning: feature cache {db} could not be read")
    _assert_same(_values(out), reference)
    code, out, err = _cli(capsys, "eval", sets["real_dir"], sets["fake_dir"], *PIX,
                          "--cache-dir", str(sets["root"] / "real" / "img_000.png"))
    assert code == 0 and _cache_lines(err) == [
        f"imgdist: warning: feature cache folder {sets['root'] / 'real' / 'img_000.png'} is not usable (it is a "
        "file, not a folder); this run goes on without the cache"]
    _assert_same(_values(out), reference)


def test_cli_efficientnet_damaged_row(tmp_path, capsys):
    rng = np.random.default_rng(5)
    real = _write(tmp_path / "real", rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8))
    fake = _write(tmp_path / "fake", rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8))
    # batch size 1: a recomputed image goes through exactly the computation of the first run
    args = ["eval", real, fake, "--backbone", "efficientnet-lite0", "--metrics", "fid,kid", "--kid-subsets", "5",
            "--kid-subset-size", "3", "--batch-size", "1", "--workers", "0", "--no-progress", "--json"]
    code, out, err = _cli(capsys, *args, "--no-cache")
    assert code == 0, err
    reference = _values(out)
    folder = tmp_path / "cache"
    code, out, err = _cli(capsys, *args, "--cache-dir", folder)
    assert code == 0 and _cache_lines(err) == []
    _assert_same(_values(out), reference)
    (db,) = [str(p) for p in folder.iterdir()]
    _random_bytes(np.random.default_rng(0), db, _keys_of(fake)[1:])
    code, out, err = _cli(capsys, *args, "--cache-dir", folder)
    assert code == 0
    assert _cache_lines(err) == [f"imgdist: warning: feature cache {db}: dropped 1 damaged row(s) of {fake} "
                                "(checksum, length or non-finite values); their images are recomputed"]
    _assert_same(_values(out), reference)
    # as many damaged rows in each set: two lines, not one that the CLI's once-per-message rule
    # would leave (it said 'dropped 1' for 2 dropped rows)
    _random_bytes(np.random.default_rng(1), db, _keys_of(real)[:1])
    _random_bytes(np.random.default_rng(2), db, _keys_of(fake)[:1])
    code, out, err = _cli(capsys, *args, "--cache-dir", folder)
    assert code == 0
    assert _cache_lines(err) == [f"imgdist: warning: feature cache {db}: dropped 1 damaged row(s) of {side} "
                                "(checksum, length or non-finite values); their images are recomputed"
                                for side in (real, fake)]
    _assert_same(_values(out), reference)
