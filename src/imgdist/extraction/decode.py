"""Decode image files to RGB uint8 arrays with Pillow, the same way for every source.

What a user would otherwise trip over is handled here, once:
EXIF orientation is applied; L, LA, P (with transparency), RGBA, CMYK, 1, I;16, I and F are
converted with their real value ranges; transparent pixels are composited on a stated background;
animated images give their first frame; a decompression-bomb limit refuses absurd sizes.
Every failure raises :class:`ImageError` naming the file and the cause in one line.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..environment import env_positive_int
from ..errors import ImageError

#: transparent pixels are composited on this colour (white, like a browser page)
DEFAULT_BACKGROUND = (255, 255, 255)
#: Pillow's own limit (~89 Mpixel) only warns; we refuse above it (``IMGDIST_MAX_PIXELS`` overrides)
DEFAULT_MAX_PIXELS = 89_478_485


def max_pixels() -> int:
    """The decompression-bomb limit now: ``IMGDIST_MAX_PIXELS`` or the default (read per use, so it is
    checked like any input and a changed environment applies)."""
    return env_positive_int("IMGDIST_MAX_PIXELS", DEFAULT_MAX_PIXELS)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")


def decode_file(path: str | os.PathLike, background=DEFAULT_BACKGROUND) -> np.ndarray:
    """Read an image file -> H x W x 3 uint8."""
    name = os.fspath(path)
    with open_regular_file(name) as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageError(name, "file is empty (0 bytes)")
        return decode_stream(fh, name, background)


def read_regular_file(path: str | os.PathLike) -> bytes:
    """All bytes of a regular file, or :class:`ImageError` (see :func:`open_regular_file`)."""
    name = os.fspath(path)
    with open_regular_file(name) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise ImageError(name, f"cannot read: {exc.strerror or exc}") from None


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file (symbolic links followed) for reading.

    Anything else is an :class:`ImageError` and is never opened: a FIFO named ``x.png`` would block
    the reader forever. The check runs on ``stat`` before opening; the open itself is non-blocking
    and re-checked, so a file swapped for a FIFO in between cannot block either."""
    name = os.fspath(path)
    why = not_regular_reason(name)
    if why:
        raise ImageError(name, why)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageError(name, f"cannot open: {exc.strerror or exc}") from None
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise ImageError(name, "not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fh


def not_regular_reason(name: str) -> str | None:
    """Why ``name`` is not a readable regular file, or None."""
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        if os.path.islink(name):
            return f"broken symbolic link (to {os.readlink(name)}, which does not exist)"
        return "no such file"
    except OSError as exc:  # e.g. a symbolic link loop, a folder on the way without permission
        return f"cannot open: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a special file")
    return f"not a regular file ({kind})"


def decode_bytes(data: bytes, name: str, background=DEFAULT_BACKGROUND) -> np.ndarray:
    if not data:
        raise ImageError(name, "file is empty (0 bytes)")
    return decode_stream(io.BytesIO(data), name, background)


def decode_stream(fh: BinaryIO, name: str, background=DEFAULT_BACKGROUND) -> np.ndarray:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            # imgdist's own limit applies (in _check_size, before any pixel is decoded); Pillow's
            # warning and its hard stop at twice its limit follow that limit, not Pillow's default
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = limit
            with Image.open(fh) as img:
                _check_size(img, name, limit)
                img.seek(0)  # animated GIF/WebP/APNG: the first frame
                img.load()
                return to_rgb_array(img, name, background)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not a readable image (unknown format or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow stops at twice the limit it is given, before _check_size can: name imgdist's
        # limit and its setting, not Pillow's doubled number
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels is" if found else "the image is"
        raise ImageError(name, f"refused as a decompression bomb: {size} over the limit of {limit} "
                               "(set IMGDIST_MAX_PIXELS to allow it)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        cause = str(exc) or type(exc).__name__
        if "truncated" in cause or isinstance(exc, EOFError):
            cause = f"truncated or corrupt image data ({cause})"
        raise ImageError(name, f"cannot decode: {cause}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _check_size(img: Image.Image, name: str, limit: int) -> None:
    width, height = img.size
    if width * height > limit:
        raise ImageError(name, f"{width}x{height} = {width * height} pixels is over the limit of "
                               f"{limit} (set IMGDIST_MAX_PIXELS to allow it)")


def to_rgb_array(img: Image.Image, name: str = "<image>", background=DEFAULT_BACKGROUND) -> np.ndarray:
    """A Pillow image of any mode -> H x W x 3 uint8, orientation applied."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG/TIFF): full range 0..65535 maps to 0..255
        values = np.asarray(img, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(name, f"integer image with values {values.min():g}..{values.max():g} "
                                   "outside the 16-bit range 0..65535")
        return _gray_to_rgb(np.round(values / 257.0).astype(np.uint8))
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        return _gray_to_rgb(float_to_uint8(values, name))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return np.array(Image.alpha_composite(base, rgba).convert("RGB"))
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.array(img)  # a writable copy: torch refuses to wrap read-only memory


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def float_to_uint8(values: np.ndarray, name: str) -> np.ndarray:
    """Float images are on [0, 1] (the convention of every image library); anything else is refused
    rather than guessed, because a guessed scale silently changes every distance."""
    if values.size and not np.isfinite(values).all():
        raise ImageError(name, "float image contains NaN or infinite values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ImageError(name, f"float image with values {values.min():g}..{values.max():g}; "
                               "float images must be in [0, 1] (pass uint8 for 0..255)")
    return np.round(values * 255.0).astype(np.uint8)
