"""Prompts as input: CSV / JSONL name maps, one-per-line .txt files and LAION-style sidecars, on
folders, globs, archives and arrays; every way of not giving each image exactly one prompt is one
line naming the file, the entry and the image.

Expected values are the prompts the test itself wrote next to (or about) the images.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from imgdist.errors import ImgdistError, PromptError
from imgdist.extraction.prompts import item_names, read_prompts
from imgdist.extraction.sources import open_source

# folder layout: sorted order is a.png, b.jpg, sub/c.png
PROMPTS = {"a.png": "a red square", "b.jpg": "a photo of a cat, sitting", "sub/c.png": "caf\u00e9 \U0001f436 &amp; \"quotes\""}


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), color, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(PROMPTS):
        (root / name).write_bytes(_png(40 * i))
    return root


def write_sidecars(root, prompts=PROMPTS):
    for name, prompt in prompts.items():
        (root / name).with_suffix(".txt").write_text(prompt + "\n", encoding="utf-8")


def csv_text(rows, header="file,prompt") -> str:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    buf.write(header + "\r\n")
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# the three forms


def test_csv_maps_relative_names_in_any_order(folder, tmp_path):
    path = tmp_path / "p.csv"
    rows = [(n, p) for n, p in reversed(PROMPTS.items())]
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(rows).encode())  # with a byte-order mark, CRLF, quoted commas
    assert read_prompts(folder, path) == list(PROMPTS.values())
    # extra columns are ignored; './' and doubled slashes in names are the same names
    path.write_text(csv_text([("./" + n, p, "7") for n, p in PROMPTS.items()], "file,prompt,seed").replace(
        "./sub/c.png", "./sub//c.png"), encoding="utf-8")
    assert read_prompts(folder, path) == list(PROMPTS.values())


def test_jsonl_maps_names(folder, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"file": n, "prompt": p, "id": i}) for i, (n, p) in enumerate(PROMPTS.items()))
                    + "\n\n", encoding="utf-8")
    assert read_prompts(folder, path) == list(PROMPTS.values())


def test_txt_gives_one_prompt_per_line_in_the_sources_order(folder, tmp_path):
    path = tmp_path / "p.txt"
    # a prompt may hold characters that str.splitlines would split at
    prompts = ["first\u2028still first", "second\x1cstill second", "third"]
    path.write_bytes("\r\n".join(prompts).encode() + b"\r\n")
    assert read_prompts(folder, path) == prompts


def test_sidecars_beside_the_images(folder):
    write_sidecars(folder)
    assert len(open_source(folder)) == 3  # the .txt files are not images
    assert read_prompts(folder) == list(PROMPTS.values())


def test_tar_shard_with_webdataset_sidecars(tmp_path):
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tf:
        for i in range(3):
            for name, data in ((f"{i:06d}.jpg", _png(i * 50)), (f"{i:06d}.txt", f"sample {i}\n".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    assert item_names(open_source(shard)) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert read_prompts(shard) == ["sample 0", "sample 1", "sample 2"]


def test_zip_members_named_in_a_csv(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x/one.png", _png(10))
        zf.writestr("x/two.png", _png(20))
    path = tmp_path / "p.csv"
    path.write_text(csv_text([("x/two.png", "two"), ("x/one.png", "one")]), encoding="utf-8")
    assert read_prompts(archive, path) == ["one", "two"]


def test_array_images_are_named_by_index(tmp_path):
    array = tmp_path / "images.npy"
    np.save(array, np.zeros((3, 8, 8, 3), np.uint8))
    path = tmp_path / "p.csv"
    path.write_text(csv_text([("2", "c"), ("0", "a"), ("1", "b")]), encoding="utf-8")
    assert read_prompts(array, path) == ["a", "b", "c"]
    (tmp_path / "p.txt").write_text("a\nb\nc\n", encoding="utf-8")
    assert read_prompts(array, tmp_path / "p.txt") == ["a", "b", "c"]


def test_glob_names_are_relative_to_the_folder_before_the_wildcard(folder, tmp_path):
    source = open_source(str(folder) + "/**/*.png")
    assert item_names(source) == ["a.png", "sub/c.png"]
    write_sidecars(folder)
    assert read_prompts(source) == [PROMPTS["a.png"], PROMPTS["sub/c.png"]]


# --------------------------------------------------------------------------------------------
# every bad prompt file is one line


def _bad_cases():
    """(id, how to make the case: (folder, tmp) -> (source, prompt file or None), expected message)."""
    rows = list(PROMPTS.items())

    def csv_file(text: str | bytes, name="p.csv"):
        def make(folder, tmp):
            path = tmp / name
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            return folder, path
        return make

    def sidecars(change):
        def make(folder, tmp):
            write_sidecars(folder)
            change(folder)
            return folder, None
        return make

    def tar_shard(members):
        def make(folder, tmp):
            shard = tmp / "shard.tar"
            with tarfile.open(shard, "w") as tf:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
            return shard, None
        return make

    jsonl = lambda lines: csv_file("\n".join(lines) + "\n", "p.jsonl")  # noqa: E731
    ok = [json.dumps({"file": n, "prompt": p}) for n, p in rows]
    return [
        ("csv-missing", csv_file(csv_text(rows[:1] + rows[2:])),
         r"p\.csv: no prompt for image 'b\.jpg'; every image needs exactly one"),
        ("csv-duplicate", csv_file(csv_text(rows + [("a.png", "again")])),
         r"p\.csv: line 5: a second prompt for 'a\.png' \(the first is on line 2\); each image takes exactly one"),
        ("csv-unmatched", csv_file(csv_text(rows + [("zzz.png", "nothing"), ("yyy.png", "nothing")])),
         r"p\.csv: line 5: 'zzz\.png' names no image of .*images \(and 1 more unmatched\); names are as the source "
         r"gives them, e\.g\. 'a\.png'"),
        ("csv-empty-prompt", csv_file(csv_text([rows[0], ("b.jpg", "  "), rows[2]])),
         r"p\.csv: line 3: empty prompt for 'b\.jpg'"),
        ("csv-empty-name", csv_file(csv_text(rows + [("", "x")])), r"p\.csv: line 5: empty file name"),
        ("csv-bad-utf8", csv_file(csv_text(rows).encode().replace(b"cat", b"c\xfft")),
         r"p\.csv: line 3: not UTF-8 text \(byte 0xff at offset \d+\); save the prompts as UTF-8"),
        ("csv-no-header", csv_file(csv_text(rows, header="name,text")),
         r"p\.csv: line 1: the header must name the columns file and prompt \(found: 'name', 'text'\)"),
        ("csv-empty-file", csv_file(""), r"p\.csv: empty prompt file \(expected a header row file,prompt\)"),
        ("csv-unquoted-comma", csv_file("file,prompt\na.png,red, square\n"),
         r"p\.csv: line 2: 3 field\(s\) where the header has 2 \(a prompt with a comma must be quoted\)"),
        ("jsonl-missing", jsonl(ok[1:]), r"p\.jsonl: no prompt for image 'a\.png'"),
        ("jsonl-duplicate", jsonl(ok + ok[2:]), r"p\.jsonl: line 4: a second prompt for 'sub/c\.png' \(the first is on "
                                                r"line 3\)"),
        ("jsonl-unmatched", jsonl(ok + [json.dumps({"file": "sub/d.png", "prompt": "d"})]),
         r"p\.jsonl: line 4: 'sub/d\.png' names no image of"),
        ("jsonl-empty-prompt", jsonl(ok[:2] + [json.dumps({"file": "sub/c.png", "prompt": ""})]),
         r"p\.jsonl: line 3: empty prompt for 'sub/c\.png'"),
        ("jsonl-not-json", jsonl(ok[:1] + ['{"file": "b.jpg", "prompt": }'] + ok[2:]),
         r"p\.jsonl: line 2: not JSON \(Expecting value at column 29\)"),
        ("jsonl-no-key", jsonl(ok[:2] + ['{"file": "sub/c.png", "text": "c"}']),
         r"p\.jsonl: line 3: no 'prompt' key \(each line needs file and prompt\)"),
        ("jsonl-not-string", jsonl(ok[:2] + ['{"file": "sub/c.png", "prompt": 3}']),
         r"p\.jsonl: line 3: 'prompt' must be a string, not int"),
        ("jsonl-bad-utf8", csv_file(("\n".join(ok) + "\n").encode().replace(b"square", b"squ\xc3re"), "p.jsonl"),
         r"p\.jsonl: line 1: not UTF-8 text \(byte 0xc3"),
        ("txt-too-few", csv_file("one\ntwo\n", "p.txt"),
         r"p\.txt: 2 prompt line\(s\) for 3 image\(s\); a \.txt prompt file needs one line per image"),
        ("txt-too-many", csv_file("one\ntwo\nthree\nfour\n", "p.txt"), r"p\.txt: 4 prompt line\(s\) for 3 image\(s\)"),
        ("txt-empty-line", csv_file("one\n\nthree\n", "p.txt"), r"p\.txt: line 2: empty prompt \(for image 'b\.jpg'\)"),
        ("txt-bad-utf8", csv_file(b"one\ntwo\nth\x80ree\n", "p.txt"), r"p\.txt: line 3: not UTF-8 text \(byte 0x80"),
        ("sidecar-missing", sidecars(lambda f: (f / "b.txt").unlink()),
         r"images/b\.txt: missing: no prompt for image 'b\.jpg' \(each image needs a NAME\.txt beside it, or pass a "
         r"prompt file\)"),
        ("sidecar-empty", sidecars(lambda f: (f / "sub" / "c.txt").write_text("\n \n")),
         r"images/sub/c\.txt: empty prompt for image 'sub/c\.png'"),
        ("sidecar-bad-utf8", sidecars(lambda f: (f / "a.txt").write_bytes(b"a \xe9t\xe9\n")),
         r"images/a\.txt: line 1: not UTF-8 text \(byte 0xe9 at offset 2\)"),
        ("sidecar-orphan", sidecars(lambda f: (f / "sub" / "d.txt").write_text("a prompt")),
         r"images/sub/d\.txt: a prompt without an image: no image named 'sub/d' with an image extension \(\.png, "),
        ("tar-sidecar-missing", tar_shard([("0.jpg", _png(0)), ("0.txt", b"zero"), ("1.jpg", _png(9))]),
         r"shard\.tar:1\.txt: missing: no prompt for image '1\.jpg'"),
        ("tar-sidecar-orphan", tar_shard([("0.jpg", _png(0)), ("0.txt", b"zero"), ("1.avif", b"?"), ("1.txt", b"one")]),
         r"shard\.tar:1\.txt: a prompt without an image: no image named '1' with an image extension"),
        ("unknown-type", csv_file("a,b\n", "p.tsv"), r"p\.tsv: not a prompt file type imgdist reads; use \.csv"),
        ("no-such-file", lambda folder, tmp: (folder, tmp / "nope.csv"), r"nope\.csv: no such prompt file"),
        ("array-without-file", lambda folder, tmp: (np.zeros((2, 8, 8, 3), np.uint8), None),
         r"<array>: images in an array have no sidecar prompts; pass a prompt file"),
    ]


BAD = _bad_cases()


@pytest.mark.parametrize("make, expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_every_bad_prompt_file_is_one_line(make, expected, folder, tmp_path):
    source, path = make(folder, tmp_path)
    with pytest.raises(PromptError) as info:
        read_prompts(source, path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert __import__("re").search(expected, message), message
    assert isinstance(info.value, ImgdistError)  # the CLI prints it as `imgdist: error: ...`, exit 2
