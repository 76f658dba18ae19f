"""Each chosen metric, computed once from extracted features, into a :class:`~imgdist.evaluation.results.Result`.

:class:`MetricRun` is what a metric's ``compute`` and per-image hooks receive: both sides'
features and statistics, the settings, this process's shard of the work, the result being filled,
and :meth:`MetricRun.once` for passes several metrics share (the reals' k-NN radii, each fake's
nearest real). It knows no metric by name: everything comes from the registrations
(:mod:`imgdist.metrics.registry`).
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import metrics as M
from ..errors import ImgdistError, SetTooSmall, one_line
from ..extraction.features import Features
from ..extraction.provenance import USER_FEATURES, Provenance
from ..extraction.sources import check_on_error
from ..extraction.stats import GaussianStats
from ..metrics import registry as R
from ..metrics._shard import ALONE, Shard
from .options import MetricOptions
from .plan import Facts, Selection, check_sets, fit_all, per_image_metrics, request
from .results import PerImage, Result, metric_label, weights_warning


@dataclass
class MetricRun:
    """The inputs of one evaluation and the passes its metrics share."""

    real: Features | GaussianStats | None
    fake: Features | GaussianStats
    options: MetricOptions
    result: Result
    force: bool = False
    progress: bool = False
    real_test: Features | None = None
    chosen: tuple[str, ...] = ()
    #: this process's share of the metrics' heavy work (torchrun)
    shard: Shard = ALONE
    #: the fakes' images (metrics that run a network of their own on them) and the run's device
    fake_source: object = None
    device: str = "cpu"
    on_error: str = "raise"                 # what an unreadable image in ``fake_source`` does
    _shared: dict = field(default_factory=dict)

    @property
    def real_stats(self) -> GaussianStats | None:
        return self.real if isinstance(self.real, GaussianStats) or self.real is None else self.real.stats

    @property
    def fake_stats(self) -> GaussianStats:
        return self.fake if isinstance(self.fake, GaussianStats) else self.fake.stats

    @property
    def xr(self) -> np.ndarray | None:
        return self.real.features if isinstance(self.real, Features) else None

    @property
    def xf(self) -> np.ndarray | None:
        return self.fake.features if isinstance(self.fake, Features) else None

    def once(self, key, make):
        """``make()`` computed once per run: passes that several metrics share."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def shared_keys(self) -> tuple:
        """The keys of the passes made so far."""
        return tuple(self._shared)

    def name_of(self, side: str, i) -> str:
        """An image's name, or its position where the features came without names (the streaming
        :class:`~imgdist.evaluation.streaming.Evaluator`, plain arrays)."""
        features = self.real if side == "real" else self.fake
        names = features.names
        return names[i] if len(names) == len(features.features) else f"{side} #{int(i)}"

    def compute(self, metric: str) -> None:
        """Run one metric's ``compute`` and store what it returns."""
        entry = R.get(metric)
        out = entry.compute(self)
        if out is None:
            return
        values = out if isinstance(out, dict) else {metric: out}
        # one pass may fill the metrics that share its compute function (precision and recall)
        own = {key for m in R.metrics() if m.compute is entry.compute for key in m.keys}
        foreign = sorted(set(values) - own)
        if foreign:
            raise ImgdistError(f"metric {metric} ({entry.module}) returned value(s) for {', '.join(foreign)}, which "
                               f"it does not declare (its keys: {', '.join(entry.keys)}; see extra_values)")
        for key, value in values.items():
            self.result.values[key] = _plain(value, metric)

    def per_image(self, entries) -> PerImage:
        """One row per fake: every column of ``entries``' per-image hooks."""
        columns = {}
        for entry in entries:
            for column, make in entry.per_image.items():
                cells = list(make(self))
                if len(cells) != len(self.xf):
                    raise ImgdistError(f"metric {entry.name}: per-image column {column} has {len(cells)} values "
                                       f"for {len(self.xf)} fakes")
                columns[column] = cells
        return PerImage(fake=[self.name_of("fake", i) for i in range(len(self.xf))], columns=columns)


def _plain(value, metric: str):
    """A metric's value as a plain Python number (numpy scalars included); anything else is a bug in
    the metric, said in one line."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ImgdistError(f"metric {metric} returned {type(value).__name__} {value!r}, not a number")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def as_side(x, name: str) -> Features | GaussianStats | None:
    """A side of :func:`evaluate_features`: features or statistics as they are; a plain N x d array
    (numpy or torch) as user features, labelled so (never as FID)."""
    if x is None or isinstance(x, (Features, GaussianStats)):
        return x
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        raise ImgdistError(f"{name}: features must be an N x d array of numbers, got "
                           f"{'shape ' + str(x.shape) if x.dtype.kind in 'fiu' else x.dtype}")
    provenance = Provenance(backbone=USER_FEATURES, feature_layer="pool", precision=None)
    return Features.from_array(x, provenance=provenance, name=name, names=[f"{name}[{i}]" for i in range(len(x))])


def evaluate_features(real, fake, *, metrics=None, force=False, options: MetricOptions | None = None,
                      progress: bool = False, real_test=None, per_image: bool = False,
                      shard: Shard = ALONE, skip_unfit: bool = False, fake_source=None, device: str = "cpu",
                      on_error: str = "raise", **option_kwargs) -> Result:
    """The metrics from already extracted features, statistics, or plain N x d arrays.

    ``real`` / ``fake``: :class:`~imgdist.extraction.features.Features`, :class:`GaussianStats`, or
    N x d arrays (your own features: every feature metric runs on them, labelled
    ``FD[user-features]`` etc.). ``real`` may be None for metrics that need no real set (``is``,
    ``vendi``, ...). Metric settings as keywords (``kid_subsets``, ``pr_k``, ...) or as ``options``.
    ``progress``: progress bars for metrics that can take a while (FID-infinity). ``real_test``:
    held-out real features (C_T). ``per_image``: fill ``result.per_image``. ``shard``: this
    process's share of the heavy work (torchrun; results are the same). ``fake_source``: the fakes'
    images, for metrics that read them (lpips-diversity), ``device`` where they run and ``on_error``
    what an unreadable one does (as in the extraction). ``skip_unfit``: a metric
    the sets turn out too small for (no usable C_T cell) is left out and named in
    ``result.details['left_out']`` instead of failing the run (per-class evaluation).
    """
    options = options or MetricOptions.from_keywords(option_kwargs)
    check_on_error(on_error)
    real, fake, real_test = as_side(real, "real"), as_side(fake, "fake"), as_side(real_test, "real_test")
    if fake is None:
        raise ImgdistError("evaluate_features needs the fake (generated) set")
    sides = {"real": real, "fake": fake}
    stats_sides = tuple(side for side, obj in sides.items() if isinstance(obj, GaussianStats))
    has_logits = isinstance(fake, Features) and fake.logits is not None
    fake_stats = fake if isinstance(fake, GaussianStats) else fake.stats
    real_stats = None if real is None else (real if isinstance(real, GaussianStats) else real.stats)
    backbone = fake_stats.provenance.backbone
    outputs = (set(real.extra) if isinstance(real, Features) else set()) & set(getattr(fake, "extra", {}))
    asked = None if isinstance(metrics, Selection) else request(metrics)  # a Selection is resolved already
    chosen = metrics if asked is None else asked.resolve(Facts(
        has_logits=has_logits, features=not stats_sides, real_test=real_test is not None,
        clip=bool(backbone and backbone.startswith("clip-")), outputs=frozenset(outputs)))
    counts = {side: _count(obj) for side, obj in sides.items() if obj is not None}
    if real_test is not None:
        counts["real_test"] = real_test.stats.n
    known = known_counts(counts, sides)
    fitted = []
    if asked is not None:
        chosen, fitted = fit_all(asked, chosen, options, known)
    without = [m for m in chosen if R.IMAGES in R.get(m).needs and fake_source is None]
    if without:
        raise ImgdistError(f"{', '.join(without)}: needs the fakes' images, not their features: use imgdist.evaluate "
                           "or imgdist score")
    if real is None:
        needing = [m for m in chosen if R.get(m).needs_real]
        if needing:
            raise ImgdistError(f"{', '.join(needing)}: need(s) a real (reference) set; without one only "
                               f"{', '.join(m.name for m in R.metrics() if not m.needs_real)} can be computed")
    if real_test is not None:
        real_stats.provenance.check_compatible(real_test.provenance, "real vs real test", force)
    check_sets(chosen, options, known, has_logits=has_logits, stats_sides=stats_sides)
    if per_image and stats_sides:
        raise ImgdistError(f"the per-image table needs images, but {stats_sides[0]} is a statistics file")
    notes, provenance = [], fake_stats.provenance
    if real_stats is not None:
        notes = real_stats.provenance.check_compatible(fake_stats.provenance, "real vs fake", force)
        provenance = real_stats.provenance if real_stats.provenance.known else fake_stats.provenance
        _check_dims(real_stats, fake_stats)

    result = Result(values={}, labels={}, provenance=provenance, warnings=list(notes) + fitted)
    result.counts = {side: known.get(side) for side in ("real", "fake") if side in counts}  # None: not recorded
    for side, obj in (("real", real), ("fake", fake), ("real_test", real_test)):
        if isinstance(obj, Features) and len(obj.skipped):
            result.counts[f"{side}_skipped"] = len(obj.skipped)
            result.warnings.append(f"{side}: {obj.skipped.summary()}")
    warning = weights_warning(provenance)
    if warning:
        result.warnings.append(warning)

    run = MetricRun(real, fake, options, result, force=force, progress=progress, real_test=real_test,
                    chosen=chosen, shard=shard, fake_source=fake_source, device=device, on_error=on_error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for metric in chosen:
            try:
                run.compute(metric)
            except ValueError as exc:  # the metric functions' input checks, e.g. too few images for k
                if skip_unfit and isinstance(exc, SetTooSmall):
                    result.details.setdefault("left_out", {})[metric] = one_line(exc)
                    continue
                raise ImgdistError(f"{metric}: {one_line(exc)}") from None
        if options.bootstrap:
            _bootstrap(result, chosen, run.xr, run.xf, options)
        if per_image:  # "chosen": only the chosen metrics' columns (another network of the same run)
            always = per_image != "chosen" and real is not None
            result.per_image = run.per_image(per_image_metrics(chosen, always=always))
    for w in caught:
        message = one_line(w.message)
        if message not in result.warnings:
            result.warnings.append(message)
    for key in result.values:
        result.labels[key] = metric_label(key, provenance, options)
    return result


def _check_dims(real_stats: GaussianStats, fake_stats: GaussianStats) -> None:
    if real_stats.dim != fake_stats.dim:
        why = ("resize mode 'native' keeps each image's own size, so both sets need images of one size"
               if real_stats.provenance.resize_mode == fake_stats.provenance.resize_mode == "native" else
               "they were not made by the same backbone and layer (see the statistics files' provenance)")
        raise ImgdistError(f"the real set has {real_stats.dim} feature values per image, the fake set "
                           f"{fake_stats.dim}: {why}")


def _bootstrap(result, chosen, xr, xf, options: MetricOptions):
    """Percentile intervals, re-centred on the point estimate, for every chosen metric with a
    bootstrap statistic.

    Resampling with replacement repeats images, which shrinks the effective sample size, and FID
    grows as N falls: the raw bootstrap distribution sits above the estimate (by 2x when N is not
    much larger than d). Subtracting the bootstrap's own bias estimate, mean(t*) - t, keeps the
    spread (the sampling uncertainty of the number at this N) and removes the offset
    (Efron & Tibshirani 1993, ch. 10).
    """
    n_boot, ci, seed = options.bootstrap, options.ci, options.seed
    result.details["ci_level"] = ci
    result.details["bootstrap_samples"] = n_boot
    for metric in chosen:
        statistic = R.get(metric).bootstrap
        if statistic is None or metric not in result.values:
            continue
        replicates = M.bootstrap_replicates(lambda r, f, s=statistic: s(r, f, options), xr, xf, n_boot=n_boot,
                                            seed=seed)
        offset = replicates.mean() - result.values[metric]
        low, high = np.quantile(replicates, [(1 - ci) / 2, (1 + ci) / 2]) - offset
        result.intervals[metric] = (float(low), float(high))
        result.details[f"{metric}_bootstrap_offset"] = float(offset)


def _count(side: Features | GaussianStats) -> int:
    """A side's number of images: its rows where it has them (stored statistics beside them may
    carry no count), else the statistics' count (0: not recorded)."""
    if isinstance(side, Features) and side.features is not None:
        return len(side.features)
    return (side if isinstance(side, GaussianStats) else side.stats).n


def known_counts(counts: dict[str, int], sides: dict) -> dict[str, int]:
    """The image counts that are known: a statistics file without ``n`` (pytorch-fid's and
    clean-fid's hold only mu and sigma) has count 0, which means "not recorded", not "no images"."""
    return {side: n for side, n in counts.items()
            if not (isinstance(sides.get(side), GaussianStats) and n == 0)}
