"""Backbone throughput on this machine: images per second at a fixed batch size.

    python benchmarks/bench_backbones.py [NAME ...] [--batch 32] [--repeats 3] [--device cpu]

For each registered backbone name (default: efficientnet-lite0 and inception) it times the
``pool`` output with random weights (``build(None)``: speed does not depend on the values) in
three settings:

* ``no_grad``          ``model.eval()`` under ``torch.no_grad()`` (the plain way)
* ``inference_mode``   ``torch.inference_mode()`` instead
* ``inf+channels_last`` inference mode with model and input in ``torch.channels_last``

and prints one table row per backbone and setting, with the speed relative to ``no_grad``.
A backbone whose module cannot be imported (yet) gets a ``skip`` line instead of a row.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import statistics
import time

import torch

BUILTIN_MODULES = ("efficientnet", "inception", "pixels")
SETTINGS = ("no_grad", "inference_mode", "inf+channels_last")


def load_registry() -> tuple[dict, dict[str, str]]:
    """Import each built-in backbone module on its own, so that one broken module skips only
    its own backbones. Returns the registry and, per module that failed, why."""
    failures = {}
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(f"imgdist.backbones.{module}")
        except Exception as error:  # noqa: BLE001 - reported, not hidden
            failures[module] = f"{type(error).__name__}: {' '.join(str(error).split())}"[:160]
    from imgdist.backbones import _REGISTRY

    return _REGISTRY, failures


def prepare(model, x: torch.Tensor, setting: str):
    """The model and input for one setting (channels_last converts a copy)."""
    if setting == "inf+channels_last":
        return (copy.deepcopy(model).to(memory_format=torch.channels_last),
                x.contiguous(memory_format=torch.channels_last))
    return model, x


def run_once(model, x: torch.Tensor, setting: str) -> float:
    """Images/s of one batch."""
    context = torch.no_grad if setting == "no_grad" else torch.inference_mode
    with context():
        start = time.perf_counter()
        model(x, outputs=("pool",))
        return x.shape[0] / (time.perf_counter() - start)


def time_settings(model, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median images/s per setting. Settings take turns batch by batch, so that load from other
    processes on the machine affects them alike; one warm-up batch each (allocator, oneDNN)."""
    prepared = {s: prepare(model, x, s) for s in SETTINGS}
    for setting, (m, xs) in prepared.items():
        run_once(m, xs, setting)
    rates: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for _ in range(repeats):
        for setting, (m, xs) in prepared.items():
            rates[setting].append(run_once(m, xs, setting))
    return {s: statistics.median(r) for s, r in rates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["efficientnet-lite0", "inception"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    registry, failures = load_registry()
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, median of {args.repeats} interleaved batches, random weights, "
          "output 'pool'")
    header = f"{'backbone':<20} {'input':>7} {'setting':<18} {'images/s':>9} {'vs no_grad':>10}"
    print(header)
    print("-" * len(header))
    for name in args.names:
        spec = registry.get(name)
        if spec is None:
            why = "; ".join(f"{m}: {e}" for m, e in failures.items()) or "not registered"
            print(f"{name:<20} skip: backbone not available ({why})")
            continue
        size = spec.input_size or 224
        torch.manual_seed(0)
        model = spec.build(None).to(args.device)
        x = torch.randn(args.batch, 3, size, size, device=args.device)
        rates = time_settings(model, x, args.repeats)
        base = rates[SETTINGS[0]]
        for setting, rate in rates.items():
            print(f"{name:<20} {size:>4}px {setting:<18} {rate:>9.1f} {rate / base:>9.2f}x",
                  flush=True)
        del model, x
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
