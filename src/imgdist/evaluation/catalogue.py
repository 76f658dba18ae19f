"""The metric catalogue: one entry per metric, and everything else reads it.

An entry (:class:`Metric`) holds a metric's name and aliases, what it needs (per-image features of
both sets, the fakes' classifier logits, a held-out real set, CLIP embeddings, a backbone's extra
outputs such as sFID's maps), its direction and printed labels, the settings it reads, the
smallest sets it can be computed on, and the function that computes it from a
:class:`~imgdist.evaluation.compute.MetricRun`. The settings (:class:`Setting`) hold their
default, range and help; :data:`SUITES` hold published tables (ADM's). From these come:

* :func:`parse_metrics` -- names, aliases and ``all`` -> the canonical tuple, once per run;
* :class:`MetricOptions` -- every setting, checked on construction;
* :meth:`MetricOptions.check_sets` -- what the set sizes rule out, before any extraction;
* the dispatch (:meth:`MetricRun.compute` calls ``entry.compute``), the labels and directions of
  :mod:`imgdist.evaluation.results`, the per-class rules, the CLI's ``--metrics`` help and its
  setting flags.

Adding a metric is one entry here plus one pure function in :mod:`imgdist.metrics`.

The CLI builds ``--help`` from this module, so it imports :mod:`imgdist.metrics` (numpy, scipy)
only inside the functions that compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import defaults as D
from ..checks import check_fraction, check_int, check_number, option
from ..errors import ImgdistError, SetTooSmall

# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """A metric setting: the Python keyword ``name`` and the CLI flag ``--name-with-dashes``."""

    name: str
    default: object
    help: str
    kind: str = "int"                 # int, number (in [minimum, maximum]), fraction, sizes, flag
    minimum: float = 0
    maximum: float | None = None
    cli: bool = True                  # sizes lists are Python-only

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """The value normalised, or a one-line error naming the keyword and the flag."""
        if self.kind == "int":
            return check_int(self.name, value, int(self.minimum))
        if self.kind == "fraction":
            return check_fraction(self.name, value)
        if self.kind == "number":
            return check_number(self.name, value, self.minimum, self.maximum)
        if self.kind == "flag":
            if not isinstance(value, (bool, np.bool_)):
                raise ImgdistError(f"{option(self.name)} must be True or False, got {value!r}")
            return bool(value)
        if value is None:  # sizes: None means the metric's own choice
            return None
        sizes = tuple(sorted({check_int(self.name, s, int(self.minimum)) for s in value}))
        if len(sizes) < 2:
            raise ImgdistError(f"{option(self.name)} needs at least two different sizes, got {tuple(value)}")
        return sizes

    def help_text(self) -> str:
        if self.kind == "flag":
            return self.help
        shown = f"{self.default:g}" if isinstance(self.default, float) else self.default
        return f"{self.help} (default: {shown})"


SETTINGS: tuple[Setting, ...] = (
    Setting("kid_subsets", D.KID_SUBSETS, "KID: number of subsets", minimum=1),
    Setting("kid_subset_size", D.KID_SUBSET_SIZE, "KID: subset size", minimum=2),
    Setting("is_splits", D.IS_SPLITS, "Inception Score: splits", minimum=1),
    Setting("pr_k", D.PR_K, "precision/recall and realism: k nearest neighbours", minimum=1),
    Setting("dc_k", D.DC_K, "density/coverage: k nearest neighbours", minimum=1),
    Setting("fid_inf_sizes", None, "FID-infinity: the set sizes of the fit", kind="sizes", minimum=2, cli=False),
    Setting("bootstrap", D.BOOTSTRAP, "bootstrap resamples for confidence intervals of FID and KID (e.g. 200)"),
    Setting("ci", D.CI, "confidence level of the intervals", kind="fraction"),
    Setting("seed", D.SEED, "seed for KID subsets, the bootstrap and C_T's cells"),
    Setting("ct_cells", D.CT_CELLS, "C_T: k-means cells on the real set", minimum=1),
    Setting("copies_percentile", D.COPIES_PERCENTILE,
            "copies: a fake nearer a real than this percentile of the reals' nearest-neighbour distances "
            "counts as a copy", kind="number", minimum=0.0, maximum=100.0),
    Setting("adm_exact", False, "precision-adm/recall-adm (and --suite adm): distances in float64 instead of "
            "ADM's float16 blocks", kind="flag"),
)
SETTING = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class MetricOptions:
    """Every metric setting (see :data:`SETTINGS`); the keyword names are the CLI flags with ``_``
    for ``-``. Each value is checked on construction."""

    kid_subsets: int = D.KID_SUBSETS
    kid_subset_size: int = D.KID_SUBSET_SIZE
    is_splits: int = D.IS_SPLITS
    pr_k: int = D.PR_K
    dc_k: int = D.DC_K
    fid_inf_sizes: tuple[int, ...] | None = None
    bootstrap: int = D.BOOTSTRAP
    ci: float = D.CI
    seed: int = D.SEED
    ct_cells: int = D.CT_CELLS
    copies_percentile: float = D.COPIES_PERCENTILE
    adm_exact: bool = False

    def __post_init__(self):
        for setting in SETTINGS:  # frozen: normalise the values once, here
            object.__setattr__(self, setting.name, setting.check(getattr(self, setting.name)))

    @classmethod
    def from_keywords(cls, keywords: dict) -> "MetricOptions":
        """Options from keywords, refusing a name that is no setting (one line, not a TypeError)."""
        unknown = sorted(set(keywords) - set(SETTING))
        if unknown:
            raise ImgdistError(f"unknown metric setting(s) {', '.join(unknown)}; the settings are "
                               f"{', '.join(SETTING)}")
        return cls(**keywords)

    def check_sets(self, chosen, counts: dict[str, int], *, has_logits: bool = True,
                   stats_sides: tuple[str, ...] = ()) -> None:
        """Refuse, before extraction, what the set sizes and the sides' kinds already rule out.

        ``counts``: images per side (``real``, ``fake`` and, where given, ``real_test``);
        ``stats_sides``: sides given as statistics files (mu and sigma only).
        """
        entries = [METRIC[m] for m in chosen]
        if any(REAL_TEST in e.needs for e in entries) and "real_test" not in counts:
            raise ImgdistError("ct: the data-copying test C_T needs held-out real images the generator never "
                               "saw; pass them with --real-test SRC (real_test=...)")
        for side in stats_sides:
            missing = [e.name for e in entries
                       if FEATURES in e.needs or e.outputs or (LOGITS in e.needs and side == "fake")]
            if missing or self.bootstrap:
                what = ", ".join(missing) + (" and " if missing and self.bootstrap else "") + \
                    ("bootstrap intervals" if self.bootstrap else "")
                raise ImgdistError(f"{what} need(s) images, but {side} is a statistics file (it holds only "
                                   "mu and sigma); pass the images, or use --metrics fid")
        if any(LOGITS in e.needs for e in entries) and not has_logits:
            raise ImgdistError("is: the Inception Score needs a classifier, and this backbone has no logits; "
                               "use --backbone inception (or a backbone with classes in 'imgdist backbones')")
        covariance = [e.name for e in entries if e.covariance]
        for side in ("real", "fake"):
            n = counts.get(side)
            if n is not None and n < 2 and covariance:
                raise SetTooSmall(f"{', '.join(covariance)}: the {side} set has {n} image(s); a covariance "
                                  "needs at least 2 images per set")
        done = set()
        for e in entries:
            if e.check_sizes is not None and e.check_sizes not in done:
                done.add(e.check_sizes)  # shared checks (precision and recall) say it once
                e.check_sizes(self, counts, set(chosen))


# ---------------------------------------------------------------- what a metric needs

#: per-image features of both sets (not only their Gaussian statistics)
FEATURES = "features"
#: the fakes' classifier logits
LOGITS = "logits"
#: a held-out real set (``real_test`` / ``--real-test``)
REAL_TEST = "real_test"
#: CLIP image embeddings (Jayasumana et al. 2024): only then part of ``all``
CLIP = "clip"


@dataclass(frozen=True)
class Facts:
    """What a run has, which decides what ``all`` means: the backbone's classifier, images (not
    statistics files) on both sides, a held-out set, CLIP features."""

    has_logits: bool = True
    features: bool = True
    real_test: bool = False
    clip: bool = False
    outputs: frozenset = frozenset()   # the backbone's extra outputs (BackboneSpec.extra_outputs)

    @classmethod
    def of(cls, spec, *, stats_sides=(), real_test: bool = False) -> "Facts":
        """The facts of a run on backbone ``spec`` (None: statistics files on both sides)."""
        return cls(has_logits=bool(spec and spec.has_logits), features=not stats_sides, real_test=real_test,
                   clip=bool(spec and spec.name.startswith("clip-")),
                   outputs=frozenset(spec.extra_outputs) if spec else frozenset())

    def provides(self, metric: "Metric") -> bool:
        have = {LOGITS: self.has_logits, REAL_TEST: self.real_test, CLIP: self.clip, FEATURES: self.features}
        return (all(have[need] for need in metric.needs) and set(metric.outputs) <= self.outputs
                and (self.features or not (metric.needs & {LOGITS} or metric.outputs)))


# ---------------------------------------------------------------- entries


@dataclass(frozen=True)
class Metric:
    """One metric: everything imgdist knows about it, in one place."""

    name: str
    help: str                               # one line: what it is and where it comes from
    compute: Callable[..., None]            # compute(run: MetricRun) fills run.result
    label: str                              # printed name on the published protocol, e.g. FID
    #: printed name on other features (FD -> FD[backbone]); None where the name itself says nothing
    #: of Inception (precision[backbone])
    generic: str | None = None
    lower_is_better: bool | None = None     # None: neither (C_T is best near 0)
    needs: frozenset = frozenset()
    settings: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    covariance: bool = False                # needs >= 2 images per set
    check_sizes: Callable | None = None     # (options, counts, chosen) -> None or SetTooSmall
    per_class: bool = True                  # computed per class from the class's own features
    #: further backbone outputs it reads (``BackboneSpec.extra_outputs``), computed in the same pass;
    #: their statistics stream, and ``keeps_outputs`` keeps them per image too
    outputs: tuple[str, ...] = ()
    keeps_outputs: bool = False
    #: part of ``all``; False for a published tool's variant of a metric already there (ADM's
    #: precision/recall and IS), which is named explicitly or comes with its ``--suite``
    in_all: bool = True
    extra_values: dict = field(default_factory=dict)  # further result keys it fills -> their labels

    def labels(self, key: str) -> tuple[str, str]:
        """``(name on the published protocol, name on other features)`` of a result key it fills."""
        if key != self.name:
            return self.extra_values[key], self.extra_values[key]
        return self.label, self.generic or self.label


def _fid(run) -> None:
    from .. import metrics as M

    xr, xf = run.xr, run.xf
    from_rows = xr is not None and xf is not None and not (run.real.stats_from_file or run.fake.stats_from_file)
    if from_rows and min(len(xr), len(xf)) < xr.shape[1]:
        # fewer images than dimensions: the same distance from the features, exactly and
        # without any d x d decomposition (see metrics.frechet.fid_from_features)
        run.real_stats.check_comparable(run.fake_stats, run.force)
        run.result.values["fid"] = M.fid_from_features(xr, xf)
    else:
        run.result.values["fid"] = run.real_stats.frechet_distance(run.fake_stats, force=run.force)


def _kid(run) -> None:
    from .. import metrics as M

    o, result = run.options, run.result
    value, std = M.kid(run.xr, run.xf, subsets=o.kid_subsets, subset_size=o.kid_subset_size, seed=o.seed,
                       shard=run.shard)
    result.values["kid"] = value
    if std is None:  # every subset would be the whole set: one estimate, no spread to report
        result.details["kid_subsets"] = "full sets"
    else:
        result.stds["kid"] = std
        result.details["kid_subsets"] = f"{o.kid_subsets} x {min(o.kid_subset_size, len(run.xr), len(run.xf))}"


def _is(run) -> None:
    from .. import metrics as M

    run.result.values["is"], run.result.stds["is"] = M.inception_score(run.fake.logits, splits=run.options.is_splits)


def _knn(run) -> None:
    """Precision, recall, density, coverage: one set of distance passes for whichever are chosen
    (real x real for both k, fake x fake only where precision/recall need it, real x fake)."""
    from .. import metrics as M

    o, chosen = run.options, set(run.chosen)
    pr = bool(chosen & {"precision", "recall"})
    r = run.once("prdc", lambda: M.prdc(run.xr, run.xf, k=o.dc_k, pr_k=o.pr_k, shard=run.shard,
                                        precision_recall=pr))
    for name in ("precision", "recall", "density", "coverage"):
        if name in chosen:
            run.result.values[name] = getattr(r, name)
    if pr:
        run.result.details["precision_recall_k"] = o.pr_k
    if chosen & {"density", "coverage"}:
        run.result.details["density_coverage_k"] = o.dc_k


def _fid_inf(run) -> None:
    from .. import metrics as M

    o = run.options
    fit = M.fid_infinity(run.xr, run.xf, sizes=o.fid_inf_sizes, seed=o.seed, progress=run.progress,
                         shard=run.shard)
    run.result.values["fid-inf"] = fit.value
    run.result.details["fid_inf_fit"] = {"slope": fit.slope, "sizes": fit.sizes, "fids": fit.fids,
                                         "r2": fit.r2, "residual_rms": fit.residual_rms}


#: CMMD as published: CLIP ViT-L/14 at 336 px, the reference code's resize
CMMD_BACKBONE, CMMD_MODE = "clip-vit-l14-336", "cmmd"


def _cmmd(run) -> None:
    from .. import metrics as M

    run.result.values["cmmd"] = M.cmmd(run.xr, run.xf)
    p = run.real_stats.provenance
    if (p.backbone, p.resize_mode) != (CMMD_BACKBONE, CMMD_MODE):
        run.result.warnings.append(
            f"CMMD as published uses {CMMD_BACKBONE} features in resize mode {CMMD_MODE}; this one is on "
            f"{p.backbone} ({p.resize_mode}) and is not comparable with published CMMD values")


def _vendi(run) -> None:
    """Vendi of the fakes and, for reference, of the reals, at every order q."""
    from .. import metrics as M

    orders = {}
    for side, x in (("fake", run.xf), ("real", run.xr)):
        spectrum = M.vendi_spectrum(x, name=side)
        orders[side] = {("inf" if np.isinf(q) else f"{q:g}"): M.vendi_from_spectrum(spectrum, q)
                        for q in D.VENDI_ORDERS}
    run.result.values["vendi"] = orders["fake"]["1"]
    run.result.values["vendi-real"] = orders["real"]["1"]
    run.result.details["vendi_orders"] = orders


def _authenticity(run) -> None:
    run.result.values["authenticity"] = run.authenticity().value


def _copies(run) -> None:
    c = run.copies()
    run.result.values["copies"] = c.count
    run.result.details["copies"] = {
        "threshold": c.threshold, "percentile": c.percentile, "fraction": c.fraction,
        # the closest first; the full list is in --per-image
        "pairs": [{"fake": run.name_of("fake", i), "real": run.name_of("real", j), "distance": float(d)}
                  for i, j, d in zip(c.fake_index[:100], c.real_index[:100], c.distance[:100])],
        "fake_index": c.fake_index.tolist(), "real_index": c.real_index.tolist(),
    }


def _realism(run) -> None:
    r = run.realism()
    run.result.values["realism"] = float(np.median(r.realism))
    run.result.details["realism"] = {"k": r.k, "prune_percentile": r.prune_percentile,
                                     "share_at_least_1": float(np.mean(r.realism >= 1.0))}


def _ct(run) -> None:
    from .. import metrics as M

    ct = M.ct_score(run.xr, run.real_test.features, run.xf, n_cells=run.options.ct_cells,
                    min_fake_per_cell=D.CT_MIN_FAKE_PER_CELL, seed=run.options.seed)
    run.result.values["ct"] = ct.value
    run.result.counts["real_test"] = len(run.real_test.features)
    run.result.details["ct"] = {"cells": ct.n_cells, "cells_used": int(ct.used.sum()),
                                "fake_fraction_used": ct.fake_fraction_used, "z": ct.z,
                                "weight": ct.weight, "fake_count": ct.fake_count,
                                "test_count": ct.test_count, "min_fake_per_cell": ct.min_fake_per_cell}


def _sfid(run) -> None:
    """sFID (Nash et al. 2021, as ADM's evaluator computes it): the Fréchet distance of the
    backbone's ``sfid`` output, Inception's mixed_6/conv maps, 7 channels in (h, w, c) order."""
    real, fake = run.real.extra["sfid"], run.fake.extra["sfid"]
    run.result.values["sfid"] = real.frechet_distance(fake, force=run.force)


def _is_adm(run) -> None:
    from .. import metrics as M

    logits = run.fake.extra_features["logits_unbiased"]
    run.result.values["is-adm"] = M.adm_inception_score(logits, split_size=D.ADM_IS_SPLIT)
    run.result.details["is_adm_split_size"] = D.ADM_IS_SPLIT


def _adm_pr(run) -> None:
    """ADM's precision and recall: one pair of radius passes for both."""
    from .. import metrics as M

    exact = run.options.adm_exact
    pr = run.once("adm_pr", lambda: M.adm_precision_recall(run.xr, run.xf, k=D.ADM_K, exact=exact))
    for name, value in (("precision-adm", pr.precision), ("recall-adm", pr.recall)):
        if name in run.chosen:
            run.result.values[name] = value
    run.result.details["adm_precision_recall"] = {
        "k": D.ADM_K, "distances": "float64" if pr.exact else "float16 blocks, float32 where they overflow",
        "borderline_precision": pr.borderline_precision, "borderline_recall": pr.borderline_recall}


# ---------------------------------------------------------------- size rules


def _need_k(options, counts, chosen) -> None:
    """Precision/recall need k-NN radii in both sets, realism in the real set only."""
    sides = ("real", "fake") if chosen & {"precision", "recall"} else ("real",)
    for side in sides:
        n = counts.get(side)
        if n is not None and options.pr_k >= n:
            raise SetTooSmall(f"{'precision/recall' if len(sides) == 2 else 'realism'}: {option('pr_k')} "
                              f"{options.pr_k} needs more than {options.pr_k} images per set, and the {side} "
                              f"set has {n}")


def _need_dc_k(options, counts, chosen) -> None:
    real = counts.get("real")
    if real is not None and options.dc_k >= real:
        raise SetTooSmall(f"density/coverage: {option('dc_k')} {options.dc_k} needs more than {options.dc_k} "
                          f"real images, and the real set has {real}")


def _need_is_splits(options, counts, chosen) -> None:
    fake = counts.get("fake")
    if fake is not None and options.is_splits > fake:
        raise SetTooSmall(f"is: {option('is_splits')} {options.is_splits} is more than the {fake} fake images")


def _need_fid_inf(options, counts, chosen) -> None:
    fake = counts.get("fake")
    if fake is None:
        return
    if fake < 3:
        raise SetTooSmall(f"fid-inf needs at least 3 fake images, got {fake}")
    if options.fid_inf_sizes and max(options.fid_inf_sizes) > fake:
        raise SetTooSmall(f"{option('fid_inf_sizes')} go up to {max(options.fid_inf_sizes)}, more than the "
                          f"{fake} fake images")


def _need_nearest_real(options, counts, chosen) -> None:
    real = counts.get("real")
    if real is not None and real < 2:
        raise SetTooSmall("authenticity, copies and realism need at least 2 real images (each real's nearest "
                          "other real)")


def _need_ct_cells(options, counts, chosen) -> None:
    """What C_T (Meehan et al. 2020) needs of its sets, known from their sizes alone.

    A cell enters C_T only with ``CT_MIN_FAKE_PER_CELL`` (21) fakes: the authors' tau = 20 / m, the
    size from which the normal approximation of the cell's Mann-Whitney Z is trusted. Fewer fakes
    than that in all can fill no cell. The held-out images are the other sample of every cell's
    test, weighted by their share: fewer than the same 21 in all leave every cell's Z resting on a
    handful of images (one held-out image gave C_T 1.23), and fewer than ``ct_cells`` leave cells
    without any by construction. So: real >= ct_cells, held-out >= max(21, ct_cells), fakes >= 21.
    """
    real, fake, test = counts.get("real"), counts.get("fake"), counts.get("real_test")
    cells, floor = options.ct_cells, D.CT_MIN_FAKE_PER_CELL
    if real is not None and cells > real:
        raise SetTooSmall(f"ct: {option('ct_cells')} {cells} is more than the {real} real images")
    if fake is not None and fake < floor:
        raise SetTooSmall(f"ct: the fake set has {fake} images; C_T uses only k-means cells holding at least "
                          f"{floor} fakes, so it needs at least {floor}")
    if test is not None and test < max(floor, cells):
        raise SetTooSmall(f"ct: the held-out set (--real-test) has {test} image(s); C_T compares each cell's "
                          f"fakes with its held-out images and needs at least {max(floor, cells)} of them "
                          f"(at least {floor}, and one per cell on average: {option('ct_cells')} {cells})")


def _need_adm_k(options, counts, chosen) -> None:
    for side in ("real", "fake"):
        n = counts.get(side)
        if n is not None and n <= D.ADM_K:
            raise SetTooSmall(f"precision-adm/recall-adm: the {side} set has {n} images; ADM's radius is each "
                              f"image's {D.ADM_K}rd neighbour, so more than {D.ADM_K} are needed")


def _need_realism(options, counts, chosen) -> None:
    _need_nearest_real(options, counts, chosen)
    if not chosen & {"precision", "recall"}:  # else _need_k checks both sides already
        _need_k(options, counts, chosen)


# ---------------------------------------------------------------- the catalogue

_ADM_PR = dict(compute=_adm_pr, lower_is_better=False, needs=frozenset({FEATURES}), settings=("adm_exact",),
               check_sizes=_need_adm_k, in_all=False)
_PRDC = dict(compute=_knn, lower_is_better=False, needs=frozenset({FEATURES}))

CATALOGUE: tuple[Metric, ...] = (
    Metric("fid", "Fréchet distance of Gaussian fits (Heusel et al. 2017)", _fid, "FID", "FD",
           lower_is_better=True, covariance=True),
    Metric("kid", "unbiased MMD², kernel (x·y/d + 1)³, over subsets (Bińkowski et al. 2018)", _kid, "KID", "KD",
           lower_is_better=True, needs=frozenset({FEATURES}), settings=("kid_subsets", "kid_subset_size", "seed"),
           covariance=True),
    Metric("is", "Inception Score of the fakes (Salimans et al. 2016); backbones with a classifier", _is, "IS",
           "IS", lower_is_better=False, needs=frozenset({LOGITS}), settings=("is_splits",),
           check_sizes=_need_is_splits),
    Metric("precision", "share of fakes inside the reals' k-NN manifold (Kynkäänniemi et al. 2019)",
           label="precision", settings=("pr_k",), check_sizes=_need_k, **_PRDC),
    Metric("recall", "share of reals inside the fakes' k-NN manifold (Kynkäänniemi et al. 2019)",
           label="recall", settings=("pr_k",), check_sizes=_need_k, **_PRDC),
    Metric("density", "k-NN balls of reals counted per fake (Naeem et al. 2020)", label="density",
           settings=("dc_k",), check_sizes=_need_dc_k, **_PRDC),
    Metric("coverage", "share of reals whose k-NN ball holds a fake (Naeem et al. 2020)", label="coverage",
           settings=("dc_k",), check_sizes=_need_dc_k, **_PRDC),
    Metric("fid-inf", "FID extrapolated to N → ∞ by a line in 1/N (Chong & Forsyth 2020)", _fid_inf, "FID_inf",
           "FD_inf", lower_is_better=True, needs=frozenset({FEATURES}), settings=("fid_inf_sizes", "seed"),
           aliases=("fid_inf", "fidinf"), covariance=True, check_sizes=_need_fid_inf),
    Metric("cmmd", "1000 × MMD² with a Gaussian kernel (σ 10) on normalised CLIP embeddings "
           "(Jayasumana et al. 2024)", _cmmd, "CMMD", lower_is_better=True, needs=frozenset({FEATURES, CLIP})),
    Metric("vendi", "Vendi score: the effective number of distinct fakes (Friedman & Dieng 2023)", _vendi, "Vendi",
           lower_is_better=False, needs=frozenset({FEATURES}), extra_values={"vendi-real": "Vendi_real"}),
    Metric("authenticity", "share of fakes farther from their nearest real than that real from its own "
           "(Alaa et al. 2022); low: copies", _authenticity, "authenticity", lower_is_better=False,
           needs=frozenset({FEATURES}), check_sizes=_need_nearest_real),
    Metric("ct", "the data-copying test C_T (Meehan et al. 2020); < 0 copying, > 0 underfitting", _ct, "C_T",
           needs=frozenset({FEATURES, REAL_TEST}), settings=("ct_cells", "seed"), check_sizes=_need_ct_cells,
           per_class=False),
    Metric("copies", "fakes nearer a real than a low percentile of the reals' nearest-neighbour distances",
           _copies, "copies", lower_is_better=True, needs=frozenset({FEATURES}), settings=("copies_percentile",),
           check_sizes=_need_nearest_real),
    Metric("realism", "median realism score of the fakes (Kynkäänniemi et al. 2019, eq. 3)", _realism,
           "realism_median", lower_is_better=False, needs=frozenset({FEATURES}), settings=("pr_k",),
           check_sizes=_need_realism),
    Metric("sfid", "Fréchet distance of Inception's mixed_6/conv maps, first 7 channels (Nash et al. 2021; "
           "ADM's evaluator)", _sfid, "sFID", "sFD", lower_is_better=True, covariance=True, outputs=("sfid",),
           per_class=False),
    Metric("is-adm", "Inception Score as ADM's evaluator computes it: softmax of pool_3 @ W without bias over "
           "1008 classes, contiguous splits of 5,000", _is_adm, "IS_adm", "IS_adm", lower_is_better=False,
           outputs=("logits_unbiased",), keeps_outputs=True, per_class=False, in_all=False),
    Metric("precision-adm", "precision as ADM's evaluator estimates it (k = 3, squared distances in float16 "
           "blocks)", label="precision_adm", **_ADM_PR),
    Metric("recall-adm", "recall as ADM's evaluator estimates it (k = 3, squared distances in float16 blocks)",
           label="recall_adm", **_ADM_PR),
)
METRIC = {m.name: m for m in CATALOGUE}
METRICS = tuple(METRIC)
#: names that stand for several metrics
GROUPS = {"prdc": ("precision", "recall", "density", "coverage"), "pr": ("precision", "recall"),
          "dc": ("density", "coverage"), "memorization": ("authenticity", "ct", "copies")}
ALIASES = {**GROUPS, **{alias: (m.name,) for m in CATALOGUE for alias in m.aliases}}
#: result keys -> the entry that fills them
_OWNER = {key: m for m in CATALOGUE for key in (m.name, *m.extra_values)}


@dataclass(frozen=True)
class Suite:
    """A published table: its metrics in its order under its own names, on a fixed network."""

    name: str
    metrics: tuple[str, ...]
    names: dict[str, str]
    backbone: str
    mode: str


#: OpenAI's ADM evaluator (guided-diffusion ``evaluations/evaluator.py``): the table diffusion papers
#: report, on the FID Inception with the TensorFlow graph's resize
SUITES = {"adm": Suite("adm", ("is-adm", "fid", "sfid", "precision-adm", "recall-adm"),
                       {"is-adm": "Inception Score", "fid": "FID", "sfid": "sFID", "precision-adm": "Precision",
                        "recall-adm": "Recall"}, backbone="inception", mode="tf")}


def entry(key: str) -> Metric | None:
    """The catalogue entry that fills result key ``key`` (``vendi-real`` -> Vendi's)."""
    return _OWNER.get(key)


def metrics_help() -> str:
    """The ``--metrics`` help, from the catalogue."""
    return ("comma-separated: " + ", ".join(METRICS) + "; "
            + ", ".join(f"'{g}' = {', '.join(ms)}" for g, ms in GROUPS.items())
            + "; 'all' = every metric that applies")


# ---------------------------------------------------------------- choosing


class Selection(tuple):
    """Canonical metric names in catalogue order: parsed once per run, and passed on as parsed."""


@dataclass(frozen=True)
class Request:
    """What the user asked for, before the run's facts are known (``all`` not yet resolved)."""

    names: frozenset
    everything: bool

    def resolve(self, facts: Facts) -> Selection:
        chosen = set(self.names)
        if self.everything:
            chosen.update(m.name for m in CATALOGUE if m.in_all and facts.provides(m))
        return Selection(m for m in METRICS if m in chosen)


def request(metrics) -> Request:
    """``'fid,kid,prdc'``, ``'all'`` or a list -> a :class:`Request` (unknown names refused)."""
    if isinstance(metrics, Selection):
        return Request(frozenset(metrics), False)
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    chosen, everything = set(), False
    for raw in names:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name == "all":
            everything = True
        elif name in ALIASES:
            chosen.update(ALIASES[name])
        elif name in METRIC:
            chosen.add(name)
        else:
            raise ImgdistError(f"unknown metric {raw!r}; choose from {', '.join(METRICS)} "
                               f"(or {', '.join(ALIASES)}, all)")
    if not chosen and not everything:
        raise ImgdistError("no metric chosen")
    return Request(frozenset(chosen), everything)


def parse_metrics(metrics, facts: Facts | None = None, **fact_keywords) -> Selection:
    """``'fid,kid,prdc'`` or a list -> canonical names in catalogue order.

    ``'all'`` means every metric the run's :class:`Facts` provide: without classifier logits no
    Inception Score, with a statistics file on a side only FID, C_T only with a held-out real set,
    CMMD only on CLIP features. Metrics named explicitly are kept; :meth:`MetricOptions.check_sets`
    explains why one cannot be computed. A :class:`Selection` is returned as it is.
    """
    if isinstance(metrics, Selection):
        return metrics
    return request(metrics).resolve(facts or Facts(**fact_keywords))


def default_backbone(chosen) -> tuple[str, str | None]:
    """``(backbone, resize mode)`` when none is named: CMMD's own encoder and resize when CLIP
    metrics are all that is asked for, else Inception (its default mode)."""
    clip = {m.name for m in CATALOGUE if CLIP in m.needs}
    if chosen and set(chosen) <= clip:
        return CMMD_BACKBONE, CMMD_MODE
    if set(chosen) & clip:
        raise ImgdistError("cmmd needs CLIP features, and the other metrics would then be computed on CLIP too: "
                           f"name the backbone (--backbone {CMMD_BACKBONE} for CMMD as published), or run CMMD "
                           "on its own")
    return D.EVAL_BACKBONE, None


def needs_features(chosen) -> bool:
    return any(FEATURES in METRIC[m].needs for m in chosen)


def needs_logits(chosen) -> bool:
    return any(LOGITS in METRIC[m].needs for m in chosen)


def outputs_of(chosen) -> tuple[tuple[str, ...], bool]:
    """The extra backbone outputs the chosen metrics read, and whether any keeps them per image."""
    names = tuple(dict.fromkeys(o for m in chosen for o in METRIC[m].outputs))
    return names, any(METRIC[m].keeps_outputs for m in chosen)


def check_outputs(chosen, spec) -> None:
    """Refuse, before extraction, metrics that read an output this backbone does not have."""
    for m in chosen:
        missing = [o for o in METRIC[m].outputs if o not in spec.extra_outputs]
        if missing:
            raise ImgdistError(f"{m}: needs the {', '.join(missing)} output, which {spec.name} does not have; "
                               "use --backbone inception")


def per_class_metrics(chosen, options: MetricOptions, n_real: int, n_fake: int) -> list[str]:
    """The chosen metrics a class of this size gives from its own features (a small class cannot
    give k-NN metrics; C_T per class has its own held-out rule)."""
    keep = []
    for name in chosen:
        if not METRIC[name].per_class:
            continue
        try:
            options.check_sets([name], {"real": n_real, "fake": n_fake})
        except SetTooSmall:
            continue
        keep.append(name)
    return keep

