"""One evaluation run: a real set against a generated set, every metric from one extraction each.

``evaluate(real, fake)`` returns a :class:`Result`; ``compute_stats(source)`` gives reusable
reference statistics. The same code runs in one process and under ``torchrun``
(``distributed=True``, see :mod:`imgdist.evaluation.distributed`): each rank extracts its share of
every set, the shares are gathered, and the metrics' heavy work is split. The streaming
:class:`~imgdist.evaluation.streaming.Evaluator` runs the same plan batch by batch.
"""

from __future__ import annotations

import os
import warnings

from .. import defaults as D
from ..errors import ImgdistError, ImgdistWarning
from ..extraction.features import FeatureExtractor, Features
from ..extraction.together import Job, extract_together
from ..extraction.sources import ImageSource, check_on_error, open_source
from ..extraction.stats import GaussianStats, is_stats_file
from ..metrics import registry as R
from ..metrics._shard import ALONE
from .compute import as_side, evaluate_features, known_counts
from .options import MetricOptions
from .plan import Plan, make_plan, parse_metrics, request
from .results import Result, metric_label, weights_tag
from .spaces import Space, merge, split_request
from .side_checks import assert_backbone, check_held_out, check_shared_classes, check_stats_dims
from .spread import check_spread
from .streaming import Evaluator

__all__ = ["Evaluator", "MetricOptions", "Result", "compute_stats", "evaluate", "evaluate_features",
           "metric_label", "parse_metrics", "score", "weights_tag"]


# ------------------------------------------------------------------ API

def compute_stats(source, backbone=D.EVAL_BACKBONE, *, on_error="raise", **kwargs) -> GaussianStats:
    """Reference statistics of a source (save them with ``.save(path)``)."""
    check_on_error(on_error)
    extractor = FeatureExtractor(backbone, **kwargs)
    return extractor.extract(source, keep_features=False, on_error=on_error).stats


def open_input(spec) -> GaussianStats | ImageSource | Features:
    """A side of an evaluation: statistics (validated on load), a source of images, or, for a
    ``.npy`` / ``.npz`` holding a 2-D array, N x d features computed elsewhere (user features).

    An ADM batch (``arr_0`` images plus stored ``mu``/``sigma``) is its images: every metric uses
    them, and the stored statistics (ADM's TensorFlow graph, another network than most runs use)
    are left out with a warning; ``--suite adm`` is where they count."""
    if is_stats_file(spec):
        return GaussianStats.load(spec)
    if _stored_beside_images(spec):
        warnings.warn(f"{spec}: an ADM batch: its arr_0 images are used for every metric and its stored "
                      "mu/sigma/mu_s/sigma_s are not (they belong to ADM's evaluator; use --suite adm for them)",
                      ImgdistWarning, stacklevel=3)
    if isinstance(spec, (str, os.PathLike)) and os.fspath(spec).lower().endswith((".npy", ".npz")) \
            and os.path.isfile(spec):
        from ..extraction.sources import array_file_source, load_array_file

        array = load_array_file(os.fspath(spec))
        if array.ndim == 2:  # N x d: features, not images
            return as_side(array, os.fspath(spec))
        return array_file_source(os.fspath(spec), array)
    return open_source(spec)


def _stored_beside_images(spec) -> bool:
    from ..extraction.stats import IMAGE_KEYS, npz_keys

    keys = npz_keys(spec)
    return bool(keys and keys & set(IMAGE_KEYS) and "mu" in keys)


def _spec_of(backbone):
    from ..extraction.backbones import Backbone, get_spec

    return backbone.spec if isinstance(backbone, Backbone) else get_spec(backbone)


def _choose_backbone(backbone, mode, dims, inputs: dict):
    """The run's backbone: the user's; else the one a statistics file was made with (and its resize
    mode and layer), so that ``eval ref.npz images/`` measures the images the way ``ref.npz`` was
    made; else Inception. Metrics with a space of their own (CMMD's CLIP) run there when no backbone
    is named (:mod:`.spaces`)."""
    if backbone is not None:
        return backbone, mode, dims
    recorded = [obj.provenance for obj in inputs.values()
                if isinstance(obj, GaussianStats) and obj.provenance.known]
    if not recorded:
        return D.EVAL_BACKBONE, mode, dims
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
             return_features: bool = False, distributed: bool = False, prompts=None, **settings):
    """Compare a real set with a generated set.

    ``real`` / ``fake``: any image source, or a statistics ``.npz`` (then only FID is possible).
    ``real`` None: the metrics that need no real set (``is``, ``vendi``, ...; :func:`score`).
    ``metrics``: names or ``'fid,kid,prdc'`` (``'all'``: every metric that applies; None: the
    default metrics, ``'all'`` where ``real`` is None); ``name@backbone`` computes a metric on
    another network in the same pass (``'fid,fid@dinov2-vit-l14'``: FID and FD_DINOv2 from one
    decode of each image).
    ``backbone``: a name from ``imgdist backbones`` or a :class:`~imgdist.extraction.backbones.Backbone`;
    None: the backbone a statistics file on either side was made with, else ``inception``; metrics
    with a network of their own (CMMD) run on it unless a backbone is named.
    ``settings``: the metric settings by keyword (``kid_subsets``, ``pr_k``, ``bootstrap``, ...: each
    declared by the metric that owns it, the same names as the CLI flags).
    ``real_test``: held-out real images the generator never saw (the C_T test, metric ``ct``).
    ``per_image``: fill ``result.per_image`` (realism, nearest real, authenticity, copy per fake,
    and the chosen metrics' own columns).
    ``per_class``: ``real`` and ``fake`` are folders with one subfolder per class; fill
    ``result.per_class`` and the class-averaged FD (``result.details['intra_fid']``).
    ``return_features``: keep per-image features of both sides whatever the metrics need and return
    ``(result, real_features, fake_features)`` (the run's own network's; e.g. for
    :func:`imgdist.report.write_report`); both sides must then be images.
    ``distributed``: run as one rank of an initialised ``torch.distributed`` process group
    (torchrun): each rank extracts its share of every set and every rank returns the result.
    ``prompts``: the fakes' prompts for the metrics that read them (``clip-score``): a ``.csv``
    (``file,prompt``), ``.jsonl`` or ``.txt`` file; None: ``NAME.txt`` beside each image (read only
    where such a metric is chosen).

    Every argument, the statistics files and the set sizes are checked before any extraction.
    """
    options = MetricOptions.from_keywords(settings)
    if metrics is None and real is None:  # the default metrics compare with a real set; one set has none
        metrics = "all"
    asked = request(metrics)
    check_on_error(on_error)
    inputs = {} if real is None else {"real": open_input(real)}
    inputs["fake"] = open_input(fake)
    if real is None:
        for wanted, what in ((per_class, "per-class metrics"), (return_features, "a report"), (real_test, "--real-test")):
            if wanted:
                raise ImgdistError(f"{what} needs a real set; without one only the metrics that need no real set "
                                   "can be computed")
    if real_test is not None:
        inputs["real_test"] = open_input(real_test)
    if any(isinstance(obj, Features) for obj in inputs.values()):
        return _user_features(inputs, asked, options, locals())
    stats_sides = tuple(side for side, obj in inputs.items() if isinstance(obj, GaussianStats))
    both_stats = len(stats_sides) == 2
    if extractor is not None:
        spaces = [Space(extractor, None, asked, user_options=True)]
    else:
        chosen_backbone, mode, dims = _choose_backbone(backbone, mode, dims, inputs)
        spaces = split_request(asked, backbone, mode, dims, weights, chosen_backbone)
    notes = ([assert_backbone(inputs, None if backbone is None else _spec_of(backbone))] if both_stats else [])
    if both_stats and len(spaces) > 1:
        raise ImgdistError("both sides are statistics files: there are no images to feed another network")
    counts = known_counts({side: (obj.n if isinstance(obj, GaussianStats) else len(obj))
                           for side, obj in inputs.items()}, inputs)
    plans = [make_plan(space.request, options, spec=None if both_stats else _spec_of(space.backbone),
                       stats_sides=stats_sides, counts=counts, real_test=real_test is not None,
                       per_image=per_image, per_class=per_class, return_features=return_features and k == 0,
                       needs_real=real is not None, prompts=prompts is not None)
             for k, space in enumerate(spaces)]
    fake_prompts = None
    if any(plan.needs(R.PROMPTS) for plan in plans):  # every prompt found (or one line), before the work
        from ..extraction.prompts import read_prompts

        fake_prompts = read_prompts(inputs["fake"], prompts)
    unused_test = "real_test" in inputs and not any(plan.real_test for plan in plans)
    if unused_test:  # only C_T reads the held-out set: not minutes of extraction for nothing
        del inputs["real_test"]
    if per_class:  # the layout is checked before the work, as far as names tell
        check_shared_classes(inputs["real"], inputs["fake"])
    if "real_test" in inputs:
        fake_images = None if isinstance(inputs["fake"], GaussianStats) else inputs["fake"]
        notes += check_held_out(inputs["real"], fake_images, inputs["real_test"], real_test)

    extractors = [] if both_stats else [
        extractor if extractor is not None else
        _extractor(space, options, weights=space.weights, mode=space.mode, dims=space.dims, device=device,
                   arithmetic=precision, batch_size=batch_size, workers=workers, progress=progress, cache=cache)
        for space in spaces]
    for ext in extractors[:1]:  # statistics files serve the run's own network
        for side in stats_sides:  # made like the images will be, before the work
            inputs[side].provenance.check_compatible(ext.provenance, f"{side} statistics vs {ext.spec.name} "
                                                     "features", force)
        check_stats_dims(inputs, {"real": real, "fake": fake}, ext)
    shard = ALONE
    if distributed:
        from .distributed import process_shard

        shard = process_shard()
    sided = extract_sides(plans, inputs, extractors, on_error=on_error, shard=shard)
    for plan, ext, sides in zip(plans, extractors, sided):
        if plan.needs(R.PROMPTS):
            _embed_prompts(sides["fake"], fake_prompts, ext, shard)
    results = []
    for k, (plan, sides) in enumerate(zip(plans, sided)):
        if extractors and getattr(extractors[k], "network", True):
            check_spread(sides, {side: obj for side, obj in inputs.items() if side in sides}, extractors[k].spec.name)
        result = evaluate_features(sides.get("real"), sides["fake"], metrics=plan.metrics, options=options,
                                   force=force, progress=progress and shard.rank == 0,
                                   real_test=sides.get("real_test"), per_image=(per_image and k == 0) or
                                   ("chosen" if per_image else False), shard=shard,
                                   fake_source=None if isinstance(inputs["fake"], GaussianStats) else inputs["fake"],
                                   device=str(extractors[k].device) if extractors else "cpu", on_error=on_error)
        if per_class:
            from .per_class import evaluate_per_class

            result.per_class, intra, class_notes = evaluate_per_class(
                sides["real"], sides["fake"], inputs["real"], inputs["fake"], plan.metrics, options, force,
                real_test=sides.get("real_test"), real_test_source=inputs.get("real_test"))
            if intra is not None:
                result.details["intra_fid"] = intra
            result.warnings += class_notes
        results.append(result)
    result = merge(results, spaces)
    result.warnings += [note for note in notes if note] + [n for plan in plans for n in plan.notes]
    if unused_test:
        readers = ", ".join(m.name for m in R.metrics() if R.REAL_TEST in m.needs)
        result.warnings.append(f"--real-test {real_test} was not read: only {readers} use(s) held-out real images, "
                               "and none is among the metrics")
    if prompts is not None and fake_prompts is None:  # e.g. 'all' on a network without a text tower
        readers = ", ".join(m.name for m in R.metrics() if R.PROMPTS in m.needs)
        result.warnings.append(f"--prompts {prompts} was not read: only {readers} use(s) prompts, none is among the "
                               "metrics, and they need a network with a text tower (e.g. --metrics "
                               f"{readers.split(', ')[0]}@clip-vit-b32)")
    if extractors:
        result.details["device"] = extractors[0].device_label
    if shard.world > 1:
        result.details["processes"] = shard.world
    return (result, sided[0]["real"], sided[0]["fake"]) if return_features else result


def _extractor(space: Space, options: MetricOptions, *, arithmetic: str, **kwargs) -> FeatureExtractor:
    """A space's extractor: its network, or FWD's wavelet packets (set by the fwd settings);
    ``arithmetic``: the network's precision."""
    from ..extraction.backbones.wavelets import NAME

    if space.backbone != NAME:
        return FeatureExtractor(space.backbone, precision=arithmetic, **kwargs)
    from ..extraction.wavelet_space import WaveletExtractor

    given = [flag for flag, key in (("--weights", "weights"), ("--dims", "dims")) if kwargs.get(key) is not None]
    if arithmetic != "fp32":
        given.append("--precision")
    if given:
        raise ImgdistError(f"{', '.join(given)}: the wavelet space (fwd) has no network, weights or layers to set")
    return WaveletExtractor(wavelet=options.fwd_wavelet, level=options.fwd_level, resize=options.fwd_resize,
                            device=kwargs["device"], batch_size=kwargs["batch_size"], workers=kwargs["workers"],
                            progress=kwargs["progress"])


def _embed_prompts(fake: Features, prompts: list[str], ext: FeatureExtractor, shard) -> None:
    """Each kept fake's prompt, through the backbone's text tower (shared out over torchrun's ranks)."""
    from ..extraction.text import embed_prompts

    fake.prompts = [prompts[i] for i in fake.indices]
    fake.text, fake.prompts_truncated = embed_prompts(ext.text_tower(), fake.prompts, shard)


def _user_features(inputs: dict, asked, options: MetricOptions, given: dict) -> Result:
    """Every side an N x d feature matrix computed elsewhere: the metrics on them, labelled as user
    features (never as FID), with nothing to extract."""
    mixed = [side for side, obj in inputs.items() if not isinstance(obj, Features)]
    if mixed:
        first = next(obj for obj in inputs.values() if isinstance(obj, Features))
        raise ImgdistError(f"{first.names[0].rsplit('[', 1)[0]} is an N x d feature matrix, and the {mixed[0]} side is "
                           "not: features computed elsewhere can only be compared with features of the same network")
    unused = [flag for flag, key in (("--backbone", "backbone"), ("--weights", "weights"), ("--resize-mode", "mode"),
                                     ("--dims", "dims"), ("--prompts", "prompts")) if given.get(key) is not None]
    unused += [flag for flag, key in (("--per-class", "per_class"), ("--report", "return_features"))
               if given.get(key)]
    if asked.at:
        unused.append("NAME@BACKBONE")
    if unused:
        raise ImgdistError(f"{', '.join(unused)}: the sides are features computed elsewhere (N x d arrays), which "
                           "no network, layer or image option can change; they print as user features")
    return evaluate_features(inputs.get("real"), inputs["fake"], metrics=asked, options=options,
                             real_test=inputs.get("real_test"), per_image=given["per_image"], force=given["force"])


def score(images, *, metrics=None, **kwargs) -> Result:
    """The metrics that need no real set (``is``, ``vendi``, and any other that says so) on one set
    of images: :func:`evaluate` without a real side (``metrics`` None: every one that applies, as
    ``imgdist score``). Keywords as for :func:`evaluate`."""
    return evaluate(None, images, metrics=metrics, **kwargs)


def extract_sides(plans: list[Plan], inputs: dict, extractors: list[FeatureExtractor], *, on_error: str = "raise",
                  shard=ALONE) -> list[dict[str, Features | GaussianStats]]:
    """Each side's features for every plan (one per network), statistics files as they are. Each
    image is decoded once and fed to every network (one pool of decoding processes, the first
    network's, serves every set, and none outlives the call). Under torchrun (``shard.world > 1``)
    each rank extracts its share of every set, in the very batches one process would run, and the
    shares are gathered back in source order."""
    sided: list[dict] = [{} for _ in plans]
    try:
        for side, obj in inputs.items():
            if isinstance(obj, GaussianStats):
                for plan, sides in zip(plans, sided):
                    if plan.reads(side) or len(plans) == 1:
                        sides[side] = obj
                continue
            source = obj
            if shard.world > 1:
                from .distributed import ShardSource

                source = ShardSource(obj, shard.rank, shard.world, block=extractors[0].batch_size)
            reading = [k for k, plan in enumerate(plans) if plan.reads(side)]
            if not reading:  # only metrics of the fakes (the CLIP score, LPIPS diversity): not read at all
                continue
            jobs = []
            for k in reading:
                keeps = plans[k].keeps(side, len(obj), extractors[k].feature_dim)
                jobs.append(Job(extractors[k], keep_features=keeps.features, keep_logits=keeps.logits,
                                extra_layers=keeps.extra, keep_extra=keeps.keep_extra))
            desc = side.replace("_", " ") + (", rank 0's share" if shard.world > 1 else "")
            found = extract_together(source, jobs, on_error=on_error, desc=desc)
            if shard.world > 1:
                from .distributed import gather_features

                found = [gather_features(feats, source) for feats in found]
            for k, feats in zip(reading, found):
                sided[k][side] = feats
    finally:
        for ext in extractors:
            ext.close()
    return sided
