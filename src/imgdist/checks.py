"""Checks of arguments and of the environment, made before any work starts.

An argument that can only fail after minutes of feature extraction (a k larger than a set, an
output folder that does not exist, a device this machine does not have) is refused here, up
front, in one line that names the option the way the user wrote it: the Python keyword and the
CLI flag (``pr_k (--pr-k)``), since the API and the CLI share these checks.
"""

from __future__ import annotations

import numbers
import os
import tempfile

import numpy as np

from .errors import ImgdistError

#: part of the available memory a batch may plan to use (the rest: the process, workers, the OS)
MEMORY_FRACTION = 0.8


def option(name: str) -> str:
    """``pr_k`` -> ``pr_k (--pr-k)``: a keyword named for both API and CLI users."""
    return f"{name} (--{name.replace('_', '-')})"


class InvalidValue(ImgdistError, ValueError):
    """An argument out of its range or of the wrong type: a user error (one line) for the CLI, and a
    ValueError for callers of the pure metric functions."""


def _named(name: str, flag: bool) -> str:
    return option(name) if flag else name


def _is_real(value) -> bool:
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value, minimum: int, maximum: int | None = None, *, flag: bool = True) -> int:
    """An integer in ``[minimum, maximum]``, else a one-line error naming the keyword (and, with
    ``flag``, its CLI flag: the metric functions' keywords have none)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise InvalidValue(f"{_named(name, flag)} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise InvalidValue(f"{_named(name, flag)} must be {bound}, got {value}")
    return value


def check_seed(value, name: str = "seed", *, flag: bool = False):
    """None or an integer >= 0 (what :func:`numpy.random.default_rng` takes)."""
    return None if value is None else check_int(name, value, 0, flag=flag)


def check_fraction(name: str, value, *, flag: bool = True) -> float:
    """A number strictly between 0 and 1 (a confidence level)."""
    if not _is_real(value):
        raise InvalidValue(f"{_named(name, flag)} must be a number between 0 and 1, got {value!r}")
    if not 0.0 < value < 1.0:  # NaN fails too
        raise InvalidValue(f"{_named(name, flag)} must lie strictly between 0 and 1, got {float(value):g}")
    return float(value)


def check_number(name: str, value, minimum: float, maximum: float, *, flag: bool = True) -> float:
    """A number in ``[minimum, maximum]``."""
    if not _is_real(value):
        raise InvalidValue(f"{_named(name, flag)} must be a number, got {value!r}")
    if not minimum <= value <= maximum:  # NaN fails too
        raise InvalidValue(f"{_named(name, flag)} must lie between {minimum:g} and {maximum:g}, got {value!r}")
    return float(value)


def check_output(path, flag: str, suffix: str | tuple[str, ...] | None = None, inputs=()) -> str:
    """An output file that can be written: its folder exists and accepts files; the right suffix;
    not the same file as any of ``inputs`` (paths the command reads; through links too), which
    writing it would destroy.

    Checked by creating (and removing) a temporary file there, which is the only test that also
    holds for read-only file systems and for root, for whom permission bits say nothing.
    """
    path = os.fspath(path)
    if not path.strip():
        raise ImgdistError(f"{flag} {path!r}: the file name is empty")
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix or ())
    if suffixes and not path.lower().endswith(suffixes):
        raise ImgdistError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if os.path.isdir(path):
        raise ImgdistError(f"{flag} {path}: is a folder; name a file")
    for given in inputs:
        if _same_file(path, given):
            how = "" if os.path.abspath(path) == os.path.abspath(os.fspath(given)) else " (through a link)"
            raise ImgdistError(f"{flag} {path}: is the input {os.fspath(given)}{how}; writing it would destroy "
                               "the input: name another file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise ImgdistError(f"{flag} {path}: the folder {folder} {what}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ImgdistError(f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return path


def _same_file(a, b) -> bool:
    if not isinstance(b, (str, os.PathLike)):
        return False  # an in-memory input
    try:
        return os.path.isfile(b) and os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


# ------------------------------------------------------------------ device

def resolve_device(device) -> str:
    """``auto`` -> ``cuda`` where a GPU is usable, else ``cpu``; any other name is checked against
    what this machine has, so that ``--device cuda:1`` on a one-GPU machine is one line, not a
    traceback from the first batch."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = str(device or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise ImgdistError(f"device (--device) {device!r} is not a device; use auto, cpu, cuda, cuda:N "
                           "or mps") from None
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ImgdistError(f"device (--device) {device}: CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ImgdistError(f"device (--device) {device}: this machine has {count} CUDA device(s), "
                               f"numbered 0..{count - 1}")
        return str(parsed)
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ImgdistError(f"device (--device) {device}: Apple's MPS is not available on this machine; "
                               "use --device cpu")
        return "mps"
    raise ImgdistError(f"device (--device) {device}: imgdist runs on cpu, cuda or mps, not {parsed.type}")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 convolutions and matrix products natively (AVX512-BF16 or
    AMX): only there is bf16 faster than fp32; elsewhere oneDNN emulates it, slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without oneDNN
        try:
            with open("/proc/cpuinfo") as fh:
                flags = fh.read()
        except OSError:
            return False
        return " avx512_bf16" in flags or " amx_bf16" in flags


def check_cpu_precision(precision: str) -> None:
    """bf16 on a CPU that has bf16 instructions; fp16 and tf32 only on GPU (CPUs have no fast fp16
    path, and no TF32: a 'tf32' run there would be fp32 under another label)."""
    if precision == "tf32":
        raise ImgdistError("precision (--precision) tf32 is only offered on NVIDIA GPUs (TF32 is their tensor-core "
                           "format); on CPU fp32 is exact already, use fp32")
    if precision == "fp16":
        raise ImgdistError("precision (--precision) fp16 is only offered on GPU; on CPU use fp32, or bf16 "
                           "where the processor has bf16 instructions")
    if precision == "bf16" and not cpu_has_bf16():
        raise ImgdistError("precision (--precision) bf16: this CPU has no bf16 instructions (AVX512-BF16 or "
                           "AMX), so bf16 would be slower than fp32 here; use fp32")


def available_memory(device: str) -> int | None:
    """Bytes a new batch can use on ``device``, or None where it cannot be told."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if device != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def activation_bytes(per_image_mb: float, batch_size: int, precision: str = "fp32") -> float:
    """Activation memory of one batch: the backbone's per-image figure (fp32), halved in bf16/fp16."""
    return batch_size * per_image_mb * 2**20 * (0.5 if precision in ("bf16", "fp16") else 1.0)


def check_batch_memory(batch_size: int, per_image_mb: float, backbone: str, device: str,
                       precision: str = "fp32") -> None:
    """Refuse a batch size whose activations cannot fit, before the first batch is killed by the OS."""
    if not per_image_mb:
        return  # unknown for custom networks
    available = available_memory(device)
    if available is None:
        return
    per_image = activation_bytes(per_image_mb, 1, precision)
    budget = MEMORY_FRACTION * available
    if batch_size * per_image > budget:
        largest = max(1, int(budget // per_image))
        raise ImgdistError(f"batch_size (--batch-size) {batch_size} needs about "
                           f"{batch_size * per_image / 2**30:.1f} GiB for {backbone} on {device}, where "
                           f"{available / 2**30:.1f} GiB are available; use --batch-size {largest} or less")
