"""The ``imgdist`` command line: a thin layer over the Python API.

Every user error ends as one line ``imgdist: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from . import __version__
from .errors import ImgdistError
from .sources import ON_ERROR, Skipped

EXIT_USAGE = 2


def _fmt(value, digits: int = 6) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{digits - 2}e}"
        return f"{value:.{digits}g}"
    return str(value)


def format_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, allow_nan=False))


# ---------------------------------------------------------------- compare

_PAIR_NOTES = {
    "sum_abs_diff": "sum |a-b| over all values, 0..255 (the naive distance)",
    "mean_abs_diff": "mean |a-b|, 0..255",
    "mse": "mean squared difference",
    "rmse": "square root of mse",
    "psnr": "dB, higher is more similar",
    "ssim": "structural similarity, mean over R,G,B (1 = identical)",
    "ssim_luma": "structural similarity of luminance (BT.601)",
    "feature_l2": "L2 between pooled features",
    "feature_cosine": "1 - cosine of pooled features (0 = same content)",
    "feature_spatial": "unit-normalised feature maps, LPIPS-style (no learned weights)",
}


def _add_backbone_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--backbone", default=default,
                   help=f"feature network (default: {default}); 'imgdist backbones' lists them"
                        + ("; 'none' for pixel distances only" if default else ""))
    p.add_argument("--resize-mode", dest="mode", default=None,
                   help="how images become network input (e.g. pytorch-fid, tf, clean for inception); "
                        "default: the backbone's own")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")


def _cmd_compare(args) -> int:
    from .compare import compare_many

    backbone = None if args.backbone in (None, "none") else args.backbone
    skipped = Skipped()
    sort_by = args.sort_by or ("feature_cosine" if backbone else "sum_abs_diff")
    results = compare_many(args.a, args.b, backbone=backbone, mode=args.mode, resize=args.resize,
                           device=args.device, sort_by=sort_by, on_error=args.on_error, skipped=skipped)
    single = len(results) == 1 and not skipped
    if args.json:
        if single:
            _print_json(results[0].to_dict())
        else:
            _print_json({"a": args.a, "sorted_by": sort_by, "skipped": [list(s) for s in skipped.items],
                         "comparisons": [r.to_dict() for r in results]})
    elif single:
        r = results[0]
        print(f"a: {r.a}\nb: {r.b}" + (" (resized to a's size, bicubic)" if r.resized else ""))
        if r.backbone:
            print(f"backbone: {r.backbone}, resize mode {r.resize_mode}")
        print(format_table(["metric", "value", "meaning"],
                           [[k, v, _PAIR_NOTES.get(k, "")] for k, v in r.values().items()]))
    else:
        keys = list(results[0].values()) if results else []
        print(f"a: {args.a}; {len(results)} images sorted by {sort_by}")
        print(format_table(["b"] + keys, [[r.b] + [r.values()[k] for k in keys] for r in results]))
    if skipped:
        print(f"imgdist: {skipped.summary()}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgdist",
        description="Compare images by pixel distance and by feature distance (FID, KID, IS, PRDC).")
    parser.add_argument("--version", action="version", version=f"imgdist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("compare", help="distances between image A and image B (or every image in B)",
                       description="Pixel and feature distances between A and B. B may be one image or "
                                   "any source (folder, glob, archive, .npy): then A is compared with "
                                   "each image, sorted by distance.")
    p.add_argument("a", help="an image file")
    p.add_argument("b", help="an image file, or a folder / glob / archive / .npy of images")
    _add_backbone_args(p, "efficientnet-lite0")
    p.add_argument("--resize", action="store_true",
                   help="resize B to A's size (bicubic) when sizes differ, instead of failing")
    p.add_argument("--sort-by", default=None, help="metric to sort by when B holds several images "
                                                   "(default: feature_cosine, or sum_abs_diff without backbone)")
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="unreadable image in B: 'raise' stops (default), 'skip' skips and counts it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ImgdistError as exc:
        print(f"imgdist: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("imgdist: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
