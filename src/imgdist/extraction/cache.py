"""The per-image feature cache: image content hash -> features (+ logits), one SQLite file per
extractor (backbone, weights, preprocessing, layer, precision, BatchNorm folding).

The file is untrusted input: another program, a full disk, a crash or a person may have changed
it. What this module promises instead of trust:

* **Rows are checked before use.** Each row stores its key, the feature bytes, the logits bytes
  (or NULL), their lengths and a BLAKE2b checksum over key + lengths + bytes, so damaged bytes, a
  truncated blob and a row copied onto another key all fail. A row must also have the length the
  extractor expects and hold finite values only. A failing row is deleted and reported as missing,
  so its image is recomputed; one :class:`ImgdistWarning` per cache and run says how many rows were
  dropped. Rows are checked the same way before they are written.
* **A file SQLite cannot read** (truncated, garbled header, not a database, another schema,
  malformed pages), found on opening or on any later query, is moved aside to
  ``<name>.corrupt-<UTC time>`` (kept: the user may want it) and a new cache is started.
* **A locked or unusable cache is skipped, not fatal.** SQLite waits up to :data:`BUSY_TIMEOUT_S`
  for another process's lock; after that, and when the folder is a file, not writable, on a
  read-only file system or the disk is full, the run goes on without the cache: features it has
  already read or computed are still used, nothing more is read or stored.

Each of these says so once, as an :class:`ImgdistWarning` naming the file; none changes a number.
Writes are one transaction per batch (``BEGIN IMMEDIATE``), so concurrent writers serialise and an
interrupted or killed run loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import time
import warnings

import numpy as np

from ..errors import ImgdistWarning, one_line

#: bump when the cached values or the file layout change for the same key; older files are not read
CACHE_FORMAT = 2
#: seconds to wait for another process's lock before running without the cache. Writers hold the
#: lock for one batch (well under a second), so only a stuck or very slow process waits this long.
BUSY_TIMEOUT_S = 15.0
#: keys per SQL query (SQLite's parameter limit is 999 in old builds)
QUERY_CHUNK = 500
#: what a key is, stored in the file and checked on opening
KEYED_ON = "sha256 of the encoded image bytes (arrays: dtype, shape and raw bytes)"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, feat BLOB NOT NULL, "
    "feat_len INTEGER NOT NULL, logits BLOB, logits_len INTEGER, checksum BLOB NOT NULL)",
)
_COLUMNS = ["key", "feat", "feat_len", "logits", "logits_len", "checksum"]

# how an SQLite error is handled, by its primary result code (everything else: a damaged file)
_LOCKED = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_ENVIRONMENT = {sqlite3.SQLITE_PERM, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_INTERRUPT,
                sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOLFS,
                sqlite3.SQLITE_AUTH}
_ASIDE_SUFFIXES = ("", "-journal", "-wal", "-shm")  # a stale journal must not roll into a new file


class _Damaged(Exception):
    """The file opens but is not an imgdist cache of this format and extractor."""


def row_checksum(key: str, feat: bytes, feat_len: int, logits: bytes | None, logits_len: int | None) -> bytes:
    """BLAKE2b over key + lengths + bytes: a row changed in any part, or moved to another key, fails."""
    h = hashlib.blake2b(digest_size=16, person=b"imgdist-cache")
    h.update(key.encode())
    h.update(struct.pack("<qq", feat_len, -1 if logits_len is None else logits_len))
    h.update(feat)
    h.update(logits or b"")
    return h.digest()


class FeatureCache:
    """One cache file. Use :meth:`open`; :meth:`get` returns only rows that pass every check.

    ``feature_dim``: the length every feature vector must have (None where it depends on the image,
    e.g. the ``pixels`` backbone at native size); ``logits_dim``: the logits count (None: no logits).
    ``extractor``: what produced the features; a file made by another extractor is not read.
    After a lock or an environment failure (``given_up``) it can still be called but holds nothing:
    :meth:`get` finds nothing and :meth:`put` stores nothing.
    """

    def __init__(self, path: str, *, feature_dim: int | None, logits_dim: int | None, extractor: str):
        self.path = os.fspath(path)
        self.feature_dim, self.logits_dim, self.extractor = feature_dim, logits_dim, extractor
        self.db: sqlite3.Connection | None = None
        self.dropped = 0
        self.given_up = False  # locked or unusable: said once, not retried by the same extractor
        self._inode = None
        self._rebuilt = False

    @classmethod
    def open(cls, path: str, *, feature_dim: int | None, logits_dim: int | None,
             extractor: str) -> "FeatureCache":
        """Open (or create) the cache at ``path``; never raises for the file's or folder's sake."""
        cache = cls(path, feature_dim=feature_dim, logits_dim=logits_dim, extractor=extractor)
        folder = os.path.dirname(cache.path) or "."
        problem = _folder_problem(folder)
        if problem:
            cache.given_up = True
            _warn(f"feature cache folder {folder} is not usable ({problem}); this run goes on without "
                  "the cache")
            return cache
        cache._attempt(cache._connect)
        return cache

    # ------------------------------------------------------------------ reading and writing

    def get(self, keys: list[str], need_logits: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """key -> (features, logits or None) for the keys with a sound row (with logits, if
        ``need_logits``). Damaged rows are deleted and counted; the caller recomputes what is missing."""
        found: dict = {}
        for start in range(0, len(keys), QUERY_CHUNK):
            chunk = list(keys[start:start + QUERY_CHUNK])
            rows = self._guarded(self._select, chunk)
            if rows is None:
                return found
            asked, bad = set(chunk), []
            for row in rows:
                entry = self._check(row, asked)
                if entry is None:
                    bad.append(row[0])
                elif entry[1] is not None or not need_logits:
                    found[row[0]] = entry
            if bad:
                self.dropped += len(bad)
                self._guarded(self._delete, bad)
        return found

    def put(self, keys: list[str], feats: np.ndarray, logits: np.ndarray | None) -> None:
        """Store one batch in one transaction (committed work survives an interruption)."""
        rows = []
        for j, key in enumerate(keys):
            f = np.ascontiguousarray(feats[j], dtype=np.float32)
            g = None if logits is None else np.ascontiguousarray(logits[j], dtype=np.float32)
            if self._sound(f, g):  # never store what reading would reject
                fb, gb = f.tobytes(), None if g is None else g.tobytes()
                fl, gl = f.size, None if g is None else g.size
                rows.append((key, fb, fl, gb, gl, row_checksum(key, fb, fl, gb, gl)))
        if rows:
            self._guarded(self._insert, rows)

    def close(self, images: str = "") -> None:
        """Close the file and say how many damaged rows this run dropped, naming the ``images`` they
        belonged to: a run reads one cache for each set, and the CLI prints a repeated message once,
        so two sets' equal counts would otherwise read as one."""
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:  # pragma: no cover - closing a broken handle
                pass
            self.db = None
        if self.dropped:
            of = f" of {images}" if images else ""
            _warn(f"feature cache {self.path}: dropped {self.dropped} damaged row(s){of} (checksum, length or "
                  "non-finite values); their images are recomputed")
            self.dropped = 0

    # ------------------------------------------------------------------ checks

    def _check(self, row, asked: set) -> tuple[np.ndarray, np.ndarray | None] | None:
        key, feat, feat_len, logits, logits_len, checksum = row
        if not (isinstance(key, str) and key in asked and isinstance(feat, bytes) and _is_int(feat_len)
                and len(feat) == 4 * feat_len and isinstance(checksum, bytes)):
            return None
        if logits is None:
            if logits_len is not None:
                return None
        elif not (isinstance(logits, bytes) and _is_int(logits_len) and len(logits) == 4 * logits_len):
            return None
        if checksum != row_checksum(key, feat, feat_len, logits, logits_len):
            return None
        f = np.frombuffer(feat, np.float32)
        g = None if logits is None else np.frombuffer(logits, np.float32)
        return (f, g) if self._sound(f, g) else None

    def _sound(self, feat: np.ndarray, logits: np.ndarray | None) -> bool:
        if feat.size == 0 or (self.feature_dim is not None and feat.size != self.feature_dim):
            return False
        if logits is not None and (self.logits_dim is None or logits.size != self.logits_dim):
            return False
        return bool(np.isfinite(feat).all() and (logits is None or np.isfinite(logits).all()))

    # ------------------------------------------------------------------ SQL

    def _connect(self) -> None:
        self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # a damaged key must fail its row's checks, not the whole query
        self.db.text_factory = lambda raw: raw.decode("utf-8", "replace")
        try:
            self._inode = _inode(self.path)
            tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:  # a new file (or one another process is creating right now)
                self._write(self._create)
            self._check_schema()
        except BaseException:
            self.db.close()
            self.db = None
            raise

    def _create(self, db: sqlite3.Connection) -> None:
        for sql in _SCHEMA:
            db.execute(sql)
        db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", self._meta().items())

    def _meta(self) -> dict[str, str]:
        return {"format": str(CACHE_FORMAT), "keyed_on": KEYED_ON, "extractor": self.extractor}

    def _check_schema(self) -> None:
        columns = [r[1] for r in self.db.execute("PRAGMA table_info(features)")]
        if columns != _COLUMNS:
            raise _Damaged(f"not an imgdist feature cache: table 'features' has columns {columns or 'none'}")
        meta = dict(self.db.execute("SELECT name, value FROM meta"))
        for name, want in self._meta().items():
            if meta.get(name) != want:
                raise _Damaged(f"not an imgdist feature cache of format {CACHE_FORMAT} for this extractor: "
                               f"{name} is {meta.get(name)!r}")

    def _select(self, keys: list[str]):
        marks = ",".join("?" * len(keys))
        return self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM features WHERE key IN ({marks})",
                               keys).fetchall()

    def _delete(self, keys: list[str]) -> None:
        self._write(lambda db: db.executemany("DELETE FROM features WHERE key = ?", [(k,) for k in keys]))

    def _insert(self, rows: list[tuple]) -> None:
        # identical content under one key: a concurrent writer replacing a row changes nothing
        self._write(lambda db: db.executemany(
            f"INSERT OR REPLACE INTO features ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", rows))

    def _write(self, work) -> None:
        # IMMEDIATE: take the write lock up front, where SQLite's busy timeout applies
        self.db.execute("BEGIN IMMEDIATE")
        try:
            work(self.db)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db is not None and self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    # ------------------------------------------------------------------ failures

    def _guarded(self, op, *args):
        """Run ``op`` on the open file; on an SQLite failure handle it (see the module docstring)
        and return None."""
        return None if self.db is None else self._attempt(op, *args)

    def _attempt(self, op, *args):
        try:
            return op(*args)
        except (sqlite3.DatabaseError, _Damaged) as exc:
            self._fail(exc)
            return None

    def _fail(self, exc: Exception) -> None:
        code = getattr(exc, "sqlite_errorcode", None)
        code = None if code is None else code & 0xFF
        reason = one_line(exc)
        self._drop_connection()
        self.given_up = True
        if code in _LOCKED:
            _warn(f"feature cache {self.path} is locked by another process (waited {BUSY_TIMEOUT_S:g} s); "
                  "this run goes on without reading or updating it")
        elif code in _ENVIRONMENT:
            _warn(f"feature cache {self.path} is not usable ({reason}); this run goes on without the cache")
        elif self._rebuilt:  # damaged again right after a rebuild: do not loop
            _warn(f"feature cache {self.path} could not be read ({reason}) even after a rebuild; this run "
                  "goes on without the cache")
        else:
            self.given_up = False
            self._move_aside_and_rebuild(reason)

    def _move_aside_and_rebuild(self, reason: str) -> None:
        self._rebuilt = True
        current = _inode(self.path)
        if current is None or (self._inode is not None and current != self._inode):
            # another process has moved it aside already (and may have started a new file)
            self._attempt(self._connect)
            return
        aside = _aside_name(self.path)
        try:
            for suffix in _ASIDE_SUFFIXES:
                if os.path.lexists(self.path + suffix):
                    os.rename(self.path + suffix, aside + suffix)
        except OSError as exc:
            self.given_up = True
            _warn(f"feature cache {self.path} could not be read ({reason}) nor moved aside "
                  f"({exc.strerror or exc}); this run goes on without the cache")
            return
        _warn(f"feature cache {self.path} could not be read ({reason}); moved it to {aside} and started "
              "a new cache")
        self._attempt(self._connect)

    def _drop_connection(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self.db = None


def _folder_problem(folder: str) -> str | None:
    """Why the cache cannot live in ``folder`` (created if missing), or None."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        return "it is a file, not a folder"
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return f"cannot create it: {exc.strerror or exc}"
    if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY:
        return "read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "not writable"
    return None


def _aside_name(path: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, k = f"{path}.corrupt-{stamp}", 1
    while any(os.path.lexists(aside + s) for s in _ASIDE_SUFFIXES):
        aside, k = f"{path}.corrupt-{stamp}-{k}", k + 1
    return aside


def _inode(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _warn(message: str) -> None:
    warnings.warn(message, ImgdistWarning, stacklevel=3)
