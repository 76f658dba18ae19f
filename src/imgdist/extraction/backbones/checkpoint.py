"""Reading a weights file into a flat ``{name: tensor}`` dict without running code from it.

Two formats reach here:

* files written by ``torch.save`` (a state dict, possibly wrapped as ``{"state_dict": ...}``):
  read with ``torch.load(weights_only=True)``, PyTorch's own restricted unpickler;
* TorchScript archives (``torch.jit.save``; OpenAI ships its CLIP checkpoints this way). PyTorch
  refuses those with ``weights_only=True`` and would otherwise compile and load the archive's
  TorchScript code. They are read here instead: the archive is a zip whose ``<name>/data.pkl``
  pickles the module tree (objects of ``__torch__.*`` classes holding their attributes) and whose
  ``<name>/data/<key>`` records hold the raw tensor storages. :class:`_TensorOnlyUnpickler`
  resolves only the handful of globals that pickle needs to rebuild tensors; every
  ``__torch__.*`` class becomes an inert :class:`_ScriptObject` that just keeps its attribute
  dict, and any other global is refused. The archive's ``code/`` is never read. Every tensor
  attribute of the module tree comes back under its dotted name -- parameters and buffers, and also
  plain tensor attributes that ``state_dict()`` would leave out (CLIP's text attention mask);
  callers keep what their model has (CLIP: ``visual.*``) and check it strictly.

A third format holds only tensors by design: ``.safetensors`` (an 8-byte header length, a JSON
header naming each tensor's dtype, shape and byte range, then the raw bytes; OpenCLIP publishes its
weights so). It is read with the ``safetensors`` package, which runs nothing from the file.

Every failure is a one-line :class:`~imgdist.errors.WeightsError` that names the file and says what
is wrong with it. PyTorch's own messages are not passed on: they advise loading with
``weights_only=False``, which imgdist never does.
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ...errors import WeightsError, one_line

__all__ = ["check_finite_tensors", "read_tensors", "is_torchscript_archive", "is_safetensors"]

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# first bytes of formats people pass by mistake, to say what the file is
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip file"), (b"RIFF", "a RIFF (WebP/WAV) file"),
               (b"\x93NUMPY", "a NumPy .npy array"), (b"<", "a text/HTML file"), (b"{", "a JSON/text file"))


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip with a ``constants.pkl`` record: what ``torch.jit.save`` writes (``torch.save`` does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def is_safetensors(path: str | Path) -> bool:
    """A little-endian 64-bit header length that fits in the file, followed by a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = Path(path).stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError (header, truncation), OSError
        raise WeightsError(f"{path}: cannot read this safetensors file ({one_line(error)}); it is damaged "
                           "or cut short: fetch it again") from None


def _zip_without_data_pkl(path: Path) -> bool:
    """A readable zip that holds no ``data.pkl`` (e.g. a zip of images); False when unreadable,
    so that a truncated PyTorch file is reported as such."""
    try:
        with zipfile.ZipFile(path) as archive:
            return not any(n == "data.pkl" or n.endswith("/data.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _zip_cut_short(path: Path) -> bool:
    """A zip whose end-of-central-directory record is missing. That record is the last thing a zip
    writer puts down and sits in the final 64 KiB + 22 bytes (its comment is at most 65535 bytes), so
    a file cut short anywhere lacks it, while a zip damaged in the middle still has it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - (65536 + 22)))
        return b"PK\x05\x06" not in f.read()


def check_finite_tensors(state: dict[str, torch.Tensor], path) -> None:
    """Refuse weights holding NaN or infinity. Such a network does not fail: NaN is squashed to a
    constant by the clamps and normalisations after it, so every image gets the same finite features
    and every metric reads "identical sets" (FD 0, precision 1)."""
    for key, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int(tensor.numel() - torch.isfinite(tensor).sum())
            if bad:
                raise WeightsError(f"{path}: tensor '{key}' holds {bad} non-finite value(s) (NaN or infinity) "
                                   f"of {tensor.numel()}; these weights are broken")


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file by dotted name (a ``torch.save`` state dict, a TorchScript
    module's parameters and buffers, or a ``.safetensors`` file), or a one-line :class:`WeightsError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file (weights file not found)")
    if is_safetensors(path):
        return _read_safetensors(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        # neither a zip (torch >= 1.6) nor a pickle (older torch.save): say what it looks like
        kind = next((what for magic, what in _SIGNATURES if head.startswith(magic)), None)
        raise WeightsError(f"{path}: not a weights file" + (f" (it is {kind})" if kind else
                                                              " (neither a PyTorch zip archive nor a pickle)"))
    if head.startswith(b"PK") and _zip_cut_short(path):
        raise WeightsError(f"{path}: truncated: the zip archive's end record is missing ({path.stat().st_size} "
                           "bytes; the file was cut short while downloading or copying); fetch it again")
    if head.startswith(b"PK") and _zip_without_data_pkl(path):
        raise WeightsError(f"{path}: not a weights file (a zip archive without PyTorch's data.pkl record)")
    if is_torchscript_archive(path):
        state = _read_torchscript(path)
    else:
        state = _torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling and zip errors of every kind
        raise WeightsError(f"{path}: cannot read it as a PyTorch weights file ({_cause(error)})") from None


def _cause(error: Exception) -> str:
    """A short, safe reason; never PyTorch's advice to load with weights_only=False."""
    text = str(error)
    if isinstance(error, EOFError) or "Ran out of input" in text:
        return "truncated: the file ends in the middle of its data"
    if isinstance(error, zipfile.BadZipFile) or "central directory" in text \
            or "failed reading zip archive" in text:
        return "truncated or corrupt archive"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds Python objects ({found.group(1)}), not only tensors; imgdist reads tensors "
                "and never runs code from a weights file")
    if isinstance(error, pickle.UnpicklingError) or "Unpickl" in type(error).__name__:
        return "not a valid PyTorch pickle"
    return type(error).__name__


# --- TorchScript archives ---------------------------------------------------------------------

class _ScriptObject:
    """Stands in for any ``__torch__.*`` class: keeps the pickled attribute dict, runs nothing."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _list(values=()):
    return list(values)


def _keep(value, *_):  # torch.jit._pickle.restore_type_tag(value, type_string)
    return value


_JIT_PICKLE = {"build_intlist": _list, "build_doublelist": _list, "build_boollist": _list,
               "build_tensorlist": _list, "build_genericlist": _list, "restore_type_tag": _keep}


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.jit._pickle" and name in _JIT_PICKLE:
            return _JIT_PICKLE[name]
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not a tensor")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError("unknown persistent id")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            itemsize = torch.empty((), dtype=storage_type.dtype).element_size()
            if len(data) < numel * itemsize:
                raise EOFError(f"storage {key} is short")
            self.storages[key] = torch.frombuffer(data, dtype=storage_type.dtype, count=numel) \
                if numel else torch.empty(0, dtype=storage_type.dtype)
        return self.storages[key]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor without a storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _read_torchscript(path: Path) -> dict[str, torch.Tensor]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
            if len(names) != 1:
                raise WeightsError(f"{path}: a TorchScript archive without one data.pkl record; "
                                   "cannot find its tensors")
            prefix = names[0][: -len("data.pkl")]
            with archive.open(names[0]) as f:
                root = _TensorOnlyUnpickler(f, archive, prefix).load()
    except WeightsError:
        raise
    except Exception as error:  # zip, pickle and short-record errors alike
        raise WeightsError(f"{path}: cannot read this TorchScript archive's tensors ({_cause(error)})") from None
    state: dict[str, torch.Tensor] = {}
    _flatten(root, "", state)
    return state


def _flatten(obj, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Collect tensor attributes of a pickled module tree under dotted names, like ``state_dict``."""
    attributes = obj.state if isinstance(obj, _ScriptObject) else obj
    if not isinstance(attributes, dict):
        return
    for name, value in attributes.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, (_ScriptObject, dict)):
            _flatten(value, f"{prefix}{name}.", out)
