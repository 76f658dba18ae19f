"""What each ``imgdist`` command does with its parsed arguments (:mod:`imgdist.cli` builds the
parser and runs them)."""

from __future__ import annotations

import os
import sys
import warnings

from . import defaults as D
from .checks import check_output
from .errors import ImgdistError
from .formatting import format_table
from .extraction.sources import ARCHIVE_SUFFIXES, Skipped
from .cli_args import (backbone_of, extractor_kwargs, inputs_of, metric_kwargs, perceptual_kwargs, print_json,
                       print_result, unused_extraction_flags, weights_arg)


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

#: what matplotlib writes without extra packages
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

def cmd_compare(args) -> int:
    from .pairs.compare import compare_many
    from .pairs.perceptual import NOTES

    backbone = backbone_of(args)
    skipped = Skipped()
    sort_by = args.sort_by or ("feature_cosine" if backbone else "sum_abs_diff")
    results = compare_many(args.a, args.b, backbone=backbone, weights=args.weights, mode=args.mode,
                           resize=args.resize, device=args.device, sort_by=sort_by, on_error=args.on_error,
                           skipped=skipped, **perceptual_kwargs(args))
    learned = next((r.labels for r in results if r.labels), {})
    learned_line = "learned distances: " + ", ".join(f"{k} = {v}" for k, v in learned.items())
    # one file named -> one result object; a folder, glob, archive or array -> always a list
    single = os.path.isfile(args.b) and not args.b.lower().endswith(ARCHIVE_SUFFIXES + (".npy", ".npz"))
    if args.json:
        if single:
            print_json(results[0].to_dict())
        else:
            print_json({"a": args.a, "sorted_by": sort_by, "skipped": [list(s) for s in skipped.items],
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

def cmd_eval(args) -> int:
    from .evaluation.distributed import launched_by_torchrun

    if args.suite is not None:
        if launched_by_torchrun():
            raise ImgdistError(f"--suite {args.suite}: not available under torchrun; run imgdist eval in one process")
        return _eval_suite(args)
    return _evaluate(args, args.real, args.fake)

def cmd_score(args) -> int:
    return _evaluate(args, None, args.images)

def _evaluate(args, real, fake) -> int:
    """``eval`` and ``score``: one process, or one rank under torchrun (rank 0 prints and writes)."""
    from .evaluation.distributed import launched_by_torchrun
    from .evaluation.run import evaluate

    report, per_class, real_test = (getattr(args, name, None) for name in ("report", "per_class", "real_test"))
    # outputs before any extraction
    inputs = inputs_of(args, real, fake, real_test)
    if report is not None:  # "" too: an empty name is an error, not "no report"
        check_output(report, "--report", (".html", ".htm"), inputs=inputs)
    if args.per_image is not None:
        check_output(args.per_image, "--per-image", ".csv", inputs=inputs)
    kwargs, settings = extractor_kwargs(args), metric_kwargs(args)
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
            out = evaluate(real, fake, metrics=args.metrics, backbone=backbone_of(args), real_test=real_test,
                           per_image=bool(args.per_image), per_class=bool(per_class), prompts=args.prompts,
                           on_error=args.on_error, force=getattr(args, "force", False),
                           return_features=bool(report), distributed=distributed, **settings, **kwargs)
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank:
        return 0
    result = out[0] if report else out
    if report:
        from .report import write_report

        write_report(report, result, out[1], out[2], real, fake, options=settings)
    if args.per_image:
        result.per_image.write_csv(args.per_image)
    print_result(result, args)
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
    given += unused_extraction_flags(args)
    if given:
        raise ImgdistError(f"--suite {suite.name}: {', '.join(given)} would change nothing in its table (its "
                           f"metrics are {', '.join(suite.names.values())}); leave them out")
    weights = weights_arg(args.weights)
    if isinstance(weights, dict):
        raise ImgdistError(f"--suite {suite.name}: one network ({suite.backbone}); give --weights PATH")
    result = evaluate_adm(args.real, args.fake, exact=args.adm_exact, batch_size=args.batch_size,
                          device=args.device, weights=weights, progress=not args.no_progress,
                          workers=args.workers, force=args.force)
    print_result(result, args, table=adm_summary(result))
    return 0

def cmd_stats(args) -> int:
    from .evaluation.spread import check_set
    from .extraction.features import FeatureExtractor
    from .extraction.sources import open_source

    if args.format == "adm":
        return _stats_adm(args)
    check_output(args.output, "-o/--output", ".npz", inputs=inputs_of(args, args.source))
    with FeatureExtractor(backbone_of(args) or D.EVAL_BACKBONE, **extractor_kwargs(args)) as ext:
        source = open_source(args.source)
        features = ext.extract(source, keep_features=False, on_error=args.on_error)
    check_set(features, source, ext.spec.name, args.source)  # as eval refuses it
    features.stats.save(args.output)
    print(f"wrote {args.output}: {features.stats.n} images, {features.stats.dim} dimensions, "
          f"{features.stats.provenance.summary()}, device {features.device}")
    if features.skipped:
        print(f"imgdist: warning: {features.skipped.summary()}", file=sys.stderr)
    return 0

def _stats_adm(args) -> int:
    from .evaluation.adm import write_adm_reference

    if args.backbone != "inception" or args.mode not in (None, "tf"):
        raise ImgdistError("--format adm: ADM's reference batches use the FID Inception in resize mode tf; "
                           "leave --backbone and --resize-mode out")
    given = unused_extraction_flags(args)
    if given:
        raise ImgdistError(f"--format adm: {', '.join(given)} would change nothing in an ADM reference batch (the FID "
                           "Inception's pool_3 and sFID maps, strict fp32, no feature cache); leave them out")
    out = write_adm_reference(args.source, args.output, images=args.adm_images, seed=args.seed,
                              batch_size=args.batch_size, device=args.device, weights=args.weights,
                              workers=args.workers, progress=not args.no_progress, on_error=args.on_error)
    print(f"wrote {out['output']}: arr_0 {out['images']} images ({out['size']}), mu/sigma and mu_s/sigma_s over "
          f"{out['statistics_over']} images, {out['provenance'].summary()}")
    return 0

def cmd_robustness(args) -> int:
    from .pairs.perturbations import robustness

    if args.plot is not None:  # before any work ("" included): the folder, the format, and matplotlib itself
        check_output(args.plot, "--plot", PLOT_SUFFIXES)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImgdistError("--plot needs matplotlib: pip install matplotlib") from None
    backbone = backbone_of(args)
    result = robustness(args.image, args.other, backbone=backbone, weights=args.weights, mode=args.mode,
                        device=args.device, seed=args.seed, **perceptual_kwargs(args))
    if args.plot:
        result.plot(args.plot)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.table())
        if args.plot:
            print(f"plot: {args.plot}")
    return 0

def cmd_demo(args) -> int:
    from .demo import run_demo

    echo = None if args.json else (lambda text: print(text, flush=True))
    result = run_demo(args.out, device=args.device, progress=not args.no_progress, crops=args.crops, echo=echo,
                      lpips=args.lpips, lpips_weights=args.lpips_weights)
    if args.json:
        print_json(result.to_dict())
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

def cmd_backbones(args) -> int:
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
        print_json(records)
    else:
        print(format_table(["backbone", "feature dims", "input", "classes", "resize modes (*default)",
                            "weights from", "size", "present"], rows))
    return 0

def cmd_weights(args) -> int:
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
        print_json(records)
    else:
        print(format_table(["backbone", "present", "source", "size", "where"], rows))
        print(f"cache: {cache_dir()} (set IMGDIST_CACHE to move it; IMGDIST_OFFLINE=1 forbids downloads)")
    return 0
