"""Backbone throughput on this machine: images per second at a fixed batch size.

    python benchmarks/bench_backbones.py [NAME ...] [--batch 16] [--repeats 3] [--device cpu]
                                         [--settings no_grad,inference_mode,...]

Default names: efficientnet-lite0, inception and every DINOv2 and CLIP backbone except
dinov2-vit-g14 (1.1 B parameters, about a minute per image on two CPU cores; name it to time it).
The ``pool`` output is timed with random weights (``build(None)``: speed does not depend on the
values), the input already at the backbone's size (decoding and resizing are not included).

Settings (each compared with ``no_grad``):

* ``no_grad``            ``model.eval()`` under ``torch.no_grad()`` (the plain way)
* ``inference_mode``     ``torch.inference_mode()`` instead (what imgdist's extractor uses)
* ``inf+channels_last``  inference mode with model and input in ``torch.channels_last`` (1.5-1.7x
                         for the CNNs; a ViT has one convolution, so it should not matter there)
* ViTs only -- how attention is computed inside the same blocks:

  - ``inf+sdpa-math``    ``scaled_dot_product_attention`` restricted to its reference (math)
                         backend instead of letting it pick the fused CPU kernel;
  - ``inf+explicit``     ``softmax(q k^T / sqrt(d)) v`` written out, as the DINOv2 authors' and
                         OpenAI's code compute it;
  - ``inf+mha-fastpath`` each attention sub-layer replaced by a ``torch.nn.MultiheadAttention``
                         (``batch_first``) holding the same weights, in inference mode, where
                         PyTorch takes its fused "fast path" (``torch.backends.mha``).

A backbone whose module cannot be imported (yet) gets a ``skip`` line instead of a row. The
machine may be shared: numbers are indicative, relative speeds within one row block more so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import statistics
import time

import torch
import torch.nn.functional as F

BUILTIN_MODULES = ("efficientnet", "inception", "pixels", "dinov2", "clip")
CNN_SETTINGS = ("no_grad", "inference_mode", "inf+channels_last")
VIT_SETTINGS = CNN_SETTINGS + ("inf+sdpa-math", "inf+explicit", "inf+mha-fastpath")
DEFAULT_NAMES = ("efficientnet-lite0", "inception", "dinov2-vit-s14", "dinov2-vit-b14", "dinov2-vit-l14",
                 "clip-vit-b32", "clip-vit-l14", "clip-vit-l14-336")


def load_registry() -> tuple[dict, dict[str, str]]:
    """Import each built-in backbone module on its own, so that one broken module skips only
    its own backbones. Returns the registry and, per module that failed, why."""
    failures = {}
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(f"imgdist.extraction.backbones.{module}")
        except Exception as error:  # noqa: BLE001 - reported, not hidden
            failures[module] = f"{type(error).__name__}: {' '.join(str(error).split())}"[:160]
    from imgdist.extraction.backbones import _REGISTRY

    return _REGISTRY, failures


def _explicit_attention(q, k, v):
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


def _math_attention(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


def _mha_model(model):
    """A copy of a ViT whose blocks run their attention through nn.MultiheadAttention."""
    from imgdist.extraction.backbones import vit

    model = copy.deepcopy(model)
    for block in model.blocks_list:
        cfg, lay = block.cfg, block.cfg.layout
        mha = torch.nn.MultiheadAttention(cfg.width, cfg.heads, batch_first=True).eval()
        with torch.no_grad():
            mha.in_proj_weight.copy_(block.get_parameter(lay.qkv_weight))
            mha.in_proj_bias.copy_(block.get_parameter(lay.qkv_bias))
            mha.out_proj.weight.copy_(block.get_parameter(f"{lay.out}.weight"))
            mha.out_proj.bias.copy_(block.get_parameter(f"{lay.out}.bias"))
        block.mha = mha.requires_grad_(False)

        def forward(x, block=block):
            cfg, lay = block.cfg, block.cfg.layout
            n1 = block._norm(x, lay.norm1)
            h = block.mha(n1, n1, n1, need_weights=False)[0]
            x = x + (h * block.get_parameter(lay.ls1) if lay.ls1 else h)
            h = block._linear(block._norm(x, lay.norm2), lay.fc1)
            if cfg.act == "swiglu":
                a, b = h.chunk(2, dim=-1)
                h = F.silu(a) * b
            else:
                h = vit.ACTIVATIONS[cfg.act](h)
            h = block._linear(h, lay.fc2)
            return x + (h * block.get_parameter(lay.ls2) if lay.ls2 else h)

        block.forward = forward
    return model


def prepare(model, x: torch.Tensor, setting: str):
    """The model, input and attention function for one setting."""
    if setting == "inf+channels_last":
        return (copy.deepcopy(model).to(memory_format=torch.channels_last),
                x.contiguous(memory_format=torch.channels_last), None)
    if setting == "inf+sdpa-math":
        return model, x, _math_attention
    if setting == "inf+explicit":
        return model, x, _explicit_attention
    if setting == "inf+mha-fastpath":
        return _mha_model(model), x, None
    return model, x, None


def run_once(model, x: torch.Tensor, setting: str, attention) -> tuple[float, torch.Tensor]:
    """Images/s of one batch, and the output."""
    from imgdist.extraction.backbones import vit

    context = torch.no_grad if setting == "no_grad" else torch.inference_mode
    default = vit.attention
    if attention is not None:
        vit.attention = attention
    try:
        with context():
            start = time.perf_counter()
            out = model(x, outputs=("pool",))["pool"]
            return x.shape[0] / (time.perf_counter() - start), out
    finally:
        vit.attention = default


def time_settings(model, x: torch.Tensor, repeats: int, settings) -> tuple[dict[str, float], dict[str, float]]:
    """Median images/s per setting, and each setting's max |output - first setting's| / max |first|.
    Settings take turns batch by batch, so that load from other processes on the machine affects
    them alike; one warm-up batch each (allocator, oneDNN)."""
    prepared = {s: prepare(model, x, s) for s in settings}
    outputs = {setting: run_once(m, xs, setting, attn)[1] for setting, (m, xs, attn) in prepared.items()}
    first = outputs[settings[0]]
    deviation = {s: float((o - first).abs().max() / first.abs().max()) for s, o in outputs.items()}
    rates: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(repeats):
        for setting, (m, xs, attn) in prepared.items():
            rates[setting].append(run_once(m, xs, setting, attn)[0])
    return {s: statistics.median(r) for s, r in rates.items()}, deviation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(DEFAULT_NAMES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", default=None,
                        help="comma-separated subset of the settings (default: all that apply)")
    args = parser.parse_args(argv)

    registry, failures = load_registry()
    from imgdist.extraction.backbones.vit import VisionTransformer

    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, median of {args.repeats} interleaved batches, random weights, "
          "output 'pool'")
    header = (f"{'backbone':<18} {'input':>7} {'setting':<18} {'images/s':>9} {'vs no_grad':>10} "
              f"{'max rel diff':>12}")
    print(header)
    print("-" * len(header))
    for name in args.names:
        spec = registry.get(name)
        if spec is None:
            why = "; ".join(f"{m}: {e}" for m, e in failures.items()) or "not registered"
            print(f"{name:<18} skip: backbone not available ({why})")
            continue
        size = spec.input_size or 224
        torch.manual_seed(0)
        model = spec.build(None).to(args.device)
        is_vit = isinstance(model, VisionTransformer)
        settings = VIT_SETTINGS if is_vit else CNN_SETTINGS
        if args.settings:
            wanted = args.settings.split(",")
            settings = tuple(s for s in settings if s in wanted)
        x = torch.randn(args.batch, 3, size, size, device=args.device)
        rates, deviation = time_settings(model, x, args.repeats, settings)
        base = rates.get("no_grad")
        for setting, rate in rates.items():
            relative = f"{rate / base:>9.2f}x" if base else f"{'':>10}"
            print(f"{name:<18} {size:>4}px {setting:<18} {rate:>9.2f} {relative} {deviation[setting]:>12.1e}",
                  flush=True)
        del model, x
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
