"""The ``imgdist`` command line: a thin layer over the Python API.

Every user error ends as one line ``imgdist: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from . import __version__
from . import defaults as D
from .checks import check_int, check_output
from .errors import ImgdistError, ImgdistWarning, one_line
from .formatting import format_table
from .extraction.sources import ARCHIVE_SUFFIXES, ON_ERROR, Skipped

EXIT_USAGE = 2
#: what matplotlib writes without extra packages
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


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


def _add_backbone_args(p: argparse.ArgumentParser, default: str | None, allow_none: bool = False,
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


def _backbone(args):
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
            raise ImgdistError(f"--weights {_weights(args.weights)}: a TorchScript backbone ({name}) carries its own "
                               "weights")
        return custom_backbone(name, input_size=check_int("input_size", args.input_size, 8),
                               mean=floats(args.mean, "--mean"),
                               std=floats(args.std, "--std"), name=f"custom:{os.path.basename(name)}")
    return name


def _add_perceptual_args(p: argparse.ArgumentParser) -> None:
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


def _perceptual_kwargs(args) -> dict:
    return dict(lpips=args.lpips, lpips_weights=args.lpips_weights, dists=args.dists,
                dists_weights=args.dists_weights)


def _cmd_compare(args) -> int:
    from .pairs.compare import compare_many
    from .pairs.perceptual import NOTES

    backbone = _backbone(args)
    skipped = Skipped()
    sort_by = args.sort_by or ("feature_cosine" if backbone else "sum_abs_diff")
    results = compare_many(args.a, args.b, backbone=backbone, weights=args.weights, mode=args.mode,
                           resize=args.resize, device=args.device, sort_by=sort_by, on_error=args.on_error,
                           skipped=skipped, **_perceptual_kwargs(args))
    learned = next((r.labels for r in results if r.labels), {})
    learned_line = "learned distances: " + ", ".join(f"{k} = {v}" for k, v in learned.items())
    # one file named -> one result object; a folder, glob, archive or array -> always a list
    single = os.path.isfile(args.b) and not args.b.lower().endswith(ARCHIVE_SUFFIXES + (".npy", ".npz"))
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
            print(f"backbone: {r.backbone}, resize mode {r.resize_mode}, device {r.device}")
        if learned:
            print(learned_line)
        notes = {**_PAIR_NOTES, **NOTES}
        print(format_table(["metric", "value", "meaning"],
                           [[k, v, notes.get(k, "")] for k, v in r.values().items()]))
    else:
        keys = list(results[0].values()) if results else []
        print(f"a: {args.a}; {len(results)} images sorted by {sort_by}")
        if learned:
            print(learned_line)
        print(format_table(["b"] + keys, [[r.b] + [r.values()[k] for k in keys] for r in results]))
    if skipped:
        print(f"imgdist: warning: {skipped.summary()}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- eval / stats

def _weights(given):
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


def _extractor_kwargs(args) -> dict:
    return dict(weights=_weights(args.weights), mode=args.mode, dims=args.dims, device=args.device, precision=args.precision,
                batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress,
                cache=(args.cache_dir or True) if not args.no_cache else False)


def _metric_kwargs(args) -> dict:
    from .metrics import registry

    return {s.name: getattr(args, s.name) for s in registry.settings() if s.cli and hasattr(args, s.name)}


def _add_setting_args(p: argparse.ArgumentParser, metrics=None) -> None:
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


def _cmd_eval(args) -> int:
    from .evaluation.distributed import launched_by_torchrun

    if args.suite is not None:
        if launched_by_torchrun():
            raise ImgdistError(f"--suite {args.suite}: not available under torchrun; run imgdist eval in one process")
        return _eval_suite(args)
    return _evaluate(args, args.real, args.fake)


def _cmd_score(args) -> int:
    return _evaluate(args, None, args.images)


def _evaluate(args, real, fake) -> int:
    """``eval`` and ``score``: one process, or one rank under torchrun (rank 0 prints and writes)."""
    from .evaluation.distributed import launched_by_torchrun
    from .evaluation.run import evaluate

    report, per_class, real_test = (getattr(args, name, None) for name in ("report", "per_class", "real_test"))
    # outputs before any extraction
    inputs = _inputs(args, real, fake, real_test)
    if report is not None:  # "" too: an empty name is an error, not "no report"
        check_output(report, "--report", (".html", ".htm"), inputs=inputs)
    if args.per_image is not None:
        check_output(args.per_image, "--per-image", ".csv", inputs=inputs)
    kwargs = _extractor_kwargs(args)
    distributed, rank = launched_by_torchrun(), 0
    if distributed:
        import torch.distributed as dist

        from .evaluation.distributed import init_from_environment

        kwargs["device"] = init_from_environment(args.device, args.dist_timeout)
        rank = dist.get_rank()
        kwargs["progress"] = kwargs["progress"] and rank == 0
    try:
        with warnings.catch_warnings():
            if rank:  # one copy of each warning, from rank 0
                warnings.simplefilter("ignore")
            metrics = args.metrics if args.metrics is not None or real is not None else "all"
            out = evaluate(real, fake, metrics=metrics, backbone=_backbone(args), real_test=real_test,
                           per_image=bool(args.per_image), per_class=bool(per_class), prompts=args.prompts,
                           on_error=args.on_error, force=getattr(args, "force", False),
                           return_features=bool(report), distributed=distributed, **_metric_kwargs(args), **kwargs)
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank:
        return 0
    result = out[0] if report else out
    if report:
        from .report import write_report

        write_report(report, result, out[1], out[2], real, fake, options=_metric_kwargs(args))
    if args.per_image:
        result.per_image.write_csv(args.per_image)
    _print_result(result, args)
    # file notes beside --json on stderr, so that stdout stays one JSON document
    for flag, path in (("report", report), ("per-image table", args.per_image)):
        if path:
            print(f"{flag}: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _eval_suite(args) -> int:
    """``--suite adm``: ADM's own table, its metrics and settings; the metric flags of plain eval
    would change nothing there, so they are refused rather than ignored."""
    from .evaluation.adm import adm_summary, evaluate_adm
    from .metrics import registry

    suite = registry.suites()[args.suite]
    if args.backbone not in (None, suite.backbone) or args.mode not in (None, suite.mode):
        raise ImgdistError(f"--suite {suite.name}: its table uses {suite.backbone} in resize mode {suite.mode}; "
                           "leave --backbone and --resize-mode out")
    read = {name for m in suite.metrics for name in registry.get(m).setting_names} - {"seed"}
    given = [s.flag for s in registry.settings()
             if s.cli and s.name not in read and getattr(args, s.name) != s.default]
    given += [flag for flag, value in (("--metrics", args.metrics is not None),
                                       ("--report", args.report is not None),
                                       ("--per-image", args.per_image is not None), ("--per-class", args.per_class),
                                       ("--real-test", args.real_test)) if value]
    given += _unused_extraction_flags(args)
    if given:
        raise ImgdistError(f"--suite {suite.name}: {', '.join(given)} would change nothing in its table (its "
                           f"metrics are {', '.join(suite.names.values())}); leave them out")
    weights = _weights(args.weights)
    if isinstance(weights, dict):
        raise ImgdistError(f"--suite {suite.name}: one network ({suite.backbone}); give --weights PATH")
    result = evaluate_adm(args.real, args.fake, exact=args.adm_exact, batch_size=args.batch_size,
                          device=args.device, weights=weights, progress=not args.no_progress,
                          workers=args.workers, force=args.force)
    _print_result(result, args, table=adm_summary(result))
    return 0


def _print_result(result, args, table: str | None = None) -> None:
    """The result as JSON or as ``table`` (default: its own table), its warnings on stderr."""
    print(result.to_json() if args.json else table or result.table(warnings=False))
    for warning in result.warnings:  # in the JSON too; on stderr like every other warning
        print(f"imgdist: warning: {one_line(warning)}", file=sys.stderr)


def _inputs(args, *sources) -> tuple:
    """The files a command reads: its sources, weights and a TorchScript backbone (no output may be
    one of them)."""
    weights = _weights(args.weights)
    weights = list(weights.values()) if isinstance(weights, dict) else [weights]
    return tuple(p for p in (*sources, *weights, args.backbone, getattr(args, "prompts", None)) if p)


def _cmd_stats(args) -> int:
    from .evaluation.spread import check_set
    from .extraction.features import FeatureExtractor
    from .extraction.sources import open_source

    if args.format == "adm":
        return _stats_adm(args)
    check_output(args.output, "-o/--output", ".npz", inputs=_inputs(args, args.source))
    with FeatureExtractor(_backbone(args) or D.EVAL_BACKBONE, **_extractor_kwargs(args)) as ext:
        source = open_source(args.source)
        features = ext.extract(source, keep_features=False, on_error=args.on_error)
    check_set(features, source, ext.spec.name, args.source)  # as eval refuses it
    features.stats.save(args.output)
    print(f"wrote {args.output}: {features.stats.n} images, {features.stats.dim} dimensions, "
          f"{features.stats.provenance.summary()}, device {features.device}")
    if features.skipped:
        print(f"imgdist: warning: {features.skipped.summary()}", file=sys.stderr)
    return 0


def _unused_extraction_flags(args) -> list[str]:
    """Extraction flags the ADM table and batch ignore: they run the FID Inception's pool_3 and sFID
    maps in strict fp32 without the feature cache, whatever these say."""
    return [flag for flag, value in (("--dims", args.dims is not None), ("--precision", args.precision != "fp32"),
                                     ("--cache-dir", args.cache_dir is not None)) if value]


def _stats_adm(args) -> int:
    from .evaluation.adm import write_adm_reference

    if args.backbone != "inception" or args.mode not in (None, "tf"):
        raise ImgdistError("--format adm: ADM's reference batches use the FID Inception in resize mode tf; "
                           "leave --backbone and --resize-mode out")
    given = _unused_extraction_flags(args)
    if given:
        raise ImgdistError(f"--format adm: {', '.join(given)} would change nothing in an ADM reference batch (the FID "
                           "Inception's pool_3 and sFID maps, strict fp32, no feature cache); leave them out")
    out = write_adm_reference(args.source, args.output, images=args.adm_images, seed=args.seed,
                              batch_size=args.batch_size, device=args.device, weights=args.weights,
                              workers=args.workers, progress=not args.no_progress, on_error=args.on_error)
    print(f"wrote {out['output']}: arr_0 {out['images']} images ({out['size']}), mu/sigma and mu_s/sigma_s over "
          f"{out['statistics_over']} images, {out['provenance'].summary()}")
    return 0


def _cmd_robustness(args) -> int:
    from .pairs.perturbations import robustness

    if args.plot is not None:  # before any work ("" included): the folder, the format, and matplotlib itself
        check_output(args.plot, "--plot", PLOT_SUFFIXES)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImgdistError("--plot needs matplotlib: pip install matplotlib") from None
    backbone = _backbone(args)
    result = robustness(args.image, args.other, backbone=backbone, weights=args.weights, mode=args.mode,
                        device=args.device, seed=args.seed, **_perceptual_kwargs(args))
    if args.plot:
        result.plot(args.plot)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.table())
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    echo = None if args.json else (lambda text: print(text, flush=True))
    result = run_demo(args.out, device=args.device, progress=not args.no_progress, crops=args.crops, echo=echo,
                      lpips=args.lpips, lpips_weights=args.lpips_weights)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.files_text() + "\n\n" + result.footer())
    return 0


def _megabytes(size: int | None) -> str:
    return f"{size / 1e6:,.1f} MB" if size else "-"


def _weights_facts(spec) -> dict:
    """Where a backbone's weights come from, their pinned size and hash, and whether they are here."""
    if spec.weights is None:
        return {"url": None, "size": None, "sha256": None, "present": None, "source": "none needed"}
    return _file_facts(spec.weights)


def _file_facts(w) -> dict:
    """Where one weights file comes from, its pinned size and hash, and whether it is here."""
    from .extraction.weights import weights_status

    st = weights_status(w)
    size = w.size
    if size is None and st.present:
        size = os.path.getsize(st.where)
    return {"url": w.url or w.describe(), "size": size, "sha256": w.sha256, "present": st.present,
            "source": st.source, "where": st.where}


def _cmd_backbones(args) -> int:
    from .extraction.backbones import list_specs

    rows, records = [], []
    for spec in list_specs():
        dims = ", ".join(str(d) for d in sorted({spec.feature_dim, *spec.feature_layers}))
        modes = ", ".join(m + ("*" if m == spec.default_mode else "") for m in spec.modes)
        facts = _weights_facts(spec)
        present = "-" if facts["present"] is None else ("yes" if facts["present"] else "no")
        rows.append([spec.name, dims, spec.input_size or "native", spec.num_classes or "-", modes,
                     facts["url"] or "none needed", _megabytes(facts["size"]), present])
        records.append({"name": spec.name, "dims": dims, "input_size": spec.input_size or "native",
                        "classes": spec.num_classes or "-", "resize_modes": modes, "default_mode": spec.default_mode,
                        "weights": spec.weights.describe() if spec.weights else "none needed",
                        "weights_url": spec.weights.url if spec.weights else None,
                        "weights_bytes": facts["size"], "weights_sha256": facts["sha256"],
                        "weights_present": facts["present"], "description": spec.description})
    if args.json:
        _print_json(records)
    else:
        print(format_table(["backbone", "feature dims", "input", "classes", "resize modes (*default)",
                            "weights from", "size", "present"], rows))
    return 0


def _cmd_weights(args) -> int:
    from .extraction.backbones import list_specs
    from .extraction.perceptual import weights_files
    from .extraction.weights import cache_dir

    rows, records = [], []
    files = [(spec.name, spec.weights) for spec in list_specs() if spec.weights is not None]
    for name, w in files + weights_files():  # the backbones', then LPIPS's and DISTS's files
        facts = _file_facts(w)
        present = "yes" if facts["present"] else "no"
        rows.append([name, present, facts["source"], _megabytes(facts["size"]), facts["where"]])
        records.append({"backbone": name, "present": present, "source": facts["source"],
                        "where": facts["where"], "bytes": facts["size"], "sha256": facts["sha256"],
                        "url": w.url})
    if args.json:
        _print_json(records)
    else:
        print(format_table(["backbone", "present", "source", "size", "where"], rows))
        print(f"cache: {cache_dir()} (set IMGDIST_CACHE to move it; IMGDIST_OFFLINE=1 forbids downloads)")
    return 0


def _add_extraction_args(p: argparse.ArgumentParser) -> None:
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


def _add_prompts_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", metavar="FILE", default=None,
                   help="the generated images' prompts (for clip-score): a .csv with columns file,prompt, a .jsonl "
                        "with keys file and prompt, or a .txt with one prompt per line in the images' order; "
                        "without it, NAME.txt beside each image (LAION / WebDataset sidecars)")


# ---------------------------------------------------------------- parser

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
    _add_backbone_args(p, D.PAIR_BACKBONE, allow_none=True)
    p.add_argument("--resize", action="store_true",
                   help="resize B to A's size (bicubic) when sizes differ, instead of failing")
    p.add_argument("--sort-by", default=None, help="metric to sort by when B holds several images, e.g. mse, "
                                                   "lpips (default: feature_cosine, or sum_abs_diff without "
                                                   "backbone)")
    _add_perceptual_args(p)
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="unreadable image in B: 'raise' stops (default), 'skip' skips and counts it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("eval", help="compare a real set with a generated set (FID, KID, IS, PRDC, ...)",
                       description="Metrics between REAL and FAKE. Each is a folder, glob, archive, "
                                   ".npy/.npz of images, or a statistics .npz from 'imgdist stats' "
                                   "(then only FID).")
    p.add_argument("real", help="real images, or their statistics .npz")
    p.add_argument("fake", help="generated images, or their statistics .npz")
    p.add_argument("--metrics", default=None,
                   help=f"{metrics_help()} (default: {','.join(registry.default_metrics())}); NAME@BACKBONE "
                        "computes it on another network in the same pass (fid,fid@dinov2-vit-l14)")
    _add_backbone_args(p, None, per_network=True)
    _add_extraction_args(p)
    _add_setting_args(p)
    p.add_argument("--real-test", metavar="SRC", default=None,
                   help="held-out real images the generator never saw (needed by ct, the data-copying test; "
                        "read only for ct; with --per-class, class subfolders give C_T per class)")
    p.add_argument("--per-image", metavar="PATH", default=None,
                   help="write a CSV with one row per fake: realism, nearest real, distance, inside the real "
                        "manifold, authentic, copy, and the chosen metrics' own columns (clip_score, ...)")
    _add_prompts_arg(p)
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
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("score", help="metrics of one set that need no real set (clip-score, is, vendi, ...)",
                       description="The metrics that need no real set to compare with, on IMAGES: "
                                   + ", ".join(m.name for m in registry.metrics() if not m.needs_real)
                                   + " (default: every one that applies; clip-score with prompts).")
    p.add_argument("images", help="generated images: folder, glob, archive or .npy/.npz")
    p.add_argument("--metrics", default=None,
                   help="comma-separated: " + ", ".join(m.name for m in registry.metrics() if not m.needs_real)
                        + "; NAME@BACKBONE on another network (default: every one that applies)")
    _add_backbone_args(p, None, per_network=True)
    _add_extraction_args(p)
    _add_setting_args(p, [m for m in registry.metrics() if not m.needs_real])
    _add_prompts_arg(p)
    p.add_argument("--per-image", metavar="PATH", default=None,
                   help="write a CSV with one row per image: the chosen metrics' columns (clip_score, prompt, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--dist-timeout", type=int, default=None, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for all ranks to join (default: 300)")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("stats", help="compute reference statistics (mu, sigma) once, reuse them in eval",
                       description="Gaussian statistics of SOURCE's features, saved as .npz with mu and "
                                   "sigma (readable by pytorch-fid), the image count and provenance.")
    p.add_argument("source", help="folder, glob, archive or .npy/.npz of images")
    p.add_argument("-o", "--output", required=True, help="output .npz")
    _add_backbone_args(p, D.EVAL_BACKBONE)
    _add_extraction_args(p)
    p.add_argument("--format", choices=("imgdist", "adm"), default="imgdist",
                   help="imgdist: mu, sigma, n and provenance (default); adm: an ADM reference batch (arr_0 "
                        "images drawn with --seed, mu/sigma/mu_s/sigma_s over the whole source) for --suite adm")
    p.add_argument("--adm-images", type=int, default=10_000,
                   help="--format adm: images stored in arr_0 (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="--format adm: seed drawing the arr_0 images (default: 0)")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("robustness", help="distance vs shift, noise and blur: pixel vs feature metrics",
                       description="Distances between IMAGE and shifted (1, 2, 4, 8 px, edge-padded), "
                                   "noised and blurred copies of it, each divided by the same metric's "
                                   "distance between IMAGE and OTHER (default: a built-in photo).")
    p.add_argument("image", help="an image file")
    p.add_argument("other", nargs="?", default=None, help="a different image (default: built-in coffee photo)")
    _add_backbone_args(p, D.PAIR_BACKBONE, allow_none=True)
    p.add_argument("--plot", default=None, help="save a plot (PNG) of the ratios")
    _add_perceptual_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_robustness)

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
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("backbones", help="list the feature networks")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_backbones)

    p = sub.add_parser("weights", help="where each backbone's weights are and whether they are present")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_weights)
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
