"""The plan of one evaluation, made once before any extraction, and consumed by every route.

A :class:`Plan` holds the chosen metrics (parsed once: names, aliases, groups and ``all`` resolved
against what the run has), the backbone, the settings, and what each side must keep (per-image
features, the fakes' logits, a backbone's extra outputs, the held-out set). :func:`make_plan`
makes every check that needs no extraction: what the set sizes rule out, what statistics files
cannot give, outputs the backbone lacks. One process (:func:`~imgdist.evaluation.run.evaluate`),
torchrun, the streaming :class:`~imgdist.evaluation.streaming.Evaluator`, per-class evaluation and
the ADM suite all run a plan; none of them chooses metrics or checks sizes on its own.

Everything about a metric is read from its registration (:mod:`imgdist.metrics.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ImgdistError, SetTooSmall
from ..metrics import registry as R
from ..metrics.registry import CLIP, FEATURES, IMAGES, LOGITS, PROMPTS, REAL_TEST
from .options import MetricOptions

# ---------------------------------------------------------------- what a run has


@dataclass(frozen=True)
class Facts:
    """What a run has, which decides what ``all`` means: the backbone's classifier, images (not
    statistics files) on both sides, a held-out set, CLIP features, the backbone's extra outputs."""

    has_logits: bool = True
    features: bool = True
    real_test: bool = False
    clip: bool = False
    outputs: frozenset = frozenset()   # the backbone's extra outputs (BackboneSpec.extra_outputs)
    prompts: bool = False              # prompts are given, and the backbone has a text tower

    @classmethod
    def of(cls, spec, *, stats_sides=(), real_test: bool = False, prompts: bool = False) -> "Facts":
        """The facts of a run on backbone ``spec`` (None: statistics files on both sides)."""
        return cls(has_logits=bool(spec and spec.has_logits), features=not stats_sides, real_test=real_test,
                   clip=bool(spec and spec.name.startswith("clip-")),
                   outputs=frozenset(spec.extra_outputs) if spec else frozenset(),
                   prompts=bool(prompts and spec is not None and getattr(spec, "text", None) is not None))

    def provides(self, metric: R.Metric) -> bool:
        have = {LOGITS: self.has_logits, REAL_TEST: self.real_test, CLIP: self.clip, FEATURES: self.features,
                PROMPTS: self.prompts, IMAGES: self.features}
        return (all(have[need] for need in metric.needs) and set(metric.outputs) <= self.outputs
                and (self.features or not (metric.needs & {LOGITS} or metric.outputs)))


# ---------------------------------------------------------------- choosing


class Selection(tuple):
    """Canonical metric names in table order: parsed once per run, and passed on as parsed."""


@dataclass(frozen=True)
class Request:
    """What the user asked for, before the run's facts are known (``all`` not yet resolved).
    ``at``: metrics named on a network of their own (``fid@dinov2-vit-l14``), by network."""

    names: frozenset
    everything: bool
    at: dict = field(default_factory=dict)

    def resolve(self, facts: Facts) -> Selection:
        chosen = set(self.names)
        if self.everything:
            chosen.update(m.name for m in R.metrics() if m.in_all and facts.provides(m))
        return Selection(m for m in R.names() if m in chosen)


def request(metrics) -> Request:
    """``'fid,kid,prdc'``, ``'all'`` or a list -> a :class:`Request` (unknown names refused);
    None: the default metrics. ``name@backbone`` computes a metric (or a group) on that network."""
    if metrics is None:
        metrics = R.default_metrics()
    if isinstance(metrics, Request):
        return metrics
    if isinstance(metrics, Selection):
        return Request(frozenset(metrics), False)
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    aliases, known = R.aliases(), set(R.names())
    chosen, everything, at = set(), False, {}
    for raw in names:
        name, at_sign, net = str(raw).strip().lower().partition("@")
        net = net.strip()
        if at_sign and not net:
            raise ImgdistError(f"metric {raw!r}: name the network after '@' (e.g. fid@dinov2-vit-l14)")
        if not name:
            continue
        target = at.setdefault(net, set()) if net else chosen
        if name == "all":
            if net:
                raise ImgdistError(f"{raw!r}: 'all' depends on the run's backbone; name the metrics for {net}")
            everything = True
        elif name in aliases:
            target.update(aliases[name])
        elif name in known:
            target.add(name)
        else:
            raise ImgdistError(f"unknown metric {raw!r}; choose from {', '.join(R.names())} "
                               f"(or {', '.join(aliases)}, all; name@backbone for another network)")
    if not chosen and not everything and not at:
        raise ImgdistError("no metric chosen")
    return Request(frozenset(chosen), everything, {net: frozenset(ms) for net, ms in at.items()})


def parse_metrics(metrics, facts: Facts | None = None, **fact_keywords) -> Selection:
    """``'fid,kid,prdc'`` or a list -> canonical names in table order.

    ``'all'`` means every metric the run's :class:`Facts` provide: without classifier logits no
    Inception Score, with a statistics file on a side only FID, C_T only with a held-out real set,
    CMMD only on CLIP features. Metrics named explicitly are kept; :func:`check_sets` explains why
    one cannot be computed. A :class:`Selection` is returned as it is.
    """
    if isinstance(metrics, Selection):
        return metrics
    return request(metrics).resolve(facts or Facts(**fact_keywords))


def metrics_help() -> str:
    """The ``--metrics`` help, from the registry."""
    return ("comma-separated: " + ", ".join(R.names()) + "; "
            + ", ".join(f"'{g}' = {', '.join(ms)}" for g, ms in R.groups().items())
            + "; 'all' = every metric that applies")


# ---------------------------------------------------------------- checks before extraction


def check_sets(chosen, options: MetricOptions, counts: dict[str, int], *, has_logits: bool = True,
               stats_sides: tuple[str, ...] = ()) -> None:
    """Refuse, before extraction, what the set sizes and the sides' kinds already rule out.

    ``counts``: images per side (``real``, ``fake`` and, where given, ``real_test``; a side left
    out is not known yet); ``stats_sides``: sides given as statistics files (mu and sigma only).
    """
    entries = [R.get(m) for m in chosen]
    need_test = [e.name for e in entries if REAL_TEST in e.needs]
    if need_test and "real_test" not in counts:
        raise ImgdistError(f"{', '.join(need_test)}: needs held-out real images the generator never saw "
                           "(the data-copying test C_T compares with them); pass them with --real-test SRC "
                           "(real_test=...)")
    for side in stats_sides:
        missing = [e.name for e in entries
                   if FEATURES in e.needs or e.outputs or (e.needs & {LOGITS, PROMPTS, IMAGES} and side == "fake")]
        if missing or options.bootstrap:
            what = ", ".join(missing) + (" and " if missing and options.bootstrap else "") + \
                ("bootstrap intervals" if options.bootstrap else "")
            raise ImgdistError(f"{what} need(s) images, but {side} is a statistics file (it holds only "
                               "mu and sigma); pass the images, or use --metrics fid")
    need_logits = [e.name for e in entries if LOGITS in e.needs]
    if need_logits and not has_logits:
        raise ImgdistError(f"{', '.join(need_logits)}: needs a classifier, and this backbone has no logits; "
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
            done.add(e.check_sizes)  # shared rules (precision and recall) say it once
            e.check_sizes(options, counts, set(chosen))


def fit_all(asked: Request, chosen: Selection, options: MetricOptions, counts: dict) -> tuple[Selection, list[str]]:
    """``all`` means every metric that applies, and a metric the set sizes rule out does not: those
    ``all`` brought in (not those named) are left out, and a note says which and why."""
    if not asked.everything:
        return chosen, []
    named, keep, notes = asked.names, [], []
    for m in chosen:
        if m not in named:
            try:
                check_sets([m], options, counts)
            except SetTooSmall as exc:
                notes.append(f"all: {m} left out, the sets are too small for it ({exc})")
                continue
        keep.append(m)
    return Selection(keep), notes


def check_outputs(chosen, spec) -> None:
    """Refuse, before extraction, metrics that read an output this backbone does not have (or its
    text tower)."""
    for m in chosen:
        entry = R.get(m)
        if PROMPTS in entry.needs and getattr(spec, "text", None) is None:
            from ..extraction.backbones import list_specs

            towers = ", ".join(s.name for s in list_specs() if s.text is not None)
            raise ImgdistError(f"{m}: needs a text tower for the prompts, which {spec.name} does not have; "
                               f"use a CLIP backbone ({towers}), e.g. {m}@{towers.split(', ')[0]}")
        missing = [o for o in entry.outputs if o not in spec.extra_outputs]
        if missing:
            from ..extraction.backbones import list_specs

            having = [s.name for s in list_specs() if set(missing) <= set(s.extra_outputs)]
            raise ImgdistError(f"{m}: needs the {', '.join(missing)} output, which {spec.name} does not have; "
                               f"{' or '.join(having) or 'no backbone'} has it (leave --backbone out, or name "
                               f"{m}@{having[0] if having else '...'})")


def per_class_metrics(chosen, options: MetricOptions, counts: dict[str, int]) -> list[str]:
    """The chosen metrics a class of these sizes gives from its own features (a small class cannot
    give k-NN metrics)."""
    keep = []
    for name in chosen:
        if not R.get(name).per_class:
            continue
        try:
            check_sets([name], options, counts)
        except ImgdistError:  # too small (SetTooSmall), or e.g. no held-out images of this class
            continue
        keep.append(name)
    return keep


def per_image_metrics(chosen, *, always: bool = True) -> list[R.Metric]:
    """The metrics whose columns a per-image table holds: every chosen one that has columns and,
    where ``always``, those always there (they read the real set, and belong to the run's own
    network's table, not to another network's)."""
    return [m for m in R.metrics() if m.per_image and (m.name in chosen or (always and m.per_image_always))]


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Keeps:
    """What one side's extraction must keep besides the Gaussian statistics."""

    features: bool
    logits: bool
    extra: tuple[str, ...]
    keep_extra: bool
    text: bool = False          # the side's prompts through the text tower


@dataclass(frozen=True)
class Plan:
    """One evaluation: the metrics, the settings, the backbone, and what each side keeps."""

    metrics: Selection
    options: MetricOptions
    spec: object = None                       # BackboneSpec; None: statistics files on both sides
    stats_sides: tuple[str, ...] = ()
    real_test: bool = False                   # a held-out set is read (a chosen metric needs it)
    per_image: bool = False
    per_class: bool = False
    return_features: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def entries(self) -> list[R.Metric]:
        return [R.get(m) for m in self.metrics]

    def reads(self, side: str) -> bool:
        """Whether any chosen metric reads ``side`` (a network that only gives the CLIP score never
        sees the real images)."""
        if side == "real":
            return any(m.needs_real for m in self.entries) or self.per_class or self.return_features
        return side == "fake" or (side == "real_test" and self.real_test)

    def needs(self, kind: str) -> bool:
        return any(kind in m.needs for m in self.entries)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o for m in self.entries for o in m.outputs))

    @property
    def keeps_outputs(self) -> bool:
        return any(m.keeps_outputs for m in self.entries)

    def keeps(self, side: str, n: int | None = None, feature_dim: int | None = None) -> Keeps:
        """What ``side``'s extraction keeps: per-image features where a metric, the bootstrap, a
        per-image or per-class table or the caller needs them, or where the set has no more images
        than dimensions (then the features take no more memory than the covariance, and FID from
        features is exact where the covariance route of singular matrices loses digits: 5.6e-5
        relative measured at N = 160, d = 2048). ``n`` None: the size is not known (streaming)."""
        small = n is not None and feature_dim is not None and n <= feature_dim
        text = self.needs(PROMPTS) and side == "fake"
        features = (self.needs(FEATURES) or self.options.bootstrap > 0 or small or side == "real_test" or text
                    or self.return_features or self.per_image or self.per_class)
        return Keeps(features=features, logits=self.needs(LOGITS) and side == "fake", extra=self.outputs,
                     keep_extra=self.keeps_outputs, text=text)


def make_plan(metrics, options: MetricOptions | None = None, *, spec=None, stats_sides: tuple[str, ...] = (),
              counts: dict[str, int] | None = None, real_test: bool = False, per_image: bool = False,
              per_class: bool = False, return_features: bool = False, needs_real: bool = True,
              prompts: bool = False) -> Plan:
    """Resolve ``metrics`` against what the run has and make every check possible before extraction.

    ``spec``: the backbone (None: statistics on both sides); ``counts``: the known image counts per
    side (a statistics file without a count is left out); ``real_test``: a held-out set is given;
    ``needs_real`` False: there is no real set (``imgdist score``), so ``all`` means the metrics that
    need none, and naming another is refused; ``prompts``: the fakes' prompts are given (``all``
    then includes the metrics that read them, on a backbone with a text tower).
    """
    options = options or MetricOptions()
    facts = Facts.of(spec, stats_sides=stats_sides, real_test=real_test, prompts=prompts)
    asked = None if isinstance(metrics, Selection) else request(metrics)  # a Selection is resolved already
    chosen = metrics if asked is None else asked.resolve(facts)
    if not needs_real:
        if asked is not None and asked.everything:
            chosen = Selection(m for m in chosen if not R.get(m).needs_real)
        needing = [m for m in chosen if R.get(m).needs_real]
        if needing:
            raise ImgdistError(f"{', '.join(needing)}: need(s) a real set to compare with; on one set only "
                               f"{', '.join(m.name for m in R.metrics() if not m.needs_real)} can be computed")
    for wanted, what in ((return_features, "a report"), (per_image, "the per-image table"),
                         (per_class, "per-class metrics")):
        if wanted and stats_sides:
            raise ImgdistError(f"{what} needs images, but {stats_sides[0]} is a statistics file (it holds only "
                               "mu and sigma); pass the images")
    counts = dict(counts or {})
    uses_test = real_test and any(REAL_TEST in R.get(m).needs for m in chosen)
    if not uses_test:
        counts.pop("real_test", None)
    notes = []
    if asked is not None:
        chosen, notes = fit_all(asked, chosen, options, counts)
    check_sets(chosen, options, counts, has_logits=facts.has_logits, stats_sides=stats_sides)
    if spec is not None:
        check_outputs(chosen, spec)
    plan = Plan(chosen, options, spec, tuple(stats_sides), uses_test, per_image, per_class, return_features,
                tuple(notes))
    if per_image:  # the table's columns have size rules of their own (realism's k-NN radius)
        extra = [m.name for m in per_image_metrics(chosen) if m.name not in chosen]
        check_sets(extra, options, counts)
    return plan
