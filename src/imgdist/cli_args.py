"""The command line's shared pieces: the options several commands take, and what they become as
Python keywords (the CLI is a thin layer over the API)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import defaults as D
from .checks import check_int
from .errors import ImgdistError, one_line
from .extraction.sources import ON_ERROR


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, allow_nan=False))

def add_backbone_args(p: argparse.ArgumentParser, default: str | None, allow_none: bool = False,
                       per_network: bool = False) -> None:
    shown = default or (f"the statistics file's backbone, else {D.EVAL_BACKBONE}; clip-vit-l14-336 for "
                        "--metrics cmmd")
    p.add_argument("--backbone", default=default,
                   help=f"feature network (default: {shown}): a name from 'imgdist backbones', or a "
                        "TorchScript file (custom backbone)" + ("; 'none' for pixel distances only" if allow_none else ""))
    if per_network:
        p.add_argument("--weights", default=None, action="append",
                       help="weights file for the backbone (default: package, cache, or a verified download); "
                            "NAME=PATH for any network of the run (e.g. clip-vit-l14=ViT-L-14.pt beside "
                            "inception=pt_inception.pth), repeatable")
    else:
        p.add_argument("--weights", default=None, help="weights file for the backbone (default: package, "
                                                       "cache, or a verified download)")
    p.add_argument("--resize-mode", dest="mode", default=None,
                   help="how images become network input (e.g. pytorch-fid, tf, clean for inception); "
                        "default: the backbone's own")
    p.add_argument("--device", default=D.DEVICE,
                   help=f"auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps (default: {D.DEVICE})")
    p.add_argument("--input-size", type=int, default=224,
                   help="custom backbone (--backbone FILE.pt, TorchScript): input size (default: 224)")
    p.add_argument("--mean", default="0.485,0.456,0.406",
                   help="custom backbone: per-channel mean on the 0..1 scale (default: ImageNet's)")
    p.add_argument("--std", default="0.229,0.224,0.225",
                   help="custom backbone: per-channel std on the 0..1 scale (default: ImageNet's)")

def backbone_of(args):
    """A registered name, 'none', or a TorchScript file (custom backbone)."""
    name = args.backbone
    if name in (None, "none"):
        return None
    if os.path.isfile(name):
        from .extraction.backbones.custom import custom_backbone

        def floats(text, flag):
            try:
                values = tuple(float(v) for v in text.split(","))
            except ValueError:
                raise ImgdistError(f"{flag} {text!r}: expected comma-separated numbers") from None
            if len(values) not in (1, 3):
                raise ImgdistError(f"{flag} {text!r}: give one value or three (R,G,B)")
            return values if len(values) == 3 else values[0]

        if args.weights:
            raise ImgdistError(f"--weights {weights_arg(args.weights)}: a TorchScript backbone ({name}) carries its own "
                               "weights")
        return custom_backbone(name, input_size=check_int("input_size", args.input_size, 8),
                               mean=floats(args.mean, "--mean"),
                               std=floats(args.std, "--std"), name=f"custom:{os.path.basename(name)}")
    return name

def add_perceptual_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lpips", metavar="NET", default=None,
                   help="also LPIPS v0.1 (Zhang et al. 2018) on alex, vgg or squeeze: torchvision's ImageNet "
                        "backbone and the published heads, downloaded once with a SHA-256 check")
    p.add_argument("--lpips-weights", metavar="PATH", default=None,
                   help="LPIPS weights: one state dict in the lpips package's layout (torch.save(lpips.LPIPS("
                        "net=NET).state_dict(), PATH)); results then print as LPIPS[NET:<its hash>]")
    p.add_argument("--dists", action="store_true",
                   help="also DISTS (Ding et al. 2020): VGG16 structure and texture similarity")
    p.add_argument("--dists-weights", metavar="PATH", default=None,
                   help="DISTS weights: one state dict in DISTS_pytorch's layout (torch.save(DISTS().state_dict(), "
                        "PATH)); results then print as DISTS[<its hash>]")

def perceptual_kwargs(args) -> dict:
    return dict(lpips=args.lpips, lpips_weights=args.lpips_weights, dists=args.dists,
                dists_weights=args.dists_weights)

def weights_arg(given):
    """``--weights``: one file (the run's backbone), or NAME=PATH per network; repeated plain files
    or a mix are refused."""
    if given is None or isinstance(given, str):
        return given
    named = {}
    for item in given:
        name, sep, path = item.partition("=")
        if sep and not os.path.exists(item):
            if name in named:
                raise ImgdistError(f"--weights {name}=...: given twice")
            named[name] = path
    if not named:
        if len(given) > 1:
            raise ImgdistError(f"--weights given {len(given)} times: give one file for the backbone, or NAME=PATH "
                               "for each network")
        return given[0]
    if len(named) != len(given):
        raise ImgdistError("--weights: give either one file (the backbone's) or NAME=PATH for each network, not both")
    return named

def extractor_kwargs(args) -> dict:
    return dict(weights=weights_arg(args.weights), mode=args.mode, dims=args.dims, device=args.device, precision=args.precision,
                batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress,
                cache=(args.cache_dir or True) if not args.no_cache else False)

def metric_kwargs(args) -> dict:
    from .metrics import registry

    return {s.name: getattr(args, s.name) for s in registry.settings() if s.cli and hasattr(args, s.name)}

def add_setting_args(p: argparse.ArgumentParser, metrics=None) -> None:
    """One flag per metric setting, generated from the metrics' own declarations (``metrics``: only
    the settings these read, and the evaluation's own)."""
    from .metrics import registry

    types = {"int": int, "number": float, "optional-number": float, "optional-int": int, "fraction": float,
             "choice": str, "path": str}
    read = None if metrics is None else {n for m in metrics for n in m.setting_names} | {
        s.name for s in registry.CORE_SETTINGS}
    for setting in registry.settings():
        if not setting.cli or (read is not None and setting.name not in read):
            continue
        if setting.kind == "flag":
            p.add_argument(setting.flag, dest=setting.name, action="store_true", help=setting.help_text())
        else:
            p.add_argument(setting.flag, dest=setting.name, default=setting.default, type=types[setting.kind],
                           choices=setting.choices or None, help=setting.help_text())

def print_result(result, args, table: str | None = None) -> None:
    """The result as JSON or as ``table`` (default: its own table), its warnings on stderr."""
    print(result.to_json() if args.json else table or result.table(warnings=False))
    for warning in result.warnings:  # in the JSON too; on stderr like every other warning
        print(f"imgdist: warning: {one_line(warning)}", file=sys.stderr)

def inputs_of(args, *sources) -> tuple:
    """The files a command reads: its sources, weights and a TorchScript backbone (no output may be
    one of them)."""
    weights = weights_arg(args.weights)
    weights = list(weights.values()) if isinstance(weights, dict) else [weights]
    return tuple(p for p in (*sources, *weights, args.backbone, getattr(args, "prompts", None)) if p)

def add_extraction_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dims", type=int, default=None,
                   help="feature layer by size (inception: 64, 192, 768, 2048; default: the pool layer)")
    p.add_argument("--batch-size", type=int, default=D.BATCH_SIZE,
                   help=f"images per network batch (default: {D.CPU_BATCH_SIZE} on CPU; on GPU the largest that fits "
                        "its memory, up to 256)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: chosen from the first batch on a CPU, every usable core "
                        "on a GPU; in-memory arrays are decoded in the main process)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the per-image feature cache")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: $IMGDIST_CACHE/features)")
    p.add_argument("--precision", choices=("fp32", "tf32", "bf16", "fp16"), default="fp32",
                   help="network precision: fp32 is strict (TF32 off); tf32 and fp16 on NVIDIA GPUs, bf16 on GPU "
                        "or on a CPU with bf16 instructions; those print labelled, e.g. FD[inception,tf32] "
                        "(default: fp32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="unreadable image: 'raise' stops (default), 'skip' skips and counts it")

def add_prompts_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", metavar="FILE", default=None,
                   help="the generated images' prompts (for clip-score): a .csv with columns file,prompt, a .jsonl "
                        "with keys file and prompt, or a .txt with one prompt per line in the images' order; "
                        "without it, NAME.txt beside each image (LAION / WebDataset sidecars)")

def unused_extraction_flags(args) -> list[str]:
    """Extraction flags the ADM table and batch ignore: they run the FID Inception's pool_3 and sFID
    maps in strict fp32 without the feature cache, whatever these say."""
    return [flag for flag, value in (("--dims", args.dims is not None), ("--precision", args.precision != "fp32"),
                                     ("--cache-dir", args.cache_dir is not None)) if value]
