"""One evaluation run: a real set against a generated set, every metric from one extraction each.

``evaluate(real, fake)`` returns a :class:`Result`; ``compute_stats(source)`` gives reusable
reference statistics. The same code runs in one process and under ``torchrun``
(``distributed=True``, see :mod:`imgdist.evaluation.distributed`): each rank extracts its share of
every set, the shares are gathered, and the metrics' heavy work is split. The streaming
:class:`~imgdist.evaluation.streaming.Evaluator` runs the same plan batch by batch.
"""

from __future__ import annotations

import warnings

from .. import defaults as D
from ..errors import ImgdistError, ImgdistWarning
from ..extraction.features import FeatureExtractor, Features
from ..extraction.sources import ImageSource, check_on_error, open_source
from ..extraction.stats import GaussianStats, is_stats_file
from ..metrics import registry as R
from ..metrics._shard import ALONE
from .compute import evaluate_features, known_counts
from .options import MetricOptions
from .plan import Plan, default_space, make_plan, parse_metrics, request
from .results import Result, metric_label, weights_tag
from .side_checks import assert_backbone, check_held_out, check_shared_classes, check_stats_dims
from .spread import check_spread
from .streaming import Evaluator

__all__ = ["Evaluator", "MetricOptions", "Result", "compute_stats", "evaluate", "evaluate_features",
           "metric_label", "parse_metrics", "weights_tag"]


# ------------------------------------------------------------------ API

def compute_stats(source, backbone=D.EVAL_BACKBONE, *, on_error="raise", **kwargs) -> GaussianStats:
    """Reference statistics of a source (save them with ``.save(path)``)."""
    check_on_error(on_error)
    extractor = FeatureExtractor(backbone, **kwargs)
    return extractor.extract(source, keep_features=False, on_error=on_error).stats


def open_input(spec) -> GaussianStats | ImageSource:
    """A side of an evaluation: statistics (validated on load) or a source of images.

    An ADM batch (``arr_0`` images plus stored ``mu``/``sigma``) is its images: every metric uses
    them, and the stored statistics (ADM's TensorFlow graph, another network than most runs use)
    are left out with a warning; ``--suite adm`` is where they count."""
    if is_stats_file(spec):
        return GaussianStats.load(spec)
    if _stored_beside_images(spec):
        warnings.warn(f"{spec}: an ADM batch: its arr_0 images are used for every metric and its stored "
                      "mu/sigma/mu_s/sigma_s are not (they belong to ADM's evaluator; use --suite adm for them)",
                      ImgdistWarning, stacklevel=3)
    return open_source(spec)


def _stored_beside_images(spec) -> bool:
    from ..extraction.stats import IMAGE_KEYS, npz_keys

    keys = npz_keys(spec)
    return bool(keys and keys & set(IMAGE_KEYS) and "mu" in keys)


def _spec_of(backbone):
    from ..extraction.backbones import Backbone, get_spec

    return backbone.spec if isinstance(backbone, Backbone) else get_spec(backbone)


def _choose_backbone(backbone, mode, dims, inputs: dict, asked):
    """Without an explicit backbone: the one a statistics file was made with (and its resize mode
    and layer), so that ``eval ref.npz images/`` measures the images the way ``ref.npz`` was made;
    else the metrics' own (CMMD's CLIP encoder for ``--metrics cmmd``), else Inception."""
    if backbone is not None:
        return backbone, mode, dims
    recorded = [obj.provenance for obj in inputs.values()
                if isinstance(obj, GaussianStats) and obj.provenance.known]
    if not recorded:
        backbone, own_mode = default_space(asked.names or R.names(), D.EVAL_BACKBONE)
        return backbone, mode or own_mode, dims
    prov = recorded[0]
    from ..extraction.backbones import get_spec

    try:
        spec = get_spec(prov.backbone)
    except ImgdistError:
        raise ImgdistError(f"the statistics were made with backbone {prov.backbone!r}, which is not built in; "
                           "pass it with --backbone (e.g. the TorchScript file)") from None
    if dims is None and prov.feature_layer not in (None, "pool"):
        dims = next((d for d, layer in spec.feature_layers.items() if layer == prov.feature_layer), None)
    return spec.name, mode or prov.resize_mode, dims


def evaluate(real, fake, *, metrics=None, backbone=None, weights=None, mode=None,
             dims=None, device=D.DEVICE, precision="fp32", batch_size=D.BATCH_SIZE, workers=None,
             progress=True, cache=False, real_test=None, per_image: bool = False, per_class: bool = False,
             on_error="raise", force=False, extractor: FeatureExtractor | None = None,
             return_features: bool = False, distributed: bool = False, **settings):
    """Compare a real set with a generated set.

    ``real`` / ``fake``: any image source, or a statistics ``.npz`` (then only FID is possible).
    ``metrics``: names or ``'fid,kid,prdc'`` (``'all'``: every metric that applies; None: the
    default metrics).
    ``backbone``: a name from ``imgdist backbones`` or a :class:`~imgdist.extraction.backbones.Backbone`;
    None: the backbone a statistics file on either side was made with, else the metrics' own
    (CMMD's CLIP), else ``inception``.
    ``settings``: the metric settings by keyword (``kid_subsets``, ``pr_k``, ``bootstrap``, ...: each
    declared by the metric that owns it, the same names as the CLI flags).
    ``real_test``: held-out real images the generator never saw (the C_T test, metric ``ct``).
    ``per_image``: fill ``result.per_image`` (realism, nearest real, authenticity, copy per fake,
    and the chosen metrics' own columns).
    ``per_class``: ``real`` and ``fake`` are folders with one subfolder per class; fill
    ``result.per_class`` and the class-averaged FD (``result.details['intra_fid']``).
    ``return_features``: keep per-image features of both sides whatever the metrics need and return
    ``(result, real_features, fake_features)`` (e.g. for :func:`imgdist.report.write_report`); both
    sides must then be images.
    ``distributed``: run as one rank of an initialised ``torch.distributed`` process group
    (torchrun): each rank extracts its share of every set and every rank returns the result.

    Every argument, the statistics files and the set sizes are checked before any extraction.
    """
    options = MetricOptions.from_keywords(settings)
    asked = request(metrics)
    check_on_error(on_error)
    inputs = {"real": open_input(real), "fake": open_input(fake)}
    if real_test is not None:
        inputs["real_test"] = open_source(real_test)
    stats_sides = tuple(side for side, obj in inputs.items() if isinstance(obj, GaussianStats))
    ext = extractor
    if ext is None and len(stats_sides) < 2:
        backbone, mode, dims = _choose_backbone(backbone, mode, dims, inputs, asked)
    spec = ext.spec if ext is not None else (_spec_of(backbone) if len(stats_sides) < 2 else None)
    notes = ([assert_backbone(inputs, None if backbone is None else _spec_of(backbone))]
             if len(stats_sides) == 2 else [])
    counts = {side: (obj.n if isinstance(obj, GaussianStats) else len(obj)) for side, obj in inputs.items()}
    plan = make_plan(asked, options, spec=spec, stats_sides=stats_sides, counts=known_counts(counts, inputs),
                     real_test=real_test is not None, per_image=per_image, per_class=per_class,
                     return_features=return_features)
    unused_test = "real_test" in inputs and not plan.real_test
    if unused_test:  # only C_T reads the held-out set: not minutes of extraction for nothing
        del inputs["real_test"]
    if per_class:  # the layout is checked before the work, as far as names tell
        check_shared_classes(inputs["real"], inputs["fake"])
    if "real_test" in inputs:
        notes.append(check_held_out(inputs["real"], inputs["real_test"], real_test))

    if ext is None and len(stats_sides) < 2:
        ext = FeatureExtractor(backbone, weights=weights, mode=mode, dims=dims, device=device,
                               precision=precision, batch_size=batch_size, workers=workers,
                               progress=progress, cache=cache)
    for side in stats_sides if ext is not None else ():  # made like the images will be, before the work
        inputs[side].provenance.check_compatible(ext.provenance, f"{side} statistics vs {ext.spec.name} "
                                                 "features", force)
    if ext is not None:
        check_stats_dims(inputs, {"real": real, "fake": fake}, ext)
    shard = ALONE
    if distributed:
        from .distributed import process_shard

        shard = process_shard()
    sides = extract_sides(plan, inputs, ext, on_error=on_error, shard=shard)
    if ext is not None:
        check_spread(sides, inputs, ext.spec.name)
    result = evaluate_features(sides["real"], sides["fake"], metrics=plan.metrics, options=options, force=force,
                               progress=progress and shard.rank == 0, real_test=sides.get("real_test"),
                               per_image=per_image, shard=shard)
    result.warnings += [note for note in notes if note]
    if per_class:
        from .per_class import evaluate_per_class

        result.per_class, intra, class_notes = evaluate_per_class(
            sides["real"], sides["fake"], inputs["real"], inputs["fake"], plan.metrics, options, force,
            real_test=sides.get("real_test"), real_test_source=inputs.get("real_test"))
        if intra is not None:
            result.details["intra_fid"] = intra
        result.warnings += class_notes
    if unused_test:
        readers = ", ".join(m.name for m in R.metrics() if R.REAL_TEST in m.needs)
        result.warnings.append(f"--real-test {real_test} was not read: only {readers} use(s) held-out real images, "
                               "and none is among the metrics")
    if ext is not None:
        result.details["device"] = str(ext.device)
    if shard.world > 1:
        result.details["processes"] = shard.world
    return (result, sides["real"], sides["fake"]) if return_features else result


def extract_sides(plan: Plan, inputs: dict, ext: FeatureExtractor | None, *, on_error: str = "raise",
                  shard=ALONE) -> dict[str, Features | GaussianStats]:
    """Each side's features as the plan says (what to keep, which extra outputs), statistics files as
    they are. One pool of decoding processes serves every set, and none outlives the call. Under
    torchrun (``shard.world > 1``) each rank extracts its share of every set, in the very batches
    one process would run, and the shares are gathered back in source order."""
    sides: dict[str, Features | GaussianStats] = {}
    try:
        for side, obj in inputs.items():
            if isinstance(obj, GaussianStats):
                sides[side] = obj
                continue
            keeps = plan.keeps(side, len(obj), ext.feature_dim)
            source = obj
            if shard.world > 1:
                from .distributed import ShardSource

                source = ShardSource(obj, shard.rank, shard.world, block=ext.batch_size)
            desc = side.replace("_", " ") + (", rank 0's share" if shard.world > 1 else "")
            feats = ext.extract(source, keep_features=keeps.features, keep_logits=keeps.logits,
                                extra_layers=keeps.extra, keep_extra=keeps.keep_extra, on_error=on_error, desc=desc)
            if shard.world > 1:
                from .distributed import gather_features

                feats = gather_features(feats, source)
            sides[side] = feats
    finally:
        if ext is not None:
            ext.close()
    return sides
