"""One evaluation run: a real set against a generated set, every metric from one extraction each.

``evaluate(real, fake)`` returns a :class:`Result`; ``compute_stats(source)`` gives reusable
reference statistics; :class:`Evaluator` streams batches from a training loop.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from . import defaults as D
from . import metrics as M
from .errors import ImgdistError, ImgdistWarning, one_line
from .compute import MetricRun
from .features import FeatureExtractor, Features
from .metrics._shard import ALONE, Shard
from .options import ALIASES, METRICS, NEEDS_FEATURES, NEEDS_LOGITS, MetricOptions, default_backbone, parse_metrics
from .results import Result, metric_label, weights_tag
from .sources import ImageSource, check_on_error, open_source
from .stats import GaussianStats, is_stats_file

DEFAULT_METRICS = D.METRICS
# the metric catalogue and result naming live in options.py / results.py; re-exported here, where
# users of evaluate() look for them
__all__ = ["ALIASES", "DEFAULT_METRICS", "METRICS", "Evaluator", "MetricOptions", "Result", "compute_stats",
           "evaluate", "evaluate_features", "metric_label", "parse_metrics", "weights_tag"]


# ------------------------------------------------------------------ API

def compute_stats(source, backbone=D.EVAL_BACKBONE, *, on_error="raise", **kwargs) -> GaussianStats:
    """Reference statistics of a source (save them with ``.save(path)``)."""
    check_on_error(on_error)
    extractor = FeatureExtractor(backbone, **kwargs)
    return extractor.extract(source, keep_features=False, on_error=on_error).stats


def _open_input(spec) -> GaussianStats | ImageSource:
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
    from .stats import IMAGE_KEYS, _read_npz_keys

    if not isinstance(spec, (str, os.PathLike)) or not os.fspath(spec).lower().endswith(".npz") \
            or not os.path.isfile(spec):
        return False
    keys = set(_read_npz_keys(os.fspath(spec)))
    return bool(keys & set(IMAGE_KEYS)) and "mu" in keys


def _spec_of(backbone):
    from .backbones import Backbone, get_spec

    return backbone.spec if isinstance(backbone, Backbone) else get_spec(backbone)


def _choose_backbone(backbone, mode, dims, inputs: dict, metrics):
    """Without an explicit backbone: the one a statistics file was made with (and its resize mode
    and layer), so that ``eval ref.npz images/`` measures the images the way ``ref.npz`` was made;
    else the metrics' own (CMMD's CLIP encoder for ``--metrics cmmd``), else Inception."""
    if backbone is not None:
        return backbone, mode, dims
    recorded = [obj.provenance for obj in inputs.values()
                if isinstance(obj, GaussianStats) and obj.provenance.known]
    if not recorded:
        backbone, own_mode = default_backbone(parse_metrics(metrics))
        return backbone, mode or own_mode, dims
    prov = recorded[0]
    from .backbones import get_spec

    try:
        spec = get_spec(prov.backbone)
    except ImgdistError:
        raise ImgdistError(f"the statistics were made with backbone {prov.backbone!r}, which is not built in; "
                           "pass it with --backbone (e.g. the TorchScript file)") from None
    if dims is None and prov.feature_layer not in (None, "pool"):
        dims = next((d for d, layer in spec.feature_layers.items() if layer == prov.feature_layer), None)
    return spec.name, mode or prov.resize_mode, dims


def evaluate(real, fake, *, metrics=DEFAULT_METRICS, backbone=None, weights=None, mode=None,
             dims=None, device=D.DEVICE, precision="fp32", batch_size=D.BATCH_SIZE, workers=None,
             progress=True, cache=False, kid_subsets=D.KID_SUBSETS, kid_subset_size=D.KID_SUBSET_SIZE,
             is_splits=D.IS_SPLITS, pr_k=D.PR_K, dc_k=D.DC_K, fid_inf_sizes=None, bootstrap=D.BOOTSTRAP,
             ci=D.CI, seed=D.SEED, ct_cells=D.CT_CELLS, copies_percentile=D.COPIES_PERCENTILE,
             real_test=None, per_image: bool = False, per_class: bool = False, on_error="raise",
             force=False, extractor: FeatureExtractor | None = None, return_features: bool = False):
    """Compare a real set with a generated set.

    ``real`` / ``fake``: any image source, or a statistics ``.npz`` (then only FID is possible).
    ``metrics``: names or ``'fid,kid,prdc'`` (see ``METRICS``; ``'all'``: every metric that applies).
    ``backbone``: a name from ``imgdist backbones`` or a :class:`~imgdist.backbones.Backbone`;
    None: the backbone a statistics file on either side was made with, else ``inception``.
    ``bootstrap``: number of resamples for confidence intervals of FID and KID (0: none).
    ``real_test``: held-out real images the generator never saw (the C_T test, metric ``ct``).
    ``per_image``: fill ``result.per_image`` (realism, nearest real, authenticity, copy per fake).
    ``per_class``: ``real`` and ``fake`` are folders with one subfolder per class; fill
    ``result.per_class`` and the class-averaged FD (``result.details['intra_fid']``).
    ``return_features``: keep per-image features of both sides whatever the metrics need and return
    ``(result, real_features, fake_features)`` (e.g. for :func:`imgdist.report.write_report`); both
    sides must then be images.

    Every argument, the statistics files and the set sizes are checked before any extraction.
    """
    options = MetricOptions(kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, is_splits=is_splits,
                            pr_k=pr_k, dc_k=dc_k, fid_inf_sizes=fid_inf_sizes, bootstrap=bootstrap, ci=ci,
                            seed=seed, ct_cells=ct_cells, copies_percentile=copies_percentile)
    check_on_error(on_error)
    inputs = {"real": _open_input(real), "fake": _open_input(fake)}
    if real_test is not None:
        inputs["real_test"] = open_source(real_test)
    stats_sides = tuple(side for side, obj in inputs.items() if isinstance(obj, GaussianStats))
    for wanted, what in ((return_features, "a report"), (per_image, "the per-image table"),
                         (per_class, "per-class metrics")):
        if wanted and stats_sides:
            raise ImgdistError(f"{what} needs images, but {stats_sides[0]} is a statistics file (it holds only "
                               "mu and sigma); pass the images")
    ext = extractor
    if ext is None and len(stats_sides) < 2:
        backbone, mode, dims = _choose_backbone(backbone, mode, dims, inputs, metrics)
    spec = ext.spec if ext is not None else (_spec_of(backbone) if len(stats_sides) < 2 else None)
    has_logits = bool(spec and spec.has_logits)
    chosen = parse_metrics(metrics, has_logits=has_logits, features=not stats_sides, real_test=real_test is not None,
                           clip=bool(spec and spec.name.startswith("clip-")))
    unused_test = "real_test" in inputs and "ct" not in chosen
    if unused_test:  # only C_T reads the held-out set: not minutes of extraction for nothing
        del inputs["real_test"]
    counts = {side: (obj.n if isinstance(obj, GaussianStats) else len(obj)) for side, obj in inputs.items()}
    options.check_sets(chosen, _known(counts, inputs), has_logits=has_logits, stats_sides=stats_sides)
    if per_class:  # the layout is checked before the work, as far as names tell
        for side in ("real", "fake"):
            _check_class_folders(inputs[side], side)

    if ext is None and len(stats_sides) < 2:
        ext = FeatureExtractor(backbone, weights=weights, mode=mode, dims=dims, device=device,
                               precision=precision, batch_size=batch_size, workers=workers,
                               progress=progress, cache=cache)
    for side in stats_sides if ext is not None else ():  # made like the images will be, before the work
        inputs[side].provenance.check_compatible(ext.provenance, f"{side} statistics vs {ext.spec.name} "
                                                 "features", force)
    sides: dict[str, Features | GaussianStats] = {}
    for side, obj in inputs.items():
        if isinstance(obj, GaussianStats):
            sides[side] = obj
            continue
        keep = keeps_features(chosen, options, len(obj), ext.feature_dim,
                              also=return_features or per_image or per_class)
        sides[side] = ext.extract(obj, keep_features=keep,
                                  keep_logits=bool(NEEDS_LOGITS & set(chosen)) and side == "fake",
                                  on_error=on_error, desc=side.replace("_", " "))
    result = evaluate_features(sides["real"], sides["fake"], metrics=chosen, options=options, force=force,
                               progress=progress, real_test=sides.get("real_test"), per_image=per_image)
    if per_class:
        from .per_class import evaluate_per_class

        result.per_class, intra, notes = evaluate_per_class(sides["real"], sides["fake"], inputs["real"],
                                                            inputs["fake"], chosen, options, force,
                                                            real_test=sides.get("real_test"),
                                                            real_test_source=inputs.get("real_test"))
        if intra is not None:
            result.details["intra_fid"] = intra
        result.warnings += notes
    if unused_test:
        result.warnings.append(f"--real-test {real_test} was not read: only ct (the data-copying test C_T) uses "
                               "held-out real images, and it is not among the metrics")
    if ext is not None:
        result.details["device"] = str(ext.device)
    return (result, sides["real"], sides["fake"]) if return_features else result


def _known(counts: dict[str, int], sides: dict) -> dict[str, int]:
    """The image counts that are known: a statistics file without ``n`` (pytorch-fid's and
    clean-fid's hold only mu and sigma) has count 0, which means "not recorded", not "no images"."""
    return {side: n for side, n in counts.items()
            if not (isinstance(sides.get(side), GaussianStats) and n == 0)}


def keeps_features(chosen, options: MetricOptions, n: int, feature_dim: int, also: bool = False) -> bool:
    """Whether a set's per-image features are kept: the metrics or the bootstrap need them, or the set
    has no more images than dimensions. Then the features take no more memory than the covariance,
    and FID from features is exact where the covariance route of singular matrices loses digits
    (5.6e-5 relative measured at N = 160, d = 2048)."""
    return also or bool(NEEDS_FEATURES & set(chosen)) or options.bootstrap > 0 or n <= feature_dim


def _check_class_folders(source, side: str) -> None:
    from .per_class import class_names

    names = [source.name_of(i) for i in range(len(source))]
    class_names(Features(names=names, stats=None, provenance=None), source, side)


def evaluate_features(real: Features | GaussianStats, fake: Features | GaussianStats, *,
                      metrics=DEFAULT_METRICS, force=False, options: MetricOptions | None = None,
                      progress: bool = False, real_test: Features | None = None, per_image: bool = False,
                      shard: Shard = ALONE, **option_kwargs) -> Result:
    """The metrics from already extracted features (or statistics).

    Metric settings as keywords (``kid_subsets``, ``pr_k``, ... see :class:`MetricOptions`) or as
    ``options``. ``progress``: progress bars for metrics that can take a while (FID-infinity).
    ``real_test``: held-out real features (C_T). ``per_image``: fill ``result.per_image``.
    ``shard``: this process's share of the k-NN passes and of the KID and FID-infinity subsets
    (:func:`imgdist.distributed.evaluate_features_distributed` passes it; results are the same).
    """
    options = options or MetricOptions(**option_kwargs)
    stats_sides = tuple(side for side, obj in (("real", real), ("fake", fake)) if isinstance(obj, GaussianStats))
    has_logits = isinstance(fake, Features) and fake.logits is not None
    backbone = real.provenance.backbone if isinstance(real, Features) else None
    chosen = parse_metrics(metrics, has_logits=has_logits, features=not stats_sides, real_test=real_test is not None,
                           clip=bool(backbone and backbone.startswith("clip-")))
    real_stats = real if isinstance(real, GaussianStats) else real.stats
    fake_stats = fake if isinstance(fake, GaussianStats) else fake.stats
    counts = {"real": real_stats.n, "fake": fake_stats.n}
    if real_test is not None:
        counts["real_test"] = real_test.stats.n
        real_stats.provenance.check_compatible(real_test.provenance, "real vs real test", force)
    known = _known(counts, {"real": real, "fake": fake})
    options.check_sets(chosen, known, has_logits=has_logits, stats_sides=stats_sides)
    if per_image and stats_sides:
        raise ImgdistError(f"the per-image table needs images, but {stats_sides[0]} is a statistics file")
    notes = real_stats.provenance.check_compatible(fake_stats.provenance, "real vs fake", force)
    provenance = real_stats.provenance if real_stats.provenance.known else fake_stats.provenance
    if real_stats.dim != fake_stats.dim:
        why = ("resize mode 'native' keeps each image's own size, so both sets need images of one size"
               if real_stats.provenance.resize_mode == fake_stats.provenance.resize_mode == "native" else
               "they were not made by the same backbone and layer (see the statistics files' provenance)")
        raise ImgdistError(f"the real set has {real_stats.dim} feature values per image, the fake set "
                           f"{fake_stats.dim}: {why}")

    result = Result(values={}, labels={}, provenance=provenance, warnings=list(notes))
    result.counts = {side: known.get(side) for side in ("real", "fake")}  # None: not recorded
    for side, obj in (("real", real), ("fake", fake), ("real_test", real_test)):
        if isinstance(obj, Features) and len(obj.skipped):
            result.counts[f"{side}_skipped"] = len(obj.skipped)
            result.warnings.append(f"{side}: {obj.skipped.summary()}")
    tag = weights_tag(provenance)
    if tag:
        result.warnings.append(
            f"{provenance.backbone} weights {tag} are not the published ones ({_spec_of(provenance.backbone).weights.sha256[:8]}): "
            f"numbers print as {metric_label('fid', provenance)} etc. and are not comparable with published values")

    run = MetricRun(real, fake, options, result, force=force, progress=progress, real_test=real_test,
                    chosen=chosen, shard=shard)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for metric in chosen:
            try:
                run.compute(metric)
            except ValueError as exc:  # the metric functions' input checks, e.g. too few images for k
                raise ImgdistError(f"{metric}: {one_line(exc)}") from None
        if options.bootstrap:
            _bootstrap(result, chosen, run.xr, run.xf, options)
        if per_image:
            result.per_image = run.per_image()
    for w in caught:
        message = one_line(w.message)
        if message not in result.warnings:
            result.warnings.append(message)
    for metric in result.values:
        result.labels[metric] = metric_label(metric, provenance)
    return result


def _bootstrap(result, chosen, xr, xf, options: MetricOptions):
    """Percentile intervals re-centred on the point estimate.

    Resampling with replacement repeats images, which shrinks the effective sample size, and FID
    grows as N falls: the raw bootstrap distribution sits above the estimate (by 2x when N is not
    much larger than d). Subtracting the bootstrap's own bias estimate, mean(t*) - t, keeps the
    spread (the sampling uncertainty of the number at this N) and removes the offset
    (Efron & Tibshirani 1993, ch. 10).
    """
    n_boot, ci, seed = options.bootstrap, options.ci, options.seed
    result.details["ci_level"] = ci
    result.details["bootstrap_samples"] = n_boot
    statistics = {}
    if "fid" in chosen:
        statistics["fid"] = M.fid_from_features
    if "kid" in chosen:
        # a few subsets per replicate keep the cost bounded; the spread comes from resampled sets
        subsets = max(1, min(options.kid_subsets, 10))
        size = min(options.kid_subset_size, len(xr), len(xf))
        statistics["kid"] = lambda r, f: M.kid(r, f, subsets=subsets, subset_size=size, seed=seed)[0]
    for metric, statistic in statistics.items():
        replicates = M.bootstrap_replicates(statistic, xr, xf, n_boot=n_boot, seed=seed)
        offset = replicates.mean() - result.values[metric]
        low, high = np.quantile(replicates, [(1 - ci) / 2, (1 + ci) / 2]) - offset
        result.intervals[metric] = (float(low), float(high))
        result.details[f"{metric}_bootstrap_offset"] = float(offset)


# ------------------------------------------------------------------ streaming

class Evaluator:
    """Streaming evaluation for training loops.

    >>> ev = Evaluator(backbone="efficientnet-lite0", metrics="fid,kid")
    >>> ev.update(real=real_batch)          # uint8 N x 3 x H x W tensors, or float in [0, 1]
    >>> ev.update(fake=generator(z))
    >>> ev.compute().values                 # {'fid': ..., 'kid': ...}
    >>> ev.reset_fake()                     # next checkpoint, real statistics kept

    The Gaussian statistics stream in O(d^2) memory; per-image features are kept only for metrics
    that need them. ``real_stats`` may be a :class:`GaussianStats` or a statistics file.
    """

    def __init__(self, backbone=D.EVAL_BACKBONE, *, metrics=("fid",), real_stats=None, weights=None, mode=None,
                 dims=None, device=D.DEVICE, **metric_kwargs):
        self.options = MetricOptions(**metric_kwargs)
        self.extractor = FeatureExtractor(backbone, weights=weights, mode=mode, dims=dims, device=device,
                                          progress=False)
        has_logits = self.extractor.spec.has_logits
        frozen_real = real_stats is not None
        self.metrics = parse_metrics(metrics, has_logits=has_logits, features=not frozen_real)
        self.options.check_sets(self.metrics, {}, has_logits=has_logits,
                                stats_sides=("real",) if frozen_real else ())
        self.keep = bool(NEEDS_FEATURES & set(self.metrics)) or self.options.bootstrap > 0
        self._real = self._empty()
        if frozen_real:
            stats = real_stats if isinstance(real_stats, GaussianStats) else GaussianStats.load(real_stats)
            stats.provenance.check_compatible(self.extractor.provenance, "real statistics vs the backbone")
            self._real = {"stats": stats, "feats": [], "logits": [], "frozen": True}
        self.reset_fake()

    def _empty(self):
        return {"stats": GaussianStats(provenance=self.extractor.provenance), "feats": [], "logits": [],
                "frozen": False}

    def reset_fake(self) -> None:
        self._fake = self._empty()

    def reset(self) -> None:
        self._real = self._empty()
        self.reset_fake()

    def update(self, real=None, fake=None) -> None:
        for side, images in (("real", real), ("fake", fake)):
            if images is None:
                continue
            state = self._real if side == "real" else self._fake
            if state["frozen"]:
                raise ImgdistError("real statistics were given up front; update(real=...) is not allowed")
            feats, logits = self.extractor.embed_images(images, logits="is" in self.metrics and side == "fake")
            state["stats"].update(feats)
            if self.keep:
                state["feats"].append(feats)
            if logits is not None and "is" in self.metrics and side == "fake":
                state["logits"].append(logits)

    def merge(self, other: "Evaluator") -> None:
        """Fold another evaluator's state in (e.g. gathered from other processes)."""
        for mine, theirs in ((self._real, other._real), (self._fake, other._fake)):
            mine["stats"].merge(theirs["stats"])
            mine["feats"] += theirs["feats"]
            mine["logits"] += theirs["logits"]

    def _features(self, state) -> Features | GaussianStats:
        if state["frozen"]:
            return state["stats"]
        stats = state["stats"]
        return Features(names=[], stats=stats, provenance=stats.provenance,
                        features=np.concatenate(state["feats"]) if state["feats"] else None,
                        logits=np.concatenate(state["logits"]) if state["logits"] else None)

    def compute(self) -> Result:
        if self._fake["stats"].n == 0 or (self._real["stats"].n == 0 and not self._real["frozen"]):
            raise ImgdistError("update(real=...) and update(fake=...) first: a set is empty")
        return evaluate_features(self._features(self._real), self._features(self._fake),
                                 metrics=self.metrics, options=self.options)
