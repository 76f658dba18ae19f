"""One prompt per image: the text a text-to-image model was given, attached to any image source.

Three forms (:func:`read_prompts`):

* a prompt file mapping names to prompts, ``.csv`` with the columns ``file`` and ``prompt`` (a
  header row; further columns are ignored) or ``.jsonl`` with one object
  ``{"file": ..., "prompt": ...}`` per line. A name is as the source gives it: the path relative
  to the folder (``sub/img001.png``; for a glob, relative to the folder before its first wildcard;
  for files named one by one, relative to their common folder), the member name inside a zip or
  tar archive, or the index (``0``, ``1``, ...) of an image in an array;
* a ``.txt`` prompt file: one prompt per line, line i for image i in the source's order (the
  sorted order imgdist lists images in);
* no prompt file: a sidecar ``NAME.txt`` beside each image, ``NAME`` being the image's name without
  its extension (``img001.jpg`` -> ``img001.txt``): the LAION / img2dataset and WebDataset
  convention, in folders and inside tar or zip shards alike. Sidecars are never images: sources
  list only image extensions. In a whole folder or archive a sidecar without its image is refused
  too (the image was left out: another extension, a hidden folder).

Every image must get exactly one prompt, and every entry must name an image. A missing prompt, a
second prompt for the same image, an entry or sidecar without an image, an empty prompt and text
that is not UTF-8 are each refused with one line (:class:`~imgdist.errors.PromptError`) that names
the file, the line or entry, and the image. Nothing is dropped in silence.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import tarfile
import zipfile
from typing import Iterable

from ..errors import PromptError, one_line
from .decode import IMAGE_EXTENSIONS
from .sources import ArchiveSource, FileSource, ImageSource, _is_hidden, open_source

__all__ = ["read_prompts", "item_names", "PROMPT_FILE_TYPES"]

PROMPT_FILE_TYPES = (".csv", ".jsonl", ".txt")
SIDECAR = ".txt"


def read_prompts(source, prompts_path: str | os.PathLike | None = None) -> list[str]:
    """The prompt of every image of ``source`` (anything :func:`open_source` accepts), in the
    source's order: from ``prompts_path`` (``.csv``, ``.jsonl`` or ``.txt``) or, without one, from
    sidecar ``NAME.txt`` files. Raises :class:`PromptError` (one line) unless every image gets
    exactly one non-empty prompt and every entry names an image."""
    source = open_source(source)
    names = item_names(source)
    if prompts_path is None:
        return _sidecar_prompts(source, names)
    path = os.fspath(prompts_path)
    kind = os.path.splitext(path)[1].lower()
    if kind not in PROMPT_FILE_TYPES:
        raise PromptError(f"{path}: not a prompt file type imgdist reads; use .csv (columns file,prompt), "
                          ".jsonl (one {\"file\": ..., \"prompt\": ...} per line) or .txt (one prompt per line, "
                          "in the images' order)")
    text = _read_text(path)
    if kind == ".txt":
        return _line_prompts(path, text, names)
    entries = _csv_entries(path, text) if kind == ".csv" else _jsonl_entries(path, text)
    return _match(path, entries, names, source)


def item_names(source: ImageSource) -> list[str]:
    """The name a prompt file uses for each image of ``source`` (see the module docstring)."""
    if isinstance(source, ArchiveSource):
        return list(source.members)
    if isinstance(source, FileSource):
        root = _file_root(source)
        return [_posix(os.path.relpath(p, root)) for p in source.paths]
    return [str(i) for i in range(len(source))]


# --- names ------------------------------------------------------------------------------------

def _file_root(source: FileSource) -> str:
    label = source.label
    if os.path.isdir(label):
        return label
    if any(ch in label for ch in "*?["):
        # the folder part of a glob before its first wildcard: 'out/**/*.png' -> 'out'
        fixed = label[:min(label.index(ch) for ch in "*?[" if ch in label)]
        return os.path.dirname(fixed) or os.curdir
    folders = [os.path.dirname(os.path.abspath(p)) for p in source.paths]
    return os.path.commonpath(folders) if folders else os.curdir


def _posix(name: str) -> str:
    return name.replace(os.sep, "/") if os.sep != "/" else name


def _normal(name: str) -> str:
    """A name as written in a prompt file, compared with the source's: './a//b.png' -> 'a/b.png'."""
    return posixpath.normpath(name.replace("\\", "/")) if name else name


def _show(name: str) -> str:
    return repr(name) if len(name) <= 120 else repr(name[:117] + "...")


# --- reading ----------------------------------------------------------------------------------

def _decode(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PromptError(f"{where}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); save the prompts as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not part of the text


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise PromptError(f"{path}: no such prompt file") from None
    except IsADirectoryError:
        raise PromptError(f"{path}: is a folder, not a prompt file") from None
    except OSError as exc:
        raise PromptError(f"{path}: cannot read the prompt file ({one_line(exc.strerror or exc)})") from None
    return _decode(data, path)


def _line_prompts(path: str, text: str, names: list[str]) -> list[str]:
    # lines end at '\n' only: a prompt may hold other line-breaking characters (U+2028, \x1c ...)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if len(lines) != len(names):
        raise PromptError(f"{path}: {len(lines)} prompt line(s) for {len(names)} image(s); a .txt prompt file needs "
                          "one line per image, in the images' order")
    for number, (line, name) in enumerate(zip(lines, names), start=1):
        if not line.strip():
            raise PromptError(f"{path}: line {number}: empty prompt (for image {_show(name)})")
    return lines


def _csv_entries(path: str, text: str) -> Iterable[tuple[int, str, str]]:
    """(line, file, prompt) for every row of a CSV prompt file."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise PromptError(f"{path}: empty prompt file (expected a header row file,prompt)")
        columns = [h.strip().lower() for h in header]
        if "file" not in columns or "prompt" not in columns:
            raise PromptError(f"{path}: line 1: the header must name the columns file and prompt (found: "
                              f"{', '.join(repr(h) for h in header)})")
        i_file, i_prompt = columns.index("file"), columns.index("prompt")
        entries = []
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line is not an entry
            if len(row) != len(header):
                raise PromptError(f"{path}: line {line}: {len(row)} field(s) where the header has {len(header)} "
                                  "(a prompt with a comma must be quoted)")
            entries.append((line, row[i_file], row[i_prompt]))
        return entries
    except csv.Error as exc:
        raise PromptError(f"{path}: line {reader.line_num}: not valid CSV ({one_line(exc)})") from None


def _jsonl_entries(path: str, text: str) -> Iterable[tuple[int, str, str]]:
    entries = []
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}: line {line}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(item, dict):
            raise PromptError(f"{path}: line {line}: not a JSON object with the keys file and prompt")
        for key in ("file", "prompt"):
            if key not in item:
                raise PromptError(f"{path}: line {line}: no {key!r} key (each line needs file and prompt)")
            if not isinstance(item[key], str):
                raise PromptError(f"{path}: line {line}: {key!r} must be a string, not {type(item[key]).__name__}")
        entries.append((line, item["file"], item["prompt"]))
    return entries


def _match(path: str, entries: Iterable[tuple[int, str, str]], names: list[str], source: ImageSource) -> list[str]:
    index = {_normal(n): i for i, n in enumerate(names)}
    prompts: list[str | None] = [None] * len(names)
    first_line: dict[int, int] = {}
    unmatched: list[tuple[int, str]] = []
    for line, name, prompt in entries:
        if not name.strip():
            raise PromptError(f"{path}: line {line}: empty file name")
        i = index.get(_normal(name))
        if i is None:
            unmatched.append((line, name))
            continue
        if i in first_line:
            raise PromptError(f"{path}: line {line}: a second prompt for {_show(name)} (the first is on line "
                              f"{first_line[i]}); each image takes exactly one")
        if not prompt.strip():
            raise PromptError(f"{path}: line {line}: empty prompt for {_show(name)}")
        first_line[i] = line
        prompts[i] = prompt
    if unmatched:
        line, name = unmatched[0]
        more = f" (and {len(unmatched) - 1} more unmatched)" if len(unmatched) > 1 else ""
        raise PromptError(f"{path}: line {line}: {_show(name)} names no image of {source.label}{more}; names are "
                          f"as the source gives them, e.g. {_show(names[0])}")
    missing = [names[i] for i, p in enumerate(prompts) if p is None]
    if missing:
        more = f" (and {len(missing) - 1} more of the {len(names)} images)" if len(missing) > 1 else ""
        raise PromptError(f"{path}: no prompt for image {_show(missing[0])}{more}; every image needs exactly one")
    return prompts  # type: ignore[return-value]


# --- sidecars ---------------------------------------------------------------------------------

def _sidecar_name(name: str) -> str:
    return os.path.splitext(name)[0] + SIDECAR


def _sidecar_prompts(source: ImageSource, names: list[str]) -> list[str]:
    if isinstance(source, ArchiveSource):
        read, listed, where = _archive_reader(source)
    elif isinstance(source, FileSource):
        root = _file_root(source)
        read, where = _file_reader(root), (lambda n: os.path.join(root, n))
        listed = None
    else:
        raise PromptError(f"{source.label}: images in an array have no sidecar prompts; pass a prompt file "
                          "(.txt with one line per image, or .csv / .jsonl naming images by index)")
    prompts = []
    for name in names:
        sidecar = _sidecar_name(name)
        data = read(sidecar)
        if data is None:
            raise PromptError(f"{where(sidecar)}: missing: no prompt for image {_show(name)} (each image needs a "
                              "NAME.txt beside it, or pass a prompt file)")
        text = _decode(data, where(sidecar)).strip()
        if not text:
            raise PromptError(f"{where(sidecar)}: empty prompt for image {_show(name)}")
        prompts.append(text)
    # a whole folder or archive lists every image it holds, so a sidecar without an image means an
    # image was left out; a glob or a list of files picks images, and other sidecars are not its own
    if listed is None and os.path.isdir(source.label):
        listed = _folder_sidecars(source, root)
    if listed is not None:
        _refuse_orphans(listed, names, where)
    return prompts


def _refuse_orphans(sidecars: Iterable[str], names: list[str], where) -> None:
    """A sidecar whose image is not in the set means an image was left out (another extension,
    a hidden folder): that is said, not passed over."""
    wanted = {_sidecar_name(n) for n in names}
    orphans = sorted(s for s in sidecars if s not in wanted)
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise PromptError(f"{where(orphans[0])}: a prompt without an image{more}: no image named "
                          f"{_show(os.path.splitext(orphans[0])[0])} with an image extension "
                          f"({', '.join(IMAGE_EXTENSIONS)}) is in the set")


def _file_reader(root: str):
    def read(name: str) -> bytes | None:
        try:
            with open(os.path.join(root, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PromptError(f"{os.path.join(root, name)}: cannot read ({one_line(exc.strerror or exc)})") from None
    return read


def _folder_sidecars(source: FileSource, root: str) -> list[str]:
    """The .txt files of the folder tree, by relative name like the images', for the orphan check.
    Hidden folders and files are left out as the source leaves them out; unlike the source's walk,
    this one does not follow links to folders, so a sidecar under a linked folder is not listed
    (and not checked for an image), though the prompt of an image there is still read."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # links not followed: no loops
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [_posix(os.path.relpath(os.path.join(dirpath, f), root)) for f in filenames
                  if f.lower().endswith(SIDECAR) and not f.startswith(".")]
    return sorted(found)


def _archive_reader(source: ArchiveSource):
    """Every sidecar-named member of the archive, read at once (captions are small)."""
    path, texts = source.path, {}
    try:
        if source.kind == "zip":
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and _is_sidecar_member(info.filename):
                        texts[info.filename] = archive.read(info)
        else:
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    if member.isfile() and _is_sidecar_member(member.name):
                        texts[member.name] = archive.extractfile(member).read()
    except (OSError, EOFError, RuntimeError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise PromptError(f"{path}: cannot read the prompts in the archive ({one_line(exc)})") from None
    return texts.get, list(texts), (lambda n: f"{path}:{n}")


def _is_sidecar_member(name: str) -> bool:
    return name.lower().endswith(SIDECAR) and not _is_hidden(name)
