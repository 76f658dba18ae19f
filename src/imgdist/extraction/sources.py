"""Turn whatever the user names into an ordered, indexable collection of images.

A source is a folder (recursive), a single file, a list of files, a glob, a ``.zip`` / ``.tar``
(``.tar.gz``, ``.tgz``) archive, a ``.npy`` / ``.npz`` array, or in-memory numpy arrays, torch
tensors and PIL images. Order is deterministic (sorted paths / member names / array order), so
results and caches are reproducible.

Sources are index-based and picklable (archives reopen lazily in each process), so data-loader
workers can decode in parallel. ``source.load(i)`` returns ``H x W x 3`` uint8 or raises
:class:`ImageError` naming the item.
"""

from __future__ import annotations

import glob as _glob
import lzma
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .decode import (DEFAULT_BACKGROUND, IMAGE_EXTENSIONS, decode_bytes, decode_file, float_to_uint8,
                     not_regular_reason, read_regular_file, to_rgb_array)
from ..errors import ImageError, ImgdistError, SourceError, one_line

ON_ERROR = ("raise", "skip")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class ImageSource:
    """An ordered collection of images: ``len``, ``name_of(i)``, ``load(i)``."""

    label: str = "<images>"

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def name_of(self, index: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, index: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def content_bytes(self, index: int) -> bytes | None:
        """The raw encoded bytes of item ``index`` where there are any (for content hashing)."""
        return None

    @property
    def parallel_decode(self) -> bool:
        """Whether decoding is real work worth spreading over worker processes."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r}, {len(self)} images)"


class FileSource(ImageSource):
    def __init__(self, paths: Sequence[str], label: str, background=DEFAULT_BACKGROUND):
        self.paths = [os.fspath(p) for p in paths]
        self.label = label
        self.background = tuple(background)

    def __len__(self):
        return len(self.paths)

    def name_of(self, index):
        return self.paths[index]

    def load(self, index):
        return decode_file(self.paths[index], self.background)

    def content_bytes(self, index):
        return read_regular_file(self.paths[index])


# what reading a damaged or unusual archive raises: zipfile raises RuntimeError for an encrypted
# member and NotImplementedError for an unknown compression method; corrupt compressed data comes
# from the zlib / lzma layers (bz2 raises OSError)
_ARCHIVE_ERRORS = (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, tarfile.TarError,
                   zipfile.BadZipFile, zlib.error, lzma.LZMAError)


def _check_tar_end(tf: tarfile.TarFile, path: str, listed: int) -> None:
    """Refuse a tar archive whose listing stopped before its end.

    tarfile ends the member list without an error at the first damaged header after the first
    member, and it never reads a compressed stream to its checksum; the images after the damage
    would be left out of the set in silence. After the last header only zero padding may follow;
    reading it to the end also checks the gzip / bz2 / xz stream."""
    while True:
        block = tf.fileobj.read(1 << 20)
        if not block:
            return
        if block.count(0) != len(block):
            raise SourceError(f"{path}: cannot read archive (damaged after {listed} member(s): what follows "
                              "is not a tar header; the images after it would be left out)")


class ArchiveSource(ImageSource):
    """Images inside a zip or tar archive, in sorted member order."""

    def __init__(self, path: str, background=DEFAULT_BACKGROUND):
        self.path = os.fspath(path)
        self.label = self.path
        self.background = tuple(background)
        self._handle = None
        try:
            if zipfile.is_zipfile(self.path):
                self.kind = "zip"
                with zipfile.ZipFile(self.path) as zf:
                    names = [i.filename for i in zf.infolist() if not i.is_dir()]
            else:
                self.kind = "tar"
                with tarfile.open(self.path) as tf:
                    members = tf.getmembers()
                    _check_tar_end(tf, self.path, len(members))
                    names = [m.name for m in members if m.isfile()]
        except _ARCHIVE_ERRORS as exc:
            raise SourceError(f"{self.path}: cannot read archive ({one_line(exc)})") from None
        self.members = sorted(n for n in names if _is_image_name(n) and not _is_hidden(n))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None  # open handles do not cross process boundaries
        return state

    def __del__(self):
        # the handle opened lazily for reading members: closed here, or the interpreter reports an
        # unclosed file to the user (as a warning) when it collects the source
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            try:
                handle.close()
            except Exception:  # pragma: no cover - closing at interpreter exit
                pass

    def _open(self):
        if self._handle is None:
            self._handle = zipfile.ZipFile(self.path) if self.kind == "zip" else tarfile.open(self.path)
        return self._handle

    def __len__(self):
        return len(self.members)

    def name_of(self, index):
        return f"{self.path}:{self.members[index]}"

    def content_bytes(self, index):
        member = self.members[index]
        handle = self._open()
        try:
            if self.kind == "zip":
                return handle.read(member)
            fh = handle.extractfile(member)
            return fh.read() if fh is not None else b""
        except _ARCHIVE_ERRORS as exc:
            raise ImageError(self.name_of(index), f"cannot read from archive ({one_line(exc)})") from None

    def load(self, index):
        return decode_bytes(self.content_bytes(index), self.name_of(index), self.background)


class ArraySource(ImageSource):
    """Images held in an array (``N x H x W`` or ``N x H x W x C``; uint8 or float in [0, 1])."""

    def __init__(self, array, label: str = "<array>", background=DEFAULT_BACKGROUND):
        self.array = array
        self.label = label
        self.background = tuple(background)

    def __len__(self):
        return len(self.array)

    def name_of(self, index):
        return f"{self.label}[{index}]"

    @property
    def parallel_decode(self):
        return False

    def content_bytes(self, index):
        item = np.ascontiguousarray(self.array[index])
        return item.dtype.str.encode() + str(item.shape).encode() + item.tobytes()

    def load(self, index):
        return array_to_rgb(np.asarray(self.array[index]), self.name_of(index), self.background)


class ItemsSource(ImageSource):
    """A list of in-memory images: numpy arrays (H x W [x C]), torch tensors (C x H x W), PIL images."""

    def __init__(self, items: Sequence, label: str = "<images>", background=DEFAULT_BACKGROUND):
        self.items = list(items)
        self.label = label
        self.background = tuple(background)

    def __len__(self):
        return len(self.items)

    def name_of(self, index):
        return f"{self.label}[{index}]"

    @property
    def parallel_decode(self):
        return False

    def load(self, index):
        item = self.items[index]
        name = self.name_of(index)
        if _is_pil(item):
            return to_rgb_array(item, name, self.background)
        if _is_tensor(item):
            item = _tensor_to_hwc(item, name)
        return array_to_rgb(np.asarray(item), name, self.background)


def open_source(spec, background=DEFAULT_BACKGROUND) -> ImageSource:
    """Whatever names images -> an :class:`ImageSource`. Raises :class:`SourceError` if it names none."""
    if isinstance(spec, ImageSource):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return _open_path(os.fspath(spec), background)
    if _is_tensor(spec):
        if spec.ndim == 3:
            spec = spec[None]
        if spec.ndim != 4:
            raise SourceError(f"tensor of shape {tuple(spec.shape)}: expected N x C x H x W or C x H x W")
        return ArraySource(_tensor_to_hwc(spec, "<tensor>"), "<tensor>", background)
    if isinstance(spec, np.ndarray):
        return ArraySource(_normalise_array_layout(spec, "<array>"), "<array>", background)
    if _is_pil(spec):
        return ItemsSource([spec], "<PIL image>", background)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise SourceError("empty list of images")
        if all(isinstance(s, (str, os.PathLike)) for s in spec):
            paths = [os.fspath(s) for s in spec]
            for p in paths:
                if not os.path.lexists(p):
                    raise SourceError(f"{p}: no such file")
                if os.path.isdir(p):
                    raise SourceError(f"{p}: is a folder; pass it alone to read the images in it")
            return FileSource(paths, f"{len(paths)} files", background)
        return ItemsSource(spec, "<images>", background)
    raise SourceError(f"cannot read images from a {type(spec).__name__}; pass a folder, file, glob, "
                      "archive, .npy/.npz, array, tensor or list of images")


def _open_path(path: str, background) -> ImageSource:
    if os.path.isdir(path):
        files = sorted(_walk_images(path))
        if not files:
            raise SourceError(f"{path}: no images found in folder (looked for "
                              f"{', '.join(IMAGE_EXTENSIONS)})")
        return FileSource(files, path, background)
    if os.path.isfile(path):
        lower = path.lower()
        if lower.endswith(ARCHIVE_SUFFIXES):
            source = ArchiveSource(path, background)
            if not len(source):
                raise SourceError(f"{path}: no images found in archive")
            return source
        if lower.endswith((".npy", ".npz")):
            return array_file_source(path, load_array_file(path), background)
        return FileSource([path], path, background)
    if os.path.lexists(path) and not any(ch in path for ch in "*?["):
        # a FIFO, a socket, a broken link ... named as the whole source: there is nothing to skip it
        # for, and the set-size checks that run before any reading would blame the count instead
        why = not_regular_reason(path)
        if why:
            raise SourceError(f"{path}: {why}")
        return FileSource([path], path, background)
    if any(ch in path for ch in "*?["):
        # not only regular files: a FIFO or a broken link the pattern names is reported, never opened
        files = sorted(f for f in _glob.glob(path, recursive=True) if not os.path.isdir(f))
        if not files:
            raise SourceError(f"{path}: the pattern matches no files")
        return FileSource(files, path, background)
    raise SourceError(f"{path}: no such file or directory")


def load_array_file(path: str) -> np.ndarray:
    """Images from ``.npy`` or ``.npz`` (its only array, or the one named ``images`` or ``arr_0``),
    memory-mapped where stored uncompressed; headers checked before anything is allocated."""
    from .arrayfiles import npz_names, read_member, read_npy

    if path.lower().endswith(".npy"):
        return read_npy(path)
    keys = npz_names(path)
    # 'arr_0': an ADM batch, whose stored mu/sigma (if any) the caller reports as unused
    key = next((k for k in ("images", "arr_0") if k in keys), None)
    if key is None and "mu" in keys and "sigma" in keys:
        raise SourceError(f"{path}: holds statistics (mu, sigma), not images; "
                          "statistics can only be compared, not re-extracted")
    key = key or (keys[0] if len(keys) == 1 else None)
    if key is None:
        raise SourceError(f"{path}: several arrays ({', '.join(keys)}) and none named 'images' or 'arr_0'")
    return read_member(path, key)


def array_file_source(path: str, array: np.ndarray, background=DEFAULT_BACKGROUND) -> "ArraySource":
    """The images of an array file already read (``load_array_file``)."""
    return ArraySource(_normalise_array_layout(array, path), path, background)


def _normalise_array_layout(array: np.ndarray, label: str) -> np.ndarray:
    """Accept N x H x W and N x H x W x C (C in 1, 3, 4); a single H x W x C image becomes N = 1."""
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        # (H, W, C) single colour image, whatever its height (a 1 x 2 x 3 image is one image, not
        # one gray 2 x 3 image); (N, H, W) batches whose W is 3 or 4 are not images anyone has
        array = array[None]
    if array.ndim == 3 or (array.ndim == 4 and array.shape[-1] in (1, 3, 4)):
        if len(array) == 0:
            raise SourceError(f"{label}: the array holds no images (shape {array.shape})")
        return array
    raise SourceError(f"{label}: array of shape {array.shape}; expected N x H x W or N x H x W x C "
                      "with C in 1, 3, 4 (channels last)")


def array_to_rgb(item: np.ndarray, name: str, background=DEFAULT_BACKGROUND) -> np.ndarray:
    """One image array (H x W or H x W x C) -> H x W x 3 uint8 with the value-range rules of imgdist."""
    if item.ndim == 2:
        item = item[:, :, None]
    if item.ndim != 3 or item.shape[-1] not in (1, 3, 4):
        raise ImageError(name, f"array of shape {item.shape} is not an image (H x W x C, C in 1, 3, 4)")
    if item.dtype == np.uint8:
        values = item
    elif item.dtype.kind == "f":
        values = float_to_uint8(item.astype(np.float64), name)
    elif item.dtype.kind in "iu":
        if item.size and (item.min() < 0 or item.max() > 255):
            raise ImageError(name, f"{item.dtype} values {item.min()}..{item.max()} outside 0..255; "
                                   "pass uint8 0..255 or float in [0, 1]")
        values = item.astype(np.uint8)
    elif item.dtype == bool:
        values = item.astype(np.uint8) * 255
    else:
        raise ImageError(name, f"unsupported array dtype {item.dtype}")
    if values.shape[-1] == 1:
        return np.repeat(values, 3, axis=2)
    if values.shape[-1] == 4:
        alpha = values[:, :, 3:4].astype(np.float64) / 255.0
        bg = np.asarray(background, dtype=np.float64).reshape(1, 1, 3)
        return np.round(values[:, :, :3] * alpha + bg * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(values)


def _tensor_to_hwc(tensor, name: str) -> np.ndarray:
    """Torch's channels-first layout -> numpy's channels-last."""
    array = tensor.detach().cpu().numpy()
    if array.ndim == 3:
        if array.shape[0] not in (1, 3, 4):
            raise ImageError(name, f"tensor of shape {array.shape}: expected C x H x W with C in 1, 3, 4")
        return np.moveaxis(array, 0, -1)
    if array.shape[1] not in (1, 3, 4):
        raise SourceError(f"{name}: tensor of shape {array.shape}: expected N x C x H x W with C in 1, 3, 4")
    return np.moveaxis(array, 1, -1)


def _walk_images(root: str) -> Iterator[str]:
    """Image-named entries under ``root`` that are not folders. Besides regular files (and links to
    them) this yields FIFOs, sockets, devices and broken links named like images: they are reported
    as image errors when read (never opened), rather than passed over in silence."""
    # each folder's ancestors by (device, inode): a link back up the tree must not loop forever
    chains = {root: {_folder_id(root)}}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        chain = chains.pop(dirpath, set())
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            ident = _folder_id(os.path.join(dirpath, d))
            if ident not in chain:
                keep.append(d)
                chains[os.path.join(dirpath, d)] = chain | {ident}
        dirnames[:] = keep
        for f in filenames:
            if _is_image_name(f) and not f.startswith("."):
                yield os.path.join(dirpath, f)


def _folder_id(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return path
    return st.st_dev, st.st_ino


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _is_pil(obj) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def _is_tensor(obj) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, torch.Tensor)


@dataclass
class Skipped:
    """Images passed over under ``on_error='skip'``: name -> cause."""

    items: list[tuple[str, str]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per item: ImageError.kind

    def add(self, error: ImageError) -> None:
        self.items.append((error.name, error.cause))
        self.kinds.append(error.kind)

    def __len__(self):
        return len(self.items)

    def summary(self) -> str:
        parts = []
        kinds = self.kinds + ["unreadable"] * (len(self.items) - len(self.kinds))
        for kind in dict.fromkeys(kinds):
            items = [item for item, k in zip(self.items, kinds) if k == kind]
            first = "; ".join(f"{n}: {c}" for n, c in items[:3])
            more = f"; and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"skipped {len(items)} {kind} image(s): {first}{more}")
        return "; ".join(parts)


def iter_images(source: ImageSource, on_error: str = "raise", skipped: Skipped | None = None):
    """Yield ``(name, image)``; with ``on_error='skip'`` bad items are recorded in ``skipped``."""
    check_on_error(on_error)
    for i in range(len(source)):
        try:
            yield source.name_of(i), source.load(i)
        except ImageError as exc:
            if on_error == "raise":
                raise
            if skipped is not None:
                skipped.add(exc)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ImgdistError(f"on_error (--on-error) must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
