"""Each chosen metric, computed once from extracted features, into a :class:`~imgdist.evaluation.results.Result`.

:class:`MetricRun` holds one evaluation's inputs and the nearest-neighbour passes that several
metrics share (the reals' k-NN radii and nearest other real; each fake's nearest real), so that
realism, authenticity, copies and the per-image table cost one pass each over real x real and
fake x real, however many of them are asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import defaults as D
from .. import metrics as M
from ..errors import ImgdistError
from ..extraction.features import Features
from ..metrics._shard import ALONE, Shard
from ..extraction.backbones import get_spec
from .catalogue import METRIC, Facts, MetricOptions, needs_features, parse_metrics
from ..errors import one_line
from .results import PerImage, Result, metric_label, weights_tag
from ..extraction.stats import GaussianStats


@dataclass
class MetricRun:
    """The inputs of one evaluation and the passes its metrics share."""

    real: Features | GaussianStats
    fake: Features | GaussianStats
    options: MetricOptions
    result: Result
    force: bool = False
    progress: bool = False
    real_test: Features | None = None
    chosen: tuple[str, ...] = ()
    #: this process's share of the k-NN passes, KID subsets and FID-infinity subsets (torchrun)
    shard: Shard = ALONE
    _shared: dict = field(default_factory=dict)

    @property
    def real_stats(self) -> GaussianStats:
        return self.real if isinstance(self.real, GaussianStats) else self.real.stats

    @property
    def fake_stats(self) -> GaussianStats:
        return self.fake if isinstance(self.fake, GaussianStats) else self.fake.stats

    @property
    def xr(self) -> np.ndarray | None:
        return None if isinstance(self.real, GaussianStats) else self.real.features

    @property
    def xf(self) -> np.ndarray | None:
        return None if isinstance(self.fake, GaussianStats) else self.fake.features

    # ---------------------------------------------------------------- shared passes

    def once(self, key, make):
        """``make()`` computed once per run: passes that several metrics share."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def real_neighbours(self, k: int | None = None) -> M.RealNeighbours:
        """The real x real pass at radius ``k``; None: the one authenticity and copies share, which
        need only each real's nearest other real (k = 1, so 2 reals suffice), unless realism's
        ``pr_k`` pass is made anyway."""
        if k is None:
            k = self.options.pr_k if "realism" in self.chosen else 1
        return self.once(("real_nn", k), lambda: M.real_neighbours(self.xr, k=k))

    def realism(self) -> M.Realism:
        return self.once("realism", lambda: M.realism(self.xr, self.xf, k=self.options.pr_k,
                                                       prune_percentile=D.REALISM_PRUNE_PERCENTILE,
                                                       real_radii=self.real_neighbours(self.options.pr_k).radii))

    def fake_nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """Each fake's nearest real: from realism's pass where it is made anyway."""
        if "realism" in self.chosen:
            r = self.realism()
            return r.nearest_real, r.distance
        return self.once("fake_nearest", lambda: M.nearest_real(self.xr, self.xf))

    def authenticity(self) -> M.Authenticity:
        return self.once("authenticity", lambda: M.authenticity(
            self.xr, self.xf, real_nn=self.real_neighbours(), fake_nearest=self.fake_nearest()))

    def copies(self) -> M.Copies:
        return self.once("copies", lambda: M.copies(
            self.xr, self.xf, percentile=self.options.copies_percentile, real_nn=self.real_neighbours(),
            fake_nearest=self.fake_nearest()))

    def per_image(self) -> PerImage:
        r, a, c = self.realism(), self.authenticity(), self.copies()
        is_copy = np.zeros(len(self.xf), dtype=bool)
        is_copy[c.fake_index] = True
        return PerImage(fake=list(self.fake.names), realism=r.realism,
                        nearest_real=[self.real.names[j] for j in r.nearest_real], distance=r.distance,
                        inside=r.inside, authentic=a.authentic, copy=is_copy)

    # ---------------------------------------------------------------- metrics

    def compute(self, metric: str) -> None:
        METRIC[metric].compute(self)

    def name_of(self, side: str, i) -> str:
        """An image's name, or its position where the features came without names (the streaming
        :class:`~imgdist.evaluation.run.Evaluator`)."""
        features = self.real if side == "real" else self.fake
        names = features.names
        return names[i] if len(names) == len(features.features) else f"{side} #{int(i)}"


def evaluate_features(real: Features | GaussianStats, fake: Features | GaussianStats, *,
                      metrics=D.METRICS, force=False, options: MetricOptions | None = None,
                      progress: bool = False, real_test: Features | None = None, per_image: bool = False,
                      shard: Shard = ALONE, **option_kwargs) -> Result:
    """The metrics from already extracted features (or statistics).

    Metric settings as keywords (``kid_subsets``, ``pr_k``, ... see :class:`MetricOptions`) or as
    ``options``. ``progress``: progress bars for metrics that can take a while (FID-infinity).
    ``real_test``: held-out real features (C_T). ``per_image``: fill ``result.per_image``.
    ``shard``: this process's share of the k-NN passes and of the KID and FID-infinity subsets
    (:func:`imgdist.distributed.evaluate_features_distributed` passes it; results are the same).
    """
    options = options or MetricOptions.from_keywords(option_kwargs)
    stats_sides = tuple(side for side, obj in (("real", real), ("fake", fake)) if isinstance(obj, GaussianStats))
    has_logits = isinstance(fake, Features) and fake.logits is not None
    backbone = real.provenance.backbone if isinstance(real, Features) else None
    chosen = parse_metrics(metrics, Facts(has_logits=has_logits, features=not stats_sides,
                                          real_test=real_test is not None,
                                          clip=bool(backbone and backbone.startswith("clip-"))))
    real_stats = real if isinstance(real, GaussianStats) else real.stats
    fake_stats = fake if isinstance(fake, GaussianStats) else fake.stats
    counts = {"real": _count(real), "fake": _count(fake)}
    if real_test is not None:
        counts["real_test"] = real_test.stats.n
        real_stats.provenance.check_compatible(real_test.provenance, "real vs real test", force)
    known = known_counts(counts, {"real": real, "fake": fake})
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
            f"{provenance.backbone} weights {tag} are not the published ones ({get_spec(provenance.backbone).weights.sha256[:8]}): "
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


def keeps_features(chosen, options: MetricOptions, n: int, feature_dim: int, also: bool = False) -> bool:
    """Whether a set's per-image features are kept: the metrics or the bootstrap need them, or the set
    has no more images than dimensions. Then the features take no more memory than the covariance,
    and FID from features is exact where the covariance route of singular matrices loses digits
    (5.6e-5 relative measured at N = 160, d = 2048)."""
    return also or bool(needs_features(chosen)) or options.bootstrap > 0 or n <= feature_dim
