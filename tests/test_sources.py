"""Every kind of source: what it yields, in which order, with which pixel values, and its errors."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from imgdist.errors import ImgdistError, ImageError, SourceError
from imgdist.extraction.sources import ArchiveSource, FileSource, Skipped, iter_images, open_source


def _png_bytes(value: int, size=(3, 2)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buf, "PNG")
    return buf.getvalue()


def _write_png(path, value: int, size=(3, 2)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(_png_bytes(value, size))
    return str(path)


def _values(source) -> list[int]:
    """The gray value of each image in source order (each test image is one flat colour)."""
    out = []
    for i in range(len(source)):
        img = source.load(i)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert (img == img.flat[0]).all()
        out.append(int(img.flat[0]))
    return out


@pytest.fixture
def tree(tmp_path):
    """Five images in nested folders, plus hidden and non-image files that must be ignored."""
    root = tmp_path / "root"
    _write_png(root / "b.png", 20)
    _write_png(root / "a.png", 10)
    _write_png(root / "sub" / "deeper" / "d.png", 40)
    _write_png(root / "sub" / "c.png", 30)
    _write_png(root / "z" / "e.png", 50)
    _write_png(root / ".hidden.png", 99)        # hidden file
    _write_png(root / ".cache" / "f.png", 98)   # hidden folder
    (root / "notes.txt").write_text("not an image")
    (root / "data.json").write_text("{}")
    return root


EXPECTED_ORDER = ["a.png", "b.png", os.path.join("sub", "c.png"), os.path.join("sub", "deeper", "d.png"),
                  os.path.join("z", "e.png")]


def test_folder_recursive_sorted_ignores_others(tree):
    source = open_source(tree)
    assert isinstance(source, FileSource)
    assert [os.path.relpath(source.name_of(i), tree) for i in range(len(source))] == EXPECTED_ORDER
    assert _values(source) == [10, 20, 30, 40, 50]
    # deterministic: a second listing is identical
    again = open_source(str(tree))
    assert [again.name_of(i) for i in range(len(again))] == [source.name_of(i) for i in range(len(source))]


def test_single_file(tree):
    source = open_source(tree / "sub" / "c.png")
    assert len(source) == 1
    assert source.name_of(0) == str(tree / "sub" / "c.png")
    assert _values(source) == [30]


def test_list_of_files_keeps_given_order(tree):
    paths = [tree / "b.png", str(tree / "a.png"), tree / "sub" / "c.png"]
    source = open_source(paths)
    assert len(source) == 3
    assert _values(source) == [20, 10, 30]


def test_list_with_missing_file(tree):
    with pytest.raises(SourceError, match="nope.png"):
        open_source([tree / "a.png", tree / "nope.png"])


def test_glob_recursive(tree):
    source = open_source(str(tree / "**" / "*.png"))
    names = [os.path.relpath(source.name_of(i), tree) for i in range(len(source))]
    assert names == EXPECTED_ORDER  # ** matches zero or more folders; hidden ones are not matched
    assert _values(source) == [10, 20, 30, 40, 50]
    only_sub = open_source(str(tree / "sub" / "*.png"))
    assert _values(only_sub) == [30]


# ------------------------------------------------------------------ archives

MEMBERS = {"sub/img.png": 30, "b.png": 20, "a.png": 10, "sub/deeper/d.png": 40}
IGNORED = {"readme.txt": b"text", ".hidden.png": _png_bytes(99), "__MACOSX/._a.png": b"junk"}


def _make_zip(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("sub/", "")  # a directory entry
        for name, value in MEMBERS.items():
            zf.writestr(name, _png_bytes(value))
        for name, data in IGNORED.items():
            zf.writestr(name, data)
    return str(path)


def _make_tar(path, mode):
    with tarfile.open(path, mode) as tf:
        info = tarfile.TarInfo("sub")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        for name, data in [(n, _png_bytes(v)) for n, v in MEMBERS.items()] + list(IGNORED.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return str(path)


ARCHIVES = {
    "archive.zip": _make_zip,
    "archive.tar": lambda p: _make_tar(p, "w"),
    "archive.tar.gz": lambda p: _make_tar(p, "w:gz"),
}
SORTED_MEMBERS = sorted(MEMBERS)  # a.png, b.png, sub/deeper/d.png, sub/img.png


@pytest.mark.parametrize("filename", sorted(ARCHIVES))
def test_archive(tmp_path, filename):
    path = ARCHIVES[filename](tmp_path / filename)
    source = open_source(path)
    assert isinstance(source, ArchiveSource)
    assert [source.name_of(i) for i in range(len(source))] == [f"{path}:{m}" for m in SORTED_MEMBERS]
    assert source.name_of(3).endswith(f"{filename}:sub/img.png")
    assert _values(source) == [MEMBERS[m] for m in SORTED_MEMBERS]


def test_archive_pickles_after_loading(tmp_path):
    path = _make_zip(tmp_path / "archive.zip")
    source = open_source(path)
    first = source.load(0)  # opens the handle
    assert source._handle is not None
    copy = pickle.loads(pickle.dumps(source))
    assert copy._handle is None
    np.testing.assert_array_equal(copy.load(0), first)
    assert _values(copy) == [MEMBERS[m] for m in SORTED_MEMBERS]
    # the original still works after being pickled
    assert _values(source) == [MEMBERS[m] for m in SORTED_MEMBERS]


def test_tar_archive_pickles_after_loading(tmp_path):
    path = _make_tar(tmp_path / "archive.tar.gz", "w:gz")
    source = open_source(path)
    source.load(1)
    copy = pickle.loads(pickle.dumps(source))
    assert _values(copy) == [MEMBERS[m] for m in SORTED_MEMBERS]


def test_archive_with_corrupt_member_names_it(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("good.png", _png_bytes(5))
        zf.writestr("x/broken.png", b"not a png")
    source = open_source(path)
    assert _values(_Slice(source, [0])) == [5]
    with pytest.raises(ImageError) as info:
        source.load(1)
    assert info.value.name == f"{path}:x/broken.png"
    assert "\n" not in str(info.value)


def _zip_with_damaged_member(path, how):
    """A zip of three PNGs whose first member is damaged: 'encrypted' (the flag bit set, as a
    password-protected archive has it), 'deflate' / 'lzma' (its compressed bytes garbled),
    'method' (an unknown compression method number)."""
    comp = {"deflate": zipfile.ZIP_DEFLATED, "lzma": zipfile.ZIP_LZMA}.get(how, zipfile.ZIP_STORED)
    with zipfile.ZipFile(path, "w", compression=comp) as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", _png_bytes(40 * i + 10, size=(16, 16)) * 4)
    raw = bytearray(path.read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    if how == "encrypted":
        raw[local + 6] |= 1
        raw[central + 8] |= 1
    elif how == "method":
        raw[local + 8:local + 10] = raw[central + 10:central + 12] = (99).to_bytes(2, "little")
    else:
        start = local + 30 + int.from_bytes(raw[local + 26:local + 28], "little")
        for k in range(start + 5, start + 60):
            raw[k] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("how,cause", [("encrypted", "is encrypted, password required"),
                                       ("deflate", "Error -3 while decompressing"),
                                       ("lzma", "Corrupt input data"),
                                       ("method", "compression method is not supported")])
def test_damaged_zip_member_is_an_image_error(tmp_path, how, cause):
    # once RuntimeError / zlib.error / LZMAError / NotImplementedError tracebacks
    path = _zip_with_damaged_member(tmp_path / f"{how}.zip", how)
    source = open_source(path)
    for read in (source.load, source.content_bytes):
        with pytest.raises(ImageError) as info:
            read(0)
        assert info.value.name == f"{path}:0.png" and "cannot read from archive" in info.value.cause
        assert cause in info.value.cause
    skipped = Skipped()
    assert [int(img[0, 0, 0]) for _, img in iter_images(source, "skip", skipped)] == [50, 90]
    assert len(skipped) == 1


def test_tar_damaged_after_the_first_member_is_refused(tmp_path):
    # tarfile ends its listing in silence at a damaged header: the set would lose images unnoticed
    path = tmp_path / "mid.tar"
    _make_tar(path, "w")
    raw = bytearray(path.read_bytes())
    header = raw.find(SORTED_MEMBERS[1].encode() + b"\x00")  # the second header in the archive
    raw[header + 148:header + 156] = b"0000000\x00"  # its checksum
    path.write_bytes(bytes(raw))
    assert len(tarfile.open(path).getmembers()) < len(MEMBERS)  # what tarfile itself makes of it
    with pytest.raises(SourceError, match=r"mid\.tar: cannot read archive \(damaged after \d member\(s\)"):
        open_source(path)


def test_tar_gz_damage_anywhere_never_loses_images_in_silence(tmp_path):
    # 8 garbled bytes at every 7th position of the stream: either the archive is refused, or every
    # image is still listed (zlib may decode garbage into a bad header that tarfile takes for the end)
    path = tmp_path / "bad.tar.gz"
    _make_tar(path, "w:gz")
    good = path.read_bytes()
    outcomes = set()
    for start in range(10, len(good) - 16, 7):
        raw = bytearray(good)
        for k in range(start, start + 8):
            raw[k] ^= 0x33
        path.write_bytes(bytes(raw))
        try:
            listed = len(open_source(path))
        except SourceError as exc:
            assert str(exc).startswith(f"{path}: "), exc
            outcomes.add("refused")
            continue
        assert listed == len(MEMBERS), start
        outcomes.add("listed")
    assert "refused" in outcomes


def test_archive_handle_is_closed_without_a_resource_warning(tmp_path):
    import gc
    import warnings

    path = _make_tar(tmp_path / "archive.tar", "w")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = open_source(path)
        source.load(0)  # opens the handle
        del source
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


class _Slice:
    def __init__(self, source, indices):
        self.source, self.indices = source, indices

    def __len__(self):
        return len(self.indices)

    def load(self, i):
        return self.source.load(self.indices[i])


# ------------------------------------------------------------------ arrays


def test_npy_gray_batch(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    path = tmp_path / "imgs.npy"
    np.save(path, arr)
    source = open_source(path)
    assert len(source) == 6
    for i in range(6):
        img = source.load(i)
        assert img.shape == (5, 7, 3)
        for c in range(3):
            np.testing.assert_array_equal(img[:, :, c], arr[i])
    assert source.name_of(2) == f"{path}[2]"


def test_npz_images_key(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (3, 8, 9, 3), dtype=np.uint8)
    path = tmp_path / "imgs.npz"
    np.savez(path, labels=np.arange(3), images=arr)
    source = open_source(path)
    assert len(source) == 3
    for i in range(3):
        np.testing.assert_array_equal(source.load(i), arr[i])


def test_npz_single_array(tmp_path):
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    path = tmp_path / "one.npz"
    np.savez_compressed(path, whatever=arr)
    source = open_source(path)
    np.testing.assert_array_equal(np.stack([source.load(i) for i in range(len(source))]), arr)


def test_npz_several_arrays_none_named_images(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, x=np.zeros((2, 6, 6), np.uint8), y=np.zeros((2, 6, 6), np.uint8))
    with pytest.raises(SourceError, match="images"):
        open_source(path)


def test_npz_statistics_file_refused(tmp_path):
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(8), sigma=np.eye(8))
    with pytest.raises(SourceError) as info:
        open_source(path)
    assert "statistics" in str(info.value) and str(path) in str(info.value)


def test_float_array_unit_range_rounded():
    arr = np.array([[[[0.0, 0.5, 1.0], [0.2, 0.7, 0.999]]]], dtype=np.float32)  # 1 x 1 x 2 x 3
    source = open_source(arr)
    expected = np.round(arr[0].astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(source.load(0), expected)
    assert source.load(0)[0, 0].tolist() == [0, 128, 255]


def test_float_array_outside_unit_range_is_an_error():
    arr = np.full((2, 6, 6, 3), 0.5)
    arr[1, 0, 0, 0] = 255.0  # someone passed 0..255 as float
    source = open_source(arr)
    assert source.load(0)[0, 0, 0] == 128
    with pytest.raises(ImageError) as info:
        source.load(1)
    assert info.value.name == "<array>[1]" and "[0, 1]" in str(info.value)


def test_int64_within_byte_range_accepted():
    arr = np.arange(2 * 4 * 4 * 3, dtype=np.int64).reshape(2, 4, 4, 3) % 256
    arr[0, 0, 0] = (0, 255, 7)
    source = open_source(arr)
    for i in range(2):
        img = source.load(i)
        assert img.dtype == np.uint8
        np.testing.assert_array_equal(img, arr[i].astype(np.uint8))


def test_int64_outside_byte_range_is_an_error():
    arr = np.zeros((1, 4, 4, 3), dtype=np.int64)
    arr[0, 1, 1, 1] = 300
    with pytest.raises(ImageError, match="300"):
        open_source(arr).load(0)


def test_rgba_array_composited_on_white():
    arr = np.zeros((1, 2, 2, 4), dtype=np.uint8)
    arr[0, 0, 0] = (10, 20, 30, 255)
    arr[0, 0, 1] = (10, 20, 30, 0)
    arr[0, 1, 0] = (200, 0, 100, 51)  # alpha 0.2
    arr[0, 1, 1] = (0, 0, 0, 255)
    img = open_source(arr).load(0)
    np.testing.assert_array_equal(img[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(img[0, 1], (255, 255, 255))
    np.testing.assert_array_equal(img[1, 1], (0, 0, 0))
    np.testing.assert_array_equal(img[1, 0], np.round(np.array([200, 0, 100]) * 0.2 + 255 * 0.8))


def test_torch_tensor_nchw_same_pixels_as_numpy_hwc():
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (3, 7, 9, 3), dtype=np.uint8)
    tensor = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()  # N x C x H x W
    assert tuple(tensor.shape) == (3, 3, 7, 9)
    t_source, n_source = open_source(tensor), open_source(hwc)
    assert len(t_source) == len(n_source) == 3
    for i in range(3):
        np.testing.assert_array_equal(t_source.load(i), hwc[i])
        np.testing.assert_array_equal(t_source.load(i), n_source.load(i))
    # float tensors in [0, 1] give the same pixels as the uint8 ones
    f_source = open_source(tensor.double() / 255)
    np.testing.assert_array_equal(f_source.load(2), hwc[2])


def test_pil_image_list():
    imgs = [Image.new("RGB", (4, 3), (1, 2, 3)), Image.new("L", (4, 3), 77),
            Image.new("RGBA", (4, 3), (0, 0, 0, 0))]
    source = open_source(imgs)
    assert len(source) == 3
    assert source.load(0)[2, 3].tolist() == [1, 2, 3]
    assert source.load(1)[0, 0].tolist() == [77, 77, 77]
    assert source.load(2)[1, 1].tolist() == [255, 255, 255]
    assert source.name_of(1) == "<images>[1]"


# ------------------------------------------------------------------ errors


def test_empty_folder(tmp_path):
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError) as info:
        open_source(empty)
    assert str(empty) in str(info.value) and "no images" in str(info.value)


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(SourceError) as info:
        open_source(missing)
    assert str(missing) in str(info.value)


def test_glob_matching_nothing(tmp_path):
    pattern = str(tmp_path / "**" / "*.webp")
    with pytest.raises(SourceError) as info:
        open_source(pattern)
    assert pattern in str(info.value) and "matches no files" in str(info.value)


def test_empty_archive(tmp_path):
    path = tmp_path / "empty.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(SourceError, match="no images"):
        open_source(path)


def test_iter_images_skip_corrupt_in_the_middle(tmp_path):
    _write_png(tmp_path / "a.png", 1)
    _write_png(tmp_path / "b.png", 2)
    (tmp_path / "c.png").write_bytes(_png_bytes(3)[:40])  # truncated
    _write_png(tmp_path / "d.png", 4)
    (tmp_path / "e.png").write_bytes(b"")  # zero bytes
    _write_png(tmp_path / "f.png", 6)
    source = open_source(tmp_path)
    skipped = Skipped()
    got = list(iter_images(source, on_error="skip", skipped=skipped))
    assert [os.path.basename(n) for n, _ in got] == ["a.png", "b.png", "d.png", "f.png"]
    assert [int(img[0, 0, 0]) for _, img in got] == [1, 2, 4, 6]
    assert len(skipped) == 2
    assert [os.path.basename(n) for n, _ in skipped.items] == ["c.png", "e.png"]
    assert "skipped 2" in skipped.summary() and "c.png" in skipped.summary()
    # default: the first bad file stops the iteration, naming it
    with pytest.raises(ImageError) as info:
        list(iter_images(source))
    assert info.value.name == str(tmp_path / "c.png")
    with pytest.raises(ImgdistError, match="on_error"):
        list(iter_images(source, on_error="ignore"))


@pytest.mark.parametrize("height", [1, 2, 4, 5, 32])
def test_single_hwc_array_is_one_image_whatever_its_height(height):
    rng = np.random.default_rng(height)
    img = rng.integers(0, 256, (height, 2, 3), dtype=np.uint8)
    source = open_source(img)
    assert len(source) == 1
    np.testing.assert_array_equal(source.load(0), img)


# ------------------------------------------------------------------ entries that are not regular files


@pytest.fixture
def odd_tree(tmp_path):
    """Two good images beside a FIFO, a broken link, a socket and a folder named like images, a link
    to a good image, and a link back up the tree (a loop for a walker that follows links)."""
    import socket

    root = tmp_path / "odd"
    _write_png(root / "a.png", 10)
    _write_png(root / "sub" / "c.png", 30)
    os.mkfifo(root / "fifo.png")
    os.symlink(root / "gone.png", root / "broken.png")
    os.symlink(root / "a.png", root / "link.png")
    (root / "folder.png").mkdir()
    _write_png(root / "folder.png" / "inner.png", 50)
    os.symlink(root, root / "sub" / "loop")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    yield root
    sock.close()


ODD_CAUSES = {"broken.png": "broken symbolic link", "fifo.png": "not a regular file (a FIFO (named pipe))",
              "sock.png": "not a regular file (a socket)"}


def test_folder_reports_entries_that_are_not_regular_files(odd_tree, no_hang):
    source = open_source(odd_tree)
    names = [os.path.relpath(source.name_of(i), odd_tree) for i in range(len(source))]
    # the loop is walked once; a folder named x.png is a folder: its images are listed
    assert names == ["a.png", "broken.png", "fifo.png", os.path.join("folder.png", "inner.png"), "link.png",
                     "sock.png", os.path.join("sub", "c.png")]
    for i, name in enumerate(names):
        if name in ODD_CAUSES:
            for read in (source.load, source.content_bytes):  # never opened, so never blocks
                with pytest.raises(ImageError) as info:
                    read(i)
                assert info.value.name == str(odd_tree / name)
                assert info.value.cause.startswith(ODD_CAUSES[name])
        else:
            assert source.content_bytes(i) == (odd_tree / name).read_bytes()
    skipped = Skipped()
    got = list(iter_images(source, on_error="skip", skipped=skipped))
    assert [int(img[0, 0, 0]) for _, img in got] == [10, 50, 10, 30]
    assert sorted(os.path.basename(n) for n, _ in skipped.items) == sorted(ODD_CAUSES)
    assert "gone.png" in dict(skipped.items)[str(odd_tree / "broken.png")]


def test_glob_and_single_path_report_them_too(odd_tree, no_hang):
    source = open_source(str(odd_tree / "*.png"))  # folder.png is a folder: not an entry of a glob
    assert [os.path.basename(source.name_of(i)) for i in range(len(source))] == [
        "a.png", "broken.png", "fifo.png", "link.png", "sock.png"]
    # one such entry named as the whole source: refused when opened, naming the cause (the set-size
    # checks before any reading would otherwise report "1 image(s)")
    for name, cause in ODD_CAUSES.items():
        with pytest.raises(SourceError) as info:
            open_source(odd_tree / name)
        assert str(info.value).startswith(f"{odd_tree / name}: {cause}")
    listed = open_source([odd_tree / "a.png", odd_tree / "broken.png"])
    with pytest.raises(ImageError, match="broken symbolic link"):
        listed.load(1)
    with pytest.raises(SourceError, match="is a folder"):
        open_source([odd_tree / "a.png", odd_tree / "folder.png"])


def test_a_directory_given_as_a_file_is_an_image_error(odd_tree):
    source = FileSource([str(odd_tree / "a.png"), str(odd_tree / "folder.png")], "two")
    with pytest.raises(ImageError, match="not a regular file \\(a folder\\)"):
        source.content_bytes(1)
    with pytest.raises(ImageError, match="not a regular file \\(a folder\\)"):
        source.load(1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_an_image_error(tmp_path):
    path = _write_png(tmp_path / "secret.png", 5)
    os.chmod(path, 0)
    source = open_source(tmp_path)
    for read in (source.load, source.content_bytes):
        with pytest.raises(ImageError, match="Permission denied"):
            read(0)


def test_permission_denied_while_opening_is_an_image_error(tmp_path, monkeypatch):
    # what a file without read permission gives a user who is not root (the test above)
    path = _write_png(tmp_path / "secret.png", 5)
    real_open = os.open

    def denying_open(name, *args, **kwargs):
        if os.fspath(name) == path:
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", denying_open)
    source = open_source(tmp_path)
    for read in (source.load, source.content_bytes):
        with pytest.raises(ImageError) as info:
            read(0)
        assert str(info.value) == f"{path}: cannot open: Permission denied"
