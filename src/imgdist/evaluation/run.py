"""One evaluation run: a real set against a generated set, every metric from one extraction each.

``evaluate(real, fake)`` returns a :class:`Result`; ``compute_stats(source)`` gives reusable
reference statistics; :class:`Evaluator` streams batches from a training loop.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from .. import defaults as D
from .catalogue import ALIASES, METRIC, METRICS, Facts, MetricOptions, check_outputs, default_backbone, needs_features, \
    needs_logits, outputs_of, parse_metrics, request
from .compute import evaluate_features, keeps_features, known_counts
from ..errors import ImgdistError, ImgdistWarning
from ..extraction.features import FeatureExtractor, Features
from .results import Result, metric_label, weights_tag
from ..extraction.sources import ImageSource, check_on_error, open_source
from .side_checks import (assert_backbone, check_held_out, check_held_out_fakes, check_shared_classes,
                          check_stats_dims)
from .spread import check_spread
from ..extraction.stats import GaussianStats, is_stats_file

DEFAULT_METRICS = D.METRICS
# the metric catalogue and result naming live in catalogue.py / results.py; re-exported here,
# where users of evaluate() look for them
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
        backbone, own_mode = default_backbone(asked.names)
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


def evaluate(real, fake, *, metrics=DEFAULT_METRICS, backbone=None, weights=None, mode=None,
             dims=None, device=D.DEVICE, precision="fp32", batch_size=D.BATCH_SIZE, workers=None,
             progress=True, cache=False, real_test=None, per_image: bool = False, per_class: bool = False,
             on_error="raise", force=False, extractor: FeatureExtractor | None = None,
             return_features: bool = False, **settings):
    """Compare a real set with a generated set.

    ``real`` / ``fake``: any image source, or a statistics ``.npz`` (then only FID is possible).
    ``metrics``: names or ``'fid,kid,prdc'`` (see ``METRICS``; ``'all'``: every metric that applies).
    ``backbone``: a name from ``imgdist backbones`` or a :class:`~imgdist.extraction.backbones.Backbone`;
    None: the backbone a statistics file on either side was made with, else ``inception``.
    ``settings``: the metric settings by keyword (``kid_subsets``, ``pr_k``, ``bootstrap``, ... each
    with its default and range in :data:`imgdist.evaluation.catalogue.SETTINGS`, the same names as the CLI flags).
    ``real_test``: held-out real images the generator never saw (the C_T test, metric ``ct``).
    ``per_image``: fill ``result.per_image`` (realism, nearest real, authenticity, copy per fake).
    ``per_class``: ``real`` and ``fake`` are folders with one subfolder per class; fill
    ``result.per_class`` and the class-averaged FD (``result.details['intra_fid']``).
    ``return_features``: keep per-image features of both sides whatever the metrics need and return
    ``(result, real_features, fake_features)`` (e.g. for :func:`imgdist.report.write_report`); both
    sides must then be images.

    Every argument, the statistics files and the set sizes are checked before any extraction.
    """
    options = MetricOptions.from_keywords(settings)
    asked = request(metrics)
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
        backbone, mode, dims = _choose_backbone(backbone, mode, dims, inputs, asked)
    spec = ext.spec if ext is not None else (_spec_of(backbone) if len(stats_sides) < 2 else None)
    notes = ([assert_backbone(inputs, None if backbone is None else _spec_of(backbone))]
             if len(stats_sides) == 2 else [])
    has_logits = bool(spec and spec.has_logits)
    chosen = asked.resolve(Facts.of(spec, stats_sides=stats_sides, real_test=real_test is not None))
    unused_test = "real_test" in inputs and "ct" not in chosen
    if unused_test:  # only C_T reads the held-out set: not minutes of extraction for nothing
        del inputs["real_test"]
    counts = {side: (obj.n if isinstance(obj, GaussianStats) else len(obj)) for side, obj in inputs.items()}
    options.check_sets(chosen, known_counts(counts, inputs), has_logits=has_logits, stats_sides=stats_sides)
    if spec is not None:
        check_outputs(chosen, spec)
    if per_class:  # the layout is checked before the work, as far as names tell
        check_shared_classes(inputs["real"], inputs["fake"])
    if per_image:  # the table's realism column needs the k-NN radius of the reals
        options.check_sets(["realism"], known_counts(counts, inputs))
    if "real_test" in inputs:
        notes.append(check_held_out(inputs["real"], inputs["real_test"], real_test))
        if not isinstance(inputs["fake"], GaussianStats):
            notes.append(check_held_out_fakes(inputs["fake"], inputs["real_test"], real_test))

    if ext is None and len(stats_sides) < 2:
        ext = FeatureExtractor(backbone, weights=weights, mode=mode, dims=dims, device=device,
                               precision=precision, batch_size=batch_size, workers=workers,
                               progress=progress, cache=cache)
    for side in stats_sides if ext is not None else ():  # made like the images will be, before the work
        inputs[side].provenance.check_compatible(ext.provenance, f"{side} statistics vs {ext.spec.name} "
                                                 "features", force)
    if ext is not None:
        check_stats_dims(inputs, {"real": real, "fake": fake}, ext)
    sides: dict[str, Features | GaussianStats] = {}
    extra, keep_extra = outputs_of(chosen)
    try:  # one pool of decoding processes serves every set, and none outlives the call
        for side, obj in inputs.items():
            if isinstance(obj, GaussianStats):
                sides[side] = obj
                continue
            keep = keeps_features(chosen, options, len(obj), ext.feature_dim,
                                  also=return_features or per_image or per_class)
            sides[side] = ext.extract(obj, keep_features=keep,
                                      keep_logits=needs_logits(chosen) and side == "fake",
                                      extra_layers=extra, keep_extra=keep_extra,
                                      on_error=on_error, desc=side.replace("_", " "))
    finally:
        if ext is not None:
            ext.close()
    if ext is not None:
        check_spread(sides, inputs, ext.spec.name)
    result = evaluate_features(sides["real"], sides["fake"], metrics=chosen, options=options, force=force,
                               progress=progress, real_test=sides.get("real_test"), per_image=per_image)
    result.warnings += [note for note in notes if note]
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
        result.details["device"] = ext.device_label
    return (result, sides["real"], sides["fake"]) if return_features else result




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
        self.options = MetricOptions.from_keywords(metric_kwargs)
        self.extractor = FeatureExtractor(backbone, weights=weights, mode=mode, dims=dims, device=device,
                                          progress=False)
        has_logits = self.extractor.spec.has_logits
        frozen_real = real_stats is not None
        # batches are embedded one by one without the backbone's extra outputs (sFID's maps): 'all'
        # leaves the metrics that read them out, and naming one is refused
        facts = dataclasses.replace(Facts.of(self.extractor.spec, stats_sides=("real",) if frozen_real else ()),
                                    outputs=frozenset())
        self.metrics = parse_metrics(metrics, facts)
        for name in self.metrics:
            if not facts.provides(METRIC[name]) and METRIC[name].outputs:
                raise ImgdistError(f"{name}: not available in the streaming Evaluator (it reads the backbone's "
                                   f"{', '.join(METRIC[name].outputs)} output); use imgdist.evaluate")
        self.options.check_sets(self.metrics, {}, has_logits=has_logits,
                                stats_sides=("real",) if frozen_real else ())
        self.keep = needs_features(self.metrics) or self.options.bootstrap > 0
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
            wants_logits = needs_logits(self.metrics) and side == "fake"
            feats, logits = self.extractor.embed_images(images, logits=wants_logits)
            state["stats"].update(feats)
            if self.keep:
                state["feats"].append(feats)
            if logits is not None and wants_logits:
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
