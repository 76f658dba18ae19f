"""Finding the perceptual networks' weight files and naming what was found.

The files are found like a backbone's (:func:`imgdist.extraction.weights.resolve_weights`: an
explicit path, an installed package, the cache, a verified download) and read as tensors only
(:mod:`imgdist.extraction.backbones.checkpoint`). The published files are identified by their
pinned SHA-256; any other file labels the results with the first hex digits of its own.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...errors import WeightsError
from ..backbones.base import WeightsSpec, check_state_dict
from ..backbones.checkpoint import check_finite_tensors, read_tensors
from ..weights import hash_matches, resolve_weights, sha256_file_cached


def resolve(spec: WeightsSpec | None, path, name: str, flag: str, *, progress: bool = True) -> Path:
    """``path`` when given (it must exist), else ``spec``'s file found or downloaded; a one-line
    error that offers ``flag`` when neither works."""
    if path is not None:
        return resolve_weights(WeightsSpec(filename=Path(path).name), path, backbone=name)
    return resolve_weights(spec, None, backbone=name, progress=progress,
                           instead=(f"pass {flag} PATH (one file in the reference package's layout)",))


def identify(files: dict[str, Path], pinned: dict[str, WeightsSpec]) -> tuple[dict[str, str], str | None]:
    """Each file's SHA-256, and the tag results carry: None when every file is the published one
    (by its pinned SHA-256), else the first 8 hex digits of the first file that is not."""
    digests = {role: sha256_file_cached(path) for role, path in files.items()}
    for role, digest in digests.items():
        spec = pinned.get(role)
        if spec is None or not hash_matches(digest, spec.sha256):
            return digests, digest[:8]
    return digests, None


def load_package_state(model: nn.Module, path, expected: str, name: str, *, prepare=None, check=None) -> None:
    """One state dict in a reference package's layout into ``model``, strictly; each refusal is one
    line: an unreadable file (``expected``: what it should have held), other keys or shapes than
    ``name``'s, a tensor ``check(state)`` refuses (the fixed values that tell the package's weights
    from others), NaN or infinity. ``prepare(state)`` first turns the package's layout into ``model``'s."""
    try:
        state = read_tensors(path)
    except WeightsError as error:
        raise WeightsError(f"{error}; expected {expected}") from None
    if prepare is not None:
        state = prepare(state)
    check_state_dict(model, state, path, name)
    if check is not None:
        check(state)
    check_finite_tensors(state, path)
    model.load_state_dict(state, strict=True)


def params_view(children: dict[str, nn.Module], parameters: dict[str, nn.Parameter] | None = None) -> nn.Module:
    """A module holding ``children`` and ``parameters`` under the given names (shared, not copied):
    loading a state dict into it fills them in their owner."""
    view = nn.Module()
    for name, child in children.items():
        view.add_module(name, child)
    for name, parameter in (parameters or {}).items():
        view.register_parameter(name, parameter)
    return view
