"""The metric registry: what a metric is, and how imgdist finds every one.

A metric is one module of this package (or of another package, through the entry-point group
``imgdist.metrics``). The module holds its pure functions and, at its end, a :func:`register`
call with a :class:`Metric`: its name, what it needs, its direction and labels, the settings it
owns (each default lives there and nowhere else), its size rules and its hooks (a note under the
table, per-image columns, a bootstrap statistic, its per-class rule, a report section). The
evaluation reads everything from here: parsing ``--metrics``, the checks made before extraction,
the dispatch, the labels, the CLI flags and their help, the JSON, the report.

Modules are discovered, not listed: :func:`load` imports every public module of this package,
then every entry point of the group ``imgdist.metrics`` (a module, whose import registers its
metrics, or a :class:`Metric`, or a sequence of them). Dropping a file into ``metrics/`` is the
whole of adding a metric.

This module imports nothing heavy: the CLI builds ``--help`` from it. Since :func:`load` imports
every metric module for that too, a metric module imports its heavy dependencies (scipy, torch,
tqdm) inside the functions that use them, and its module level holds only numpy and the
registration (``tests/test_registry.py`` checks that building the CLI's parser imports neither
torch nor scipy).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable

from ..checks import check_fraction, check_int, check_number, option
from ..errors import ImgdistError, ImgdistWarning, SetTooSmall, one_line

# ---------------------------------------------------------------- what a metric needs

#: per-image features of both sets (not only their Gaussian statistics)
FEATURES = "features"
#: the fakes' classifier logits
LOGITS = "logits"
#: a held-out real set (``real_test`` / ``--real-test``)
REAL_TEST = "real_test"
#: CLIP image embeddings (a ``clip-*`` backbone): only then part of ``all``
CLIP = "clip"
#: each fake's prompt, embedded by the backbone's text tower (``run.fake.text``, ``run.fake.prompts``)
PROMPTS = "prompts"
#: the fakes' images themselves (``run.fake_source``): metrics that run a network of their own on them
IMAGES = "images"
NEEDS = (FEATURES, LOGITS, REAL_TEST, CLIP, PROMPTS, IMAGES)

#: the entry-point group through which other packages add metrics
ENTRY_POINT_GROUP = "imgdist.metrics"


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """A metric setting: the Python keyword ``name`` and the CLI flag ``--name-with-dashes``.

    ``kind``: ``int`` (at least ``minimum``), ``number`` (in ``[minimum, maximum]``), ``fraction``
    (strictly between 0 and 1), ``flag`` (True/False), ``choice`` (one of ``choices``),
    ``optional-number`` / ``optional-int`` (None: the metric's own choice, else a number as
    ``number`` / an integer as ``int``), ``sizes``
    (a Python-only list of at least two set sizes)."""

    name: str
    default: object
    help: str
    kind: str = "int"   # int, number, fraction, flag, choice, optional-number, optional-int, path, sizes
    minimum: float = 0
    maximum: float | None = None
    choices: tuple = ()
    cli: bool = True
    #: printed in the metric's label where it is not the default (``CLIPScore[clip-vit-l14,scale=2.5]``)
    in_label: bool = False

    def __post_init__(self):
        if self.kind not in ("int", "number", "fraction", "flag", "choice", "optional-number", "optional-int", "path",
                             "sizes"):
            raise ValueError(f"setting {self.name}: unknown kind {self.kind!r}")
        if not self.name.isidentifier():
            raise ValueError(f"setting {self.name!r}: the name must be a Python identifier (it is a keyword)")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """The value normalised, or a one-line error naming the keyword and the flag."""
        kind = self.kind
        if kind == "int":
            return check_int(self.name, value, int(self.minimum))
        if kind == "fraction":
            return check_fraction(self.name, value)
        if kind == "number" or (kind == "optional-number" and value is not None):
            return check_number(self.name, value, self.minimum,
                                float("inf") if self.maximum is None else self.maximum)
        if kind == "optional-number":
            return None
        if kind == "optional-int":
            return None if value is None else check_int(self.name, value, int(self.minimum))
        if kind == "path":  # None, or an existing file
            import os

            if value is not None and not os.path.isfile(value):
                raise ImgdistError(f"{option(self.name)} {value}: no such file")
            return None if value is None else os.fspath(value)
        if kind == "flag":
            if type(value).__name__ not in ("bool", "bool_"):
                raise ImgdistError(f"{option(self.name)} must be True or False, got {value!r}")
            return bool(value)
        if kind == "choice":
            if value not in self.choices:
                raise ImgdistError(f"{option(self.name)} must be one of {', '.join(map(str, self.choices))}, "
                                   f"got {value!r}")
            return value
        if value is None:  # sizes: None means the metric's own choice
            return None
        sizes = tuple(sorted({check_int(self.name, s, int(self.minimum)) for s in value}))
        if len(sizes) < 2:
            raise ImgdistError(f"{option(self.name)} needs at least two different sizes, got {tuple(value)}")
        return sizes

    def help_text(self) -> str:
        if self.kind == "flag":
            return self.help
        if self.default is None:
            return self.help
        shown = f"{self.default:g}" if isinstance(self.default, float) else self.default
        return f"{self.help} (default: {shown})"


#: settings of the evaluation itself, not of one metric
CORE_SETTINGS = (
    Setting("bootstrap", 0, "bootstrap resamples for confidence intervals of the metrics that have a bootstrap "
            "statistic (e.g. 200)"),
    Setting("ci", 0.95, "confidence level of the intervals", kind="fraction"),
    Setting("seed", 0, "seed of every random choice a metric makes (KID subsets, the bootstrap, C_T's cells, "
            "random directions)"),
)


# ---------------------------------------------------------------- report sections


@dataclass(frozen=True)
class Card:
    """One thumbnail card of a report section: images by ``(side, index)`` and captions."""

    images: tuple
    captions: tuple = ()     # ((label, value), ...)


@dataclass(frozen=True)
class Section:
    """What a metric adds to the HTML report: a heading, a sentence, thumbnail cards, a small table.
    The report renders it; metrics never write HTML."""

    key: str
    title: str
    note: str
    cards: tuple = ()
    table: tuple = ()        # ((header, ...), (row), ...)
    placement: str = "bottom"   # "top": right after the metric table (what a user most needs to see)


# ---------------------------------------------------------------- a metric


@dataclass(frozen=True, eq=False)
class Metric:
    """Everything imgdist knows about one metric, in its own module.

    ``compute(run)`` returns the value (a number, stored under ``name``), a dict of values by
    result key (several metrics from one pass), or None when it filled ``run.result`` itself.
    """

    name: str
    help: str                               # one line: what it is and where it comes from
    compute: Callable
    label: str                              # printed name on the published protocol, e.g. FID
    #: printed name on other features (FD -> FD[backbone]); None: ``label[backbone]``
    generic: str | None = None
    lower_is_better: bool | None = None     # None: neither (C_T is best near 0)
    needs: frozenset = frozenset()
    #: settings it owns (the one home of their defaults) or reads (by name, owned elsewhere)
    settings: tuple = ()
    aliases: tuple[str, ...] = ()
    covariance: bool = False                # needs >= 2 images per set
    gaussian: bool = False                  # reads the sets' Gaussian statistics (mean, covariance)
    check_sizes: Callable | None = None     # (options, counts, chosen) -> None, or raises SetTooSmall
    per_class: bool = True                  # computed per class from the class's own features
    #: further backbone outputs it reads (``BackboneSpec.extra_outputs``), computed in the same pass;
    #: their statistics stream, and ``keeps_outputs`` keeps them per image too
    outputs: tuple[str, ...] = ()
    keeps_outputs: bool = False
    in_all: bool = True                     # part of ``all`` (False: a published tool's variant)
    default: bool = False                   # part of the default selection (``--metrics`` unset)
    extra_values: dict = field(default_factory=dict)   # further result keys it fills -> their labels
    note: Callable | None = None            # (result) -> one line under the table, or None
    per_image: dict = field(default_factory=dict)      # column -> (run) -> one value per fake
    per_image_always: bool = False          # its columns belong to every per-image table
    bootstrap: Callable | None = None       # (xr, xf, options) -> the statistic on a resample
    report: Callable | None = None          # (context) -> Section or None
    needs_real: bool = True                 # False: needs the fakes only (imgdist score)
    #: the pure function on plain arrays, ``(sets, options) -> value or {key: value}``, with ``sets``
    #: holding ``real``, ``fake`` (N x d), ``fake_logits``, ``real_test`` and ``extra`` ({output:
    #: (real rows, fake rows)}): the metric tester (tests/test_metric_routes.py) checks every route
    #: against it
    function: Callable | None = None
    #: ``(backbone, resize mode or None)`` on which ``label`` is the published name; elsewhere the
    #: number prints as ``generic[backbone]``. None: always ``generic[backbone]``.
    published_on: tuple | None = ("inception", None)
    #: ``(backbone, resize mode)`` the metric runs on when the user names none (CMMD: its CLIP)
    space: tuple | None = None
    paper: str = ""
    order: float = 1000.0                   # position in tables; ties by name
    module: str = ""                        # filled by register()

    def __post_init__(self):
        object.__setattr__(self, "needs", frozenset(self.needs))
        unknown = self.needs - set(NEEDS)
        if unknown:
            raise ValueError(f"metric {self.name}: unknown need(s) {', '.join(sorted(unknown))}; "
                             f"the needs are {', '.join(NEEDS)}")
        if self.name != self.name.strip().lower() or "," in self.name or "@" in self.name or not self.name:
            raise ValueError(f"metric name {self.name!r}: lower case, without commas, '@' or spaces")

    @property
    def setting_names(self) -> tuple[str, ...]:
        return tuple(s if isinstance(s, str) else s.name for s in self.settings)

    @property
    def keys(self) -> tuple[str, ...]:
        """The result keys it fills."""
        return (self.name, *self.extra_values)

    def labels(self, key: str) -> tuple[str, str]:
        """``(name on the published protocol, name on other features)`` of a result key it fills."""
        if key != self.name:
            return self.extra_values[key], self.extra_values[key]
        return self.label, self.generic or self.label


def needs_more_than_k(what: str, setting: str | tuple[str, ...], sides: tuple[str, ...] = ("real",),
                      per_set: bool = False) -> Callable:
    """A ``check_sizes`` for a k-NN radius: k (the option ``setting``, or the product of several)
    needs more than k images in each of ``sides``, since a sample's k-th neighbour is another one.
    ``per_set``: the error speaks of "images per set" (the option sizes both sets elsewhere)."""
    names = (setting,) if isinstance(setting, str) else setting

    def check(options, counts, chosen) -> None:
        k = 1
        for name in names:
            k *= getattr(options, name)
        shown = f"{option(names[0])} {k}" if len(names) == 1 else f"{' x '.join(map(option, names))} = {k}"
        for side in sides:
            n = counts.get(side)
            if n is not None and k >= n:
                images = "images per set" if per_set else f"{side} images"
                raise SetTooSmall(f"{what}: {shown} needs more than {k} {images}, and the {side} set has {n}")
    return check


@dataclass(frozen=True)
class Suite:
    """A published table: its metrics in its order under its own names, on a fixed network."""

    name: str
    metrics: tuple[str, ...]
    names: dict
    backbone: str
    mode: str
    help: str = ""


# ---------------------------------------------------------------- the registry

_METRICS: dict[str, Metric] = {}
_SETTINGS: dict[str, tuple[Setting, str]] = {}     # name -> (setting, owner)
_GROUPS: dict[str, tuple[str, ...]] = {}
_GROUP_MODULES: dict[str, str] = {}
_SUITES: dict[str, Suite] = {}
_loaded = False


def _caller_module(depth: int = 2) -> str:
    return sys._getframe(depth).f_globals.get("__name__", "?")


def _own_setting(setting: Setting, owner: str) -> None:
    held = _SETTINGS.get(setting.name)
    if held is not None and held[1] != owner and held[0] != setting:
        raise ImgdistError(f"setting {setting.name} is defined twice: by {held[1]} and by {owner}")
    _SETTINGS[setting.name] = (setting, owner)


def register(metric: Metric) -> Metric:
    """Add ``metric`` (normally at the end of its module). Registering the same name again from
    the same module replaces it (a reload); from another module it is an error."""
    module = metric.module or _caller_module()
    held = _METRICS.get(metric.name)
    if held is not None and held.module != module:
        raise ImgdistError(f"metric {metric.name} is registered twice: by {held.module} and by {module}")
    for key in metric.keys + metric.aliases:
        other = next((m for m in _METRICS.values() if m.name != metric.name and key in m.keys + m.aliases), None)
        if other is not None:
            raise ImgdistError(f"metric {metric.name} ({module}): the name {key} is taken by {other.name} "
                               f"({other.module})")
    for setting in metric.settings:
        if isinstance(setting, Setting):
            _own_setting(setting, metric.name)
    metric = Metric(**{**metric.__dict__, "module": module})
    _METRICS[metric.name] = metric
    return metric


def register_group(name: str, members: tuple[str, ...]) -> None:
    """A name that stands for several metrics (``prdc``)."""
    _GROUPS[name] = tuple(members)
    _GROUP_MODULES[name] = _caller_module()


def register_suite(suite: Suite) -> Suite:
    """A published table (``--suite NAME``)."""
    _SUITES[suite.name] = suite
    return suite


for _setting in CORE_SETTINGS:
    _own_setting(_setting, "evaluation")


def load() -> None:
    """Import every metric module once: this package's public modules, then the entry points of
    :data:`ENTRY_POINT_GROUP`. A plugin that fails to load is one warning, not a crash; a
    built-in one that fails is a bug and raises."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module(__package__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_") and info.name != "registry":
            importlib.import_module(f"{__package__}.{info.name}")
    _load_entry_points()
    _check_references()


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            found = obj if isinstance(obj, (list, tuple)) else [obj]
            for item in found:
                if isinstance(item, Metric):
                    register(Metric(**{**item.__dict__, "module": item.module or ep.value}))
        except Exception as exc:  # noqa: BLE001 -- someone else's package: say which, and go on
            warnings.warn(f"metric plugin {ep.name} ({ep.value}) could not be loaded and is left out: "
                          f"{type(exc).__name__}: {one_line(exc)}", ImgdistWarning, stacklevel=3)


def _check_references() -> None:
    for m in _METRICS.values():
        for name in m.setting_names:
            if name not in _SETTINGS:
                raise ImgdistError(f"metric {m.name} ({m.module}) reads setting {name}, which no metric defines")
    for group, members in _GROUPS.items():
        missing = [m for m in members if m not in _METRICS]
        if missing:
            raise ImgdistError(f"metric group {group} names unknown metric(s) {', '.join(missing)}")


def metrics() -> tuple[Metric, ...]:
    """Every registered metric, in table order."""
    load()
    return tuple(sorted(_METRICS.values(), key=lambda m: (m.order, m.name)))


def names() -> tuple[str, ...]:
    return tuple(m.name for m in metrics())


def get(name: str) -> Metric:
    load()
    return _METRICS[name]


def owner(key: str) -> Metric | None:
    """The metric that fills result key ``key`` (``vendi-real`` -> Vendi's)."""
    load()
    return next((m for m in _METRICS.values() if key in m.keys), None)


def settings() -> tuple[Setting, ...]:
    """Every setting: the evaluation's own, then each metric's, in table order."""
    load()
    order = {m.name: m.order for m in _METRICS.values()}
    ranked = sorted(_SETTINGS.values(), key=lambda held: -1.0 if held[1] == "evaluation" else order[held[1]])
    return tuple(s for s, _ in ranked)


def setting(name: str) -> Setting:
    load()
    return _SETTINGS[name][0]


def groups() -> dict[str, tuple[str, ...]]:
    load()
    return dict(_GROUPS)


def group_module(name: str) -> str:
    """The module that registered group ``name``."""
    load()
    return _GROUP_MODULES[name]


def aliases() -> dict[str, tuple[str, ...]]:
    """Group names and each metric's aliases -> the metrics they stand for."""
    load()
    return {**_GROUPS, **{alias: (m.name,) for m in _METRICS.values() for alias in m.aliases}}


def suites() -> dict[str, Suite]:
    load()
    return dict(_SUITES)


def default_metrics() -> tuple[str, ...]:
    """What ``--metrics`` means when it is not given."""
    return tuple(m.name for m in metrics() if m.default)
