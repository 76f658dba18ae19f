"""``.npy`` and ``.npz`` files from outside, read without trusting them: the one reader of
statistics files, ADM batches and image arrays.

A ``.npy`` header declares a dtype and a shape, and numpy allocates what it declares before it
reads a byte: a 4 KB file declaring (10^12, 256, 256, 3) uint8 asks for 197 TB, and a negative
dimension overflows. So every array's header is checked against the bytes that can hold it before
anything is allocated: the file's size for a ``.npy``; for an ``.npz`` member its uncompressed size,
the archive itself where the member is stored, and at most :data:`DEFLATE_MAX_RATIO` times its
compressed size where it is deflated. Arrays of Python objects are refused: reading them means
unpickling, which runs code. Every failure is a one-line :class:`SourceError` naming the file and,
where one is at fault, the array.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib

import numpy as np

from ..errors import SourceError, one_line

#: what reading a damaged or foreign file can raise, from numpy's loader and the zip and zlib layers
UNREADABLE = (OSError, ValueError, EOFError, KeyError, TypeError, RuntimeError, NotImplementedError,
              MemoryError, OverflowError, zipfile.BadZipFile, zlib.error, struct.error)
#: the most deflate can expand: a 258-byte match per 2 bits of code, 1032:1 (RFC 1951)
DEFLATE_MAX_RATIO = 1032
#: the zip local file header's fixed part (before the name and the extra field)
_LOCAL_HEADER = 30


def npz_names(path: str) -> list[str]:
    """The array names of an ``.npz`` archive."""
    with _archive(path) as zf:
        return [_array_name(info.filename) for info in zf.infolist()]


def read_npz(path: str, names=None) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` archive (``names``: those, default all), each checked and read whole."""
    out = {}
    with _archive(path) as zf:
        infos = {_array_name(info.filename): info for info in zf.infolist()}
        for name in infos if names is None else names:
            if name not in infos:
                raise SourceError(f"{path}: has no array '{name}'")
            out[name] = _read_member(zf, infos[name], path, name, mmap=False)
    return out


def read_member(path: str, name: str) -> np.ndarray:
    """One array of an ``.npz`` archive: memory-mapped (copy-on-write: never written back, and
    writable for torch) where it is stored uncompressed, as ``np.savez`` writes (a 50,000 x 256 x
    256 x 3 sample batch is 9.8 GB, more than many machines hold); else read, after its check."""
    with _archive(path) as zf:
        info = next((i for i in zf.infolist() if _array_name(i.filename) == name), None)
        if info is None:
            raise SourceError(f"{path}: has no array '{name}'")
        return _read_member(zf, info, path, name, mmap=True)


def read_npy(path: str) -> np.ndarray:
    """A ``.npy`` file, memory-mapped read-only, after its header is checked against its size."""
    try:
        with open(path, "rb") as fh:
            shape, fortran, dtype = _header(fh)
            start = fh.tell()
        _check(path, None, shape, dtype, os.path.getsize(path) - start)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except SourceError:
        raise
    except UNREADABLE as exc:
        raise SourceError(f"{path}: cannot read the array ({reason(exc)})") from None


def reason(exc: BaseException) -> str:
    if isinstance(exc, (zipfile.BadZipFile, EOFError, zlib.error)):
        return f"truncated or corrupt: {one_line(exc)}"
    return one_line(exc)


class _archive:
    """An ``.npz`` file open as a zip archive; what is not one is refused in one line."""

    def __init__(self, path: str):
        self.path = path
        try:
            empty = os.path.getsize(path) == 0
            with open(path, "rb") as f:
                magic = f.read(6)
        except OSError as exc:
            raise SourceError(f"{path}: cannot read the archive ({reason(exc)})") from None
        if empty:
            raise SourceError(f"{path}: the file is empty, not a .npz archive")
        if magic == b"\x93NUMPY":
            raise SourceError(f"{path}: holds a single .npy array, not a .npz archive of named arrays")
        if not magic.startswith(b"PK"):
            raise SourceError(f"{path}: not a .npz archive (a .npz file is a zip of .npy arrays)")
        try:
            self.zf = zipfile.ZipFile(path)
        except UNREADABLE as exc:
            raise SourceError(f"{path}: cannot read the archive ({reason(exc)})") from None

    def __enter__(self) -> zipfile.ZipFile:
        return self.zf

    def __exit__(self, *exc) -> None:
        self.zf.close()


def _array_name(member: str) -> str:
    return member[:-4] if member.endswith(".npy") else member


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, name: str, mmap: bool) -> np.ndarray:
    try:
        with zf.open(info) as fh:
            shape, fortran, dtype = _header(fh)
            header = fh.tell()
        room = info.file_size - header  # the declared uncompressed size
        stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1
        if stored:
            with open(path, "rb") as raw:  # the member's data starts after its local header
                raw.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", raw.read(4))
            start = info.header_offset + _LOCAL_HEADER + name_len + extra_len + header
            room = min(room, os.path.getsize(path) - start)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            room = min(room, DEFLATE_MAX_RATIO * info.compress_size)
        _check(path, name, shape, dtype, room)
        if mmap and stored and int(np.prod(shape)):
            return np.memmap(path, dtype=dtype, mode="c", offset=start, shape=tuple(shape),
                             order="F" if fortran else "C")
        with zf.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except SourceError:
        raise
    except UNREADABLE as exc:
        raise SourceError(f"{path}: cannot read '{name}' ({reason(exc)})") from None


def _header(fh) -> tuple:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)  # 3.0 differs only in its text's encoding


def _check(path: str, name: str | None, shape, dtype: np.dtype, room: int) -> None:
    """The declared array against the bytes that can hold it, before anything is allocated."""
    what = f"'{name}'" if name else "the array"
    if dtype.hasobject:
        raise SourceError(f"{path}: {what} holds Python objects ({dtype}), which only unpickling could read; "
                          "imgdist never unpickles a file")
    if any(d < 0 for d in shape):
        raise SourceError(f"{path}: {what} declares the impossible shape {tuple(shape)}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > max(room, 0):
        raise SourceError(f"{path}: {what} declares shape {tuple(shape)} of {dtype}, {size:,} bytes, but at most "
                          f"{max(room, 0):,} bytes can follow its header: truncated or forged")
