"""Decoding every Pillow mode to RGB uint8, checked on pixel values, and the one-line errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import imgdist.extraction.decode
from imgdist.extraction.decode import decode_bytes, decode_file, to_rgb_array
from imgdist.errors import ImageError, ImgdistError


def _save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


def _blend_on_white(value: int, alpha: int) -> float:
    return value * alpha / 255.0 + 255.0 * (1.0 - alpha / 255.0)


def _assert_one_line_naming(exc: ImageError, name: str):
    text = str(exc)
    assert name in text
    assert "\n" not in text and "\r" not in text
    assert exc.name == name


# ------------------------------------------------------------------ modes


def test_mode_L_gray_value_repeated(tmp_path):
    gray = np.array([[0, 17, 128], [200, 254, 255]], dtype=np.uint8)
    path = _save(Image.fromarray(gray, mode="L"), tmp_path / "gray.png")
    rgb = decode_file(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)


def test_mode_LA_composited_on_white(tmp_path):
    la = np.zeros((1, 3, 2), dtype=np.uint8)
    la[0, 0] = (100, 255)   # opaque
    la[0, 1] = (100, 128)   # half transparent
    la[0, 2] = (40, 0)      # fully transparent
    img = Image.fromarray(la, mode="LA")
    assert img.mode == "LA"
    rgb = decode_file(_save(img, tmp_path / "la.png"))
    np.testing.assert_array_equal(rgb[0, 0], (100, 100, 100))
    expected = _blend_on_white(100, 128)  # ~177.2
    assert np.all(np.abs(rgb[0, 1].astype(float) - expected) <= 1.0), rgb[0, 1]
    assert rgb[0, 1, 0] == rgb[0, 1, 1] == rgb[0, 1, 2]
    np.testing.assert_array_equal(rgb[0, 2], (255, 255, 255))


def test_mode_RGBA_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 200, 30, 255)    # opaque: unchanged
    rgba[0, 1] = (200, 0, 100, 128)    # half transparent
    rgba[1, 0] = (0, 0, 0, 0)          # transparent: white
    rgba[1, 1] = (1, 2, 3, 255)
    rgb = decode_file(_save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "rgba.png"))
    np.testing.assert_array_equal(rgb[0, 0], (10, 200, 30))
    np.testing.assert_array_equal(rgb[1, 1], (1, 2, 3))
    np.testing.assert_array_equal(rgb[1, 0], (255, 255, 255))
    expected = np.array([_blend_on_white(v, 128) for v in (200, 0, 100)])
    assert np.all(np.abs(rgb[0, 1].astype(float) - expected) <= 1.0), (rgb[0, 1], expected)


def test_rgba_custom_background():
    img = Image.fromarray(np.array([[[9, 9, 9, 0]]], dtype=np.uint8), mode="RGBA")
    np.testing.assert_array_equal(to_rgb_array(img, "x", background=(1, 2, 3))[0, 0], (1, 2, 3))


def _palette_image(indices: np.ndarray) -> Image.Image:
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 12, 34, 56] + [0] * (256 * 3 - 12)
    img.putpalette(palette)
    return img


PALETTE = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (12, 34, 56)}


def test_mode_P_palette_colours(tmp_path):
    indices = np.array([[0, 1], [2, 3]])
    path = _save(_palette_image(indices), tmp_path / "pal.png")
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" not in check.info
    rgb = decode_file(path)
    for (y, x), idx in np.ndenumerate(indices):
        np.testing.assert_array_equal(rgb[y, x], PALETTE[idx])


def test_mode_P_transparent_index_is_white(tmp_path):
    indices = np.array([[0, 1], [2, 3]])
    path = _save(_palette_image(indices), tmp_path / "pal_t.png", transparency=1)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    rgb = decode_file(path)
    np.testing.assert_array_equal(rgb[0, 0], PALETTE[0])
    np.testing.assert_array_equal(rgb[0, 1], (255, 255, 255))  # index 1 is transparent
    np.testing.assert_array_equal(rgb[1, 0], PALETTE[2])
    np.testing.assert_array_equal(rgb[1, 1], PALETTE[3])


def test_mode_CMYK(tmp_path):
    img = Image.new("CMYK", (3, 2), (255, 0, 0, 0))  # pure cyan
    img.putpixel((1, 0), (0, 0, 0, 255))  # black
    img.putpixel((2, 0), (0, 0, 0, 0))    # white
    path = _save(img, tmp_path / "cmyk.tif")
    rgb = decode_file(path)
    assert np.all(np.abs(rgb[0, 0].astype(int) - (0, 255, 255)) <= 2), rgb[0, 0]
    assert np.all(rgb[0, 1] <= 2), rgb[0, 1]
    assert np.all(rgb[0, 2] >= 253), rgb[0, 2]
    with Image.open(path) as reference:
        assert reference.mode == "CMYK"
        np.testing.assert_array_equal(rgb, np.asarray(reference.convert("RGB")))


def test_mode_1_bilevel(tmp_path):
    bits = np.array([[True, False, True], [False, False, True]])
    img = Image.fromarray(bits)
    assert img.mode == "1"
    rgb = decode_file(_save(img, tmp_path / "bits.png"))
    expected = np.where(bits, 255, 0)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], expected)


def test_mode_I16_png_full_range(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    path = _save(img, tmp_path / "gray16.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    rgb = decode_file(path)
    np.testing.assert_array_equal(rgb[0, :, 0], (0, 100, 255))
    np.testing.assert_array_equal(rgb[0, :, 1], rgb[0, :, 0])
    np.testing.assert_array_equal(rgb[0, :, 2], rgb[0, :, 0])


def test_mode_I_32bit():
    img = Image.fromarray(np.array([[0, 257 * 50, 65535]], dtype=np.int32))
    assert img.mode == "I"
    rgb = to_rgb_array(img, "int.tif")
    np.testing.assert_array_equal(rgb[0], [[0, 0, 0], [50, 50, 50], [255, 255, 255]])


def test_mode_I_out_of_range_is_an_error():
    img = Image.fromarray(np.array([[-5, 10]], dtype=np.int32))
    with pytest.raises(ImageError) as info:
        to_rgb_array(img, "negative.tif")
    _assert_one_line_naming(info.value, "negative.tif")


def test_mode_F_tiff_unit_range(tmp_path):
    values = np.array([[0.0, 0.5, 1.0], [0.25, 0.1, 0.9]], dtype=np.float32)
    path = _save(Image.fromarray(values, mode="F"), tmp_path / "float.tif")
    with Image.open(path) as check:
        assert check.mode == "F"
    rgb = decode_file(path)
    np.testing.assert_array_equal(rgb[0, :, 0], (0, 128, 255))
    np.testing.assert_array_equal(rgb[1, :, 0], np.round(values[1].astype(np.float64) * 255))
    np.testing.assert_array_equal(rgb[:, :, 2], rgb[:, :, 0])


def test_mode_F_outside_unit_range_names_the_file(tmp_path):
    path = _save(Image.fromarray(np.array([[0.0, 3.5]], dtype=np.float32), mode="F"), tmp_path / "hdr.tif")
    with pytest.raises(ImageError) as info:
        decode_file(path)
    _assert_one_line_naming(info.value, str(path))
    assert "3.5" in str(info.value)


# ------------------------------------------------------------------ orientation, frames, size


def _oriented_image() -> np.ndarray:
    """4 wide x 2 high, a red marker block at the top-left corner, the rest dark gray."""
    arr = np.full((16, 32, 3), 40, dtype=np.uint8)
    arr[:8, :8] = (255, 0, 0)
    return arr


@pytest.mark.parametrize("fmt,suffix,tol", [("PNG", ".png", 0), ("JPEG", ".jpg", 40)])
def test_exif_orientation_6_rotates(tmp_path, fmt, suffix, tol):
    img = Image.fromarray(_oriented_image())
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / f"rotated{suffix}"
    img.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    with Image.open(path) as check:
        assert check.getexif().get(0x0112) == 6
    rgb = decode_file(path)
    assert rgb.shape == (32, 16, 3)  # width and height swapped
    # clockwise rotation: the stored top-left corner is displayed at the top-right
    marker = rgb[1:7, -7:-1].reshape(-1, 3).astype(int)
    assert np.all(np.abs(marker - (255, 0, 0)) <= tol)
    other = rgb[1:7, 1:7].reshape(-1, 3).astype(int)  # top-left is now background
    assert np.all(np.abs(other - 40) <= tol)
    bottom = rgb[-7:-1, -7:-1].reshape(-1, 3).astype(int)
    assert np.all(np.abs(bottom - 40) <= tol)


def test_animated_gif_first_frame(tmp_path):
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    frames = [Image.new("RGB", (5, 4), c) for c in colours]
    frames[0].putpixel((2, 1), (255, 255, 255))
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 3
    rgb = decode_file(path)
    assert rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgb[1, 2], (255, 255, 255))
    mask = np.ones((4, 5), dtype=bool)
    mask[1, 2] = False
    np.testing.assert_array_equal(rgb[mask], np.tile((255, 0, 0), (19, 1)))


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (10, 10), (1, 2, 3)), tmp_path / "big.png")
    np.testing.assert_array_equal(decode_file(path)[0, 0], (1, 2, 3))
    monkeypatch.setenv("IMGDIST_MAX_PIXELS", "50")
    with pytest.raises(ImageError) as info:
        decode_file(path)
    _assert_one_line_naming(info.value, str(path))
    assert "limit" in str(info.value) and "100" in str(info.value)


def test_far_over_the_limit_names_imgdists_limit(tmp_path, monkeypatch):
    # above twice the limit Pillow itself refuses while opening, with its own (doubled) number
    path = _save(Image.new("RGB", (10, 10), (1, 2, 3)), tmp_path / "far.png")
    monkeypatch.setenv("IMGDIST_MAX_PIXELS", "30")
    with pytest.raises(ImageError) as info:
        decode_file(path)
    _assert_one_line_naming(info.value, str(path))
    assert info.value.cause == ("refused as a decompression bomb: 100 pixels is over the limit of 30 (set "
                                "IMGDIST_MAX_PIXELS to allow it)")


def test_raised_limit_overrides_pillows_own(tmp_path, monkeypatch):
    # IMGDIST_MAX_PIXELS above Pillow's limit must let the image through (and leave Pillow as it was)
    path = _save(Image.new("RGB", (10, 10), (1, 2, 3)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    monkeypatch.setenv("IMGDIST_MAX_PIXELS", "1_000")
    np.testing.assert_array_equal(decode_file(path)[9, 9], (1, 2, 3))
    assert Image.MAX_IMAGE_PIXELS == 20


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1e9"])
def test_bad_pixel_limit_in_the_environment(tmp_path, monkeypatch, value):
    path = _save(Image.new("RGB", (10, 10), (1, 2, 3)), tmp_path / "big.png")
    monkeypatch.setenv("IMGDIST_MAX_PIXELS", value)
    with pytest.raises(ImgdistError, match=f"IMGDIST_MAX_PIXELS={value!r}: expected a positive whole number"):
        decode_file(path)


# ------------------------------------------------------------------ broken files


def _noise_png_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _noise_jpeg_bytes() -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_valid_files_decode_before_truncation(tmp_path):
    """Control for the truncation tests: the full files do decode."""
    assert decode_bytes(_noise_png_bytes(), "ok.png").shape == (64, 64, 3)
    assert decode_bytes(_noise_jpeg_bytes(), "ok.jpg").shape == (64, 64, 3)


BROKEN = {
    "truncated.png": lambda: _noise_png_bytes()[: len(_noise_png_bytes()) // 2],
    "truncated.jpg": lambda: _noise_jpeg_bytes()[: len(_noise_jpeg_bytes()) // 2],
    "empty.png": lambda: b"",
    "notes.png": lambda: b"this is not an image\nsecond line\n",
}


@pytest.mark.parametrize("filename", sorted(BROKEN))
def test_broken_file_raises_one_line_error(tmp_path, filename):
    path = tmp_path / filename
    path.write_bytes(BROKEN[filename]())
    with pytest.raises(ImageError) as info:
        decode_file(path)
    _assert_one_line_naming(info.value, str(path))


@pytest.mark.parametrize("filename", sorted(BROKEN))
def test_broken_bytes_raise_one_line_error(filename):
    with pytest.raises(ImageError) as info:
        decode_bytes(BROKEN[filename](), f"archive.zip:{filename}")
    _assert_one_line_naming(info.value, f"archive.zip:{filename}")


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(ImageError) as info:
        decode_file(path)
    _assert_one_line_naming(info.value, str(path))
