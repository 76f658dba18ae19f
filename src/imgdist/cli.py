"""The ``imgdist`` command line: a thin layer over the Python API.

Every user error ends as one line ``imgdist: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import __version__
from . import defaults as D
from .cli_args import add_backbone_args, add_extraction_args, add_perceptual_args, add_prompts_arg, add_setting_args
from .commands import (cmd_backbones, cmd_compare, cmd_demo, cmd_eval, cmd_robustness, cmd_score, cmd_stats,
                       cmd_weights)
from .errors import ImgdistError, ImgdistWarning, one_line
from .extraction.sources import ON_ERROR


EXIT_USAGE = 2

def build_parser() -> argparse.ArgumentParser:
    from .evaluation.plan import metrics_help
    from .metrics import registry

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
    add_backbone_args(p, D.PAIR_BACKBONE, allow_none=True)
    p.add_argument("--resize", action="store_true",
                   help="resize B to A's size (bicubic) when sizes differ, instead of failing")
    p.add_argument("--sort-by", default=None, help="metric to sort by when B holds several images, e.g. mse, "
                                                   "lpips (default: feature_cosine, or sum_abs_diff without "
                                                   "backbone)")
    add_perceptual_args(p)
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="unreadable image in B: 'raise' stops (default), 'skip' skips and counts it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="compare a real set with a generated set (FID, KID, IS, PRDC, ...)",
                       description="Metrics between REAL and FAKE. Each is a folder, glob, archive, "
                                   ".npy/.npz of images, or a statistics .npz from 'imgdist stats' "
                                   "(then only FID).")
    p.add_argument("real", help="real images, or their statistics .npz")
    p.add_argument("fake", help="generated images, or their statistics .npz")
    p.add_argument("--metrics", default=None,
                   help=f"{metrics_help()} (default: {','.join(registry.default_metrics())}); NAME@BACKBONE "
                        "computes it on another network in the same pass (fid,fid@dinov2-vit-l14)")
    add_backbone_args(p, None, per_network=True)
    add_extraction_args(p)
    add_setting_args(p)
    p.add_argument("--real-test", metavar="SRC", default=None,
                   help="held-out real images the generator never saw (needed by ct, the data-copying test; "
                        "read only for ct; with --per-class, class subfolders give C_T per class)")
    p.add_argument("--per-image", metavar="PATH", default=None,
                   help="write a CSV with one row per fake: realism, nearest real, distance, inside the real "
                        "manifold, authentic, copy, and the chosen metrics' own columns (clip_score, ...)")
    add_prompts_arg(p)
    p.add_argument("--per-class", action="store_true",
                   help="REAL and FAKE hold one subfolder per class: every metric per class, worst first, "
                        "and the class-averaged FD (intra-FID)")
    p.add_argument("--force", action="store_true",
                   help="compare statistics even when their provenance (backbone, weights, resize) differs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--suite", choices=tuple(registry.suites()), default=None,
                   help="adm: OpenAI's ADM evaluator table (Inception Score, FID, sFID, Precision, Recall) for "
                        "two ADM .npz batches (arr_0 images; a reference may carry mu/sigma/mu_s/sigma_s)")
    p.add_argument("--report", metavar="PATH", default=None,  # report (HTML)
                   help="write an HTML report with thumbnails (nearest real of each fake, fakes farthest "
                        "from the real images, reals no fake covers) to PATH")
    p.add_argument("--dist-timeout", type=int, default=None, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for all ranks to join before one line names "
                        "the missing ones (default: $IMGDIST_DIST_TIMEOUT, else 300)")
    p.set_defaults(func=cmd_eval)

    one_set = [m for m in registry.metrics() if not m.needs_real]
    p = sub.add_parser("score", help="metrics of one set that need no real set (clip-score, is, vendi, ...)",
                       description="The metrics that need no real set to compare with, on IMAGES: "
                                   + ", ".join(m.name for m in one_set)
                                   + " (default: every one that applies; clip-score with prompts).")
    p.add_argument("images", help="generated images: folder, glob, archive or .npy/.npz")
    p.add_argument("--metrics", default=None,
                   help="comma-separated: " + ", ".join(m.name for m in one_set)
                        + "; NAME@BACKBONE on another network (default: every one that applies)")
    add_backbone_args(p, None, per_network=True)
    add_extraction_args(p)
    add_setting_args(p, one_set)
    add_prompts_arg(p)
    p.add_argument("--per-image", metavar="PATH", default=None,
                   help="write a CSV with one row per image: the chosen metrics' columns (clip_score, prompt, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--dist-timeout", type=int, default=None, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for all ranks to join (default: 300)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("stats", help="compute reference statistics (mu, sigma) once, reuse them in eval",
                       description="Gaussian statistics of SOURCE's features, saved as .npz with mu and "
                                   "sigma (readable by pytorch-fid), the image count and provenance.")
    p.add_argument("source", help="folder, glob, archive or .npy/.npz of images")
    p.add_argument("-o", "--output", required=True, help="output .npz")
    add_backbone_args(p, D.EVAL_BACKBONE)
    add_extraction_args(p)
    p.add_argument("--format", choices=("imgdist", "adm"), default="imgdist",
                   help="imgdist: mu, sigma, n and provenance (default); adm: an ADM reference batch (arr_0 "
                        "images drawn with --seed, mu/sigma/mu_s/sigma_s over the whole source) for --suite adm")
    p.add_argument("--adm-images", type=int, default=10_000,
                   help="--format adm: images stored in arr_0 (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="--format adm: seed drawing the arr_0 images (default: 0)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("robustness", help="distance vs shift, noise and blur: pixel vs feature metrics",
                       description="Distances between IMAGE and shifted (1, 2, 4, 8 px, edge-padded), "
                                   "noised and blurred copies of it, each divided by the same metric's "
                                   "distance between IMAGE and OTHER (default: a built-in photo).")
    p.add_argument("image", help="an image file")
    p.add_argument("other", nargs="?", default=None, help="a different image (default: built-in coffee photo)")
    add_backbone_args(p, D.PAIR_BACKBONE, allow_none=True)
    p.add_argument("--plot", default=None, help="save a plot (PNG) of the ratios")
    add_perceptual_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("demo", help="pixel vs feature distances on built-in photos, offline (under a minute on CPU)",
                       description="The lecture's example, one photo against shifted, noised and blurred "
                                   "copies, and whole sets of crops (FD and precision/recall in pixel and in "
                                   "feature space), all on photos that ship with imgdist.")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write the images, the robustness plot, an HTML report and the numbers to DIR, "
                        "and print the imgdist commands that recompute them")
    p.add_argument("--crops", type=int, default=D.DEMO_CROPS, help=f"images per set (default: {D.DEMO_CROPS})")
    p.add_argument("--lpips", metavar="NET", default=None,
                   help="the LPIPS network of the robustness table, alex, vgg or squeeze (default: alex); shown "
                        "when its weights are in the cache (the demo never downloads) or given")
    p.add_argument("--lpips-weights", metavar="PATH", default=None,
                   help="LPIPS weights for the robustness table: one state dict in the lpips package's layout")
    p.add_argument("--device", default=D.DEVICE,
                   help=f"auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps (default: {D.DEVICE})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("backbones", help="list the feature networks")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("weights", help="where each backbone's weights are and whether they are present")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_weights)
    return parser

class _WarningPrinter:
    """Every warning as one line on stderr, each distinct message once per run. (Python's own
    once-only bookkeeping is reset by every ``warnings.catch_warnings`` block, which decoding
    enters per image, so it cannot be relied on here.)"""

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = one_line(message)
        if text not in self.seen:
            self.seen.add(text)
            print(f"imgdist: warning: {text}", file=sys.stderr)

class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C so that every ``finally`` runs (the
    batch already computed reaches the cache, the cache file is closed)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

def _raise_stopped(signum, frame):
    raise _Stopped(signum)

def _handle_stop_signals() -> dict:
    """SIGTERM and SIGHUP handled like SIGINT; returns the handlers to put back."""
    import signal

    before = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:  # pragma: no cover - not POSIX
            continue
        try:
            before[signum] = signal.signal(signum, _raise_stopped)
        except ValueError:  # not the main thread (main() called from a thread): leave them
            pass
    return before

def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = _handle_stop_signals()
    try:
        with warnings.catch_warnings():
            # imgdist's own warnings, each distinct message once; libraries' deprecation notices are
            # for developers, not for someone reading a metric table
            warnings.simplefilter("ignore")
            warnings.filterwarnings("always", category=ImgdistWarning)
            warnings.filterwarnings("always", module=r"imgdist(\.|$)")
            warnings.showwarning = _WarningPrinter()
            return args.func(args)
    except ImgdistError as exc:
        print(f"imgdist: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `imgdist ... | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        print(f"imgdist: interrupted ({signal.Signals(signum).name}); features already extracted stay in the "
              "cache and are reused by the next run (unless --no-cache)", file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
