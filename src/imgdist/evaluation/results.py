"""What an evaluation returns: values, uncertainty, provenance, and the names they print under.

:class:`Result` holds one evaluation; :func:`metric_label` names a number by its backbone (``FID``
only for the Inception pool features with the published weights), so that a number never passes
for another kind.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..extraction.provenance import Provenance, weights_tag
from ..metrics import registry as R


@dataclass
class PerImage:
    """One row per fake (``--per-image out.csv``): the columns of the metrics that have per-image
    hooks (realism, nearest real and distance, inside the real manifold, authentic, copy, and those
    of the chosen metrics)."""

    fake: list[str]
    columns: dict[str, list]

    @property
    def COLUMNS(self) -> tuple[str, ...]:
        return ("fake", *self.columns)

    def __getitem__(self, column: str) -> list:
        return self.fake if column == "fake" else self.columns[column]

    def rows(self):
        for i, name in enumerate(self.fake):
            yield (name, *(_cell(values[i]) for values in self.columns.values()))

    def write_csv(self, path) -> None:
        import csv

        from ..files import atomic_write

        with atomic_write(path, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.COLUMNS)
            for row in self.rows():
                writer.writerow([repr(v) if isinstance(v, float) else v for v in row])


def _cell(value):
    if isinstance(value, (bool, np.bool_)):
        return _yes(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _yes(flag) -> str:
    return "yes" if bool(flag) else "no"




def weights_warning(provenance: Provenance) -> str | None:
    """The warning that numbers on other weights are labelled with their hash, or None."""
    from ..extraction.backbones import get_spec

    tag = weights_tag(provenance)
    if not tag:
        return None
    return (f"{provenance.backbone} weights {tag} are not the published ones "
            f"({get_spec(provenance.backbone).weights.sha256[:8]}): numbers print labelled "
            f"[{provenance.backbone}:{tag}] and are not comparable with published values")


def metric_label(metric: str, provenance: Provenance, options=None) -> str:
    """The name a number is printed under: the published name (``FID``, ``CMMD``) only on the
    metric's published features (``Metric.published_on``: the Inception pool features for most)
    computed with the published weights in fp32; otherwise the backbone, its weights (where not
    the published ones), its layer and a reduced precision are named, e.g.
    ``FD[inception:d37b7cb1]``, ``KD[efficientnet-lite0]``, ``FD[inception,bf16]``. A setting the
    metric marks ``in_label`` is named where ``options`` give it another value than its default
    (``CLIPScore[clip-vit-l14,scale=2.5]``)."""
    tag = weights_tag(provenance)
    low = provenance.reduced_precision
    owner = R.owner(metric)
    published, generic = owner.labels(metric) if owner else (metric, metric)
    on = owner.published_on if owner else ("inception", None)
    settings = [s for s in (owner.settings if owner else ()) if not isinstance(s, str) and s.in_label
                and options is not None and getattr(options, s.name) != s.default]
    # a metric on another output of the network (sFID's maps, ADM's unbiased logits) reads nothing of
    # the chosen feature layer: --dims changes none of its numbers, and its label names no layer
    layer = "pool" if owner is not None and owner.outputs else provenance.feature_layer
    if on is not None and on[0] == "*":  # a network of its own (LPIPS): only its settings are named
        return published + (f"[{','.join(_setting_tag(s, options) for s in settings)}]" if settings else "")
    standard = (on is not None and provenance.backbone == on[0] and on[1] in (None, provenance.resize_mode)
                and layer == "pool" and tag is None and not low and not settings)
    if standard:  # statistics without provenance are FD[unknown]: 3072-d pixel files are no FID either
        return published
    name = (provenance.backbone or "unknown") + (f":{tag}" if tag else "")
    if layer not in (None, "pool"):
        name += f"/{layer}"
    if low:
        name += f",{provenance.precision}"
    for s in settings:
        name += "," + _setting_tag(s, options)
    return f"{generic}[{name}]"


def _setting_tag(setting, options) -> str:
    """``scale=2.5``, ``net=vgg``, ``weights=1a2b3c4d`` (a file by the start of its SHA-256)."""
    value = getattr(options, setting.name)
    short = setting.name.rsplit("_", 1)[-1]
    if setting.kind == "path":
        from ..extraction.weights import sha256_file_cached

        return f"{short}={sha256_file_cached(value)[:8]}"
    return f"{short}={value:g}" if isinstance(value, float) else f"{short}={value}"


@dataclass
class Result:
    """Values, uncertainty and provenance of one evaluation."""

    values: dict[str, float]
    labels: dict[str, str]
    stds: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    details: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    per_image: "PerImage | None" = None                      # one row per fake (``per_image=True``)
    per_class: dict[str, "Result"] = field(default_factory=dict)  # class name -> its result
    #: result keys computed on another network than ``provenance``'s -> that network's provenance
    spaces: dict[str, Provenance] = field(default_factory=dict)

    def __getitem__(self, metric: str) -> float:
        return self.values[metric]

    def to_dict(self) -> dict:
        metrics = {}
        for key, value in self.values.items():
            item = {"metric": key, "value": _finite(value)}
            owner = owner_of(key)
            if owner is not None and owner.lower_is_better is not None:
                item["better"] = "lower" if owner.lower_is_better else "higher"
            if key in self.stds:
                item["std"] = _finite(self.stds[key])
            if key in self.intervals:
                item["ci"] = [_finite(v) for v in self.intervals[key]]
            metrics[self.labels[key]] = item
        out = {"metrics": metrics, "counts": self.counts, "provenance": self.provenance.to_dict(),
               "details": self.details, "warnings": self.warnings}
        if self.spaces:  # the other networks of the run, by the label of each number they gave
            out["feature_spaces"] = {self.labels[key]: p.to_dict() for key, p in self.spaces.items()}
        if self.per_class:
            out["per_class"] = {name: {r.labels[k]: _finite(v) for k, v in r.values.items()} | {"counts": r.counts}
                                for name, r in self.per_class.items()}
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=indent, allow_nan=False)

    def table(self, warnings: bool = True) -> str:
        """The values, counts and provenance as text; ``warnings``: end with a ``warning: ...`` line
        per warning (the CLI prints them on stderr instead)."""
        from ..formatting import format_table

        rows = []
        ci_label = self.details.get("ci_level")
        for key, value in self.values.items():
            spread = f"± {self.stds[key]:.4g}" if key in self.stds else ""
            interval = (f"[{self.intervals[key][0]:.5g}, {self.intervals[key][1]:.5g}]"
                        if key in self.intervals else "")
            rows.append([self.labels[key], value, spread, interval])
        headers = ["metric", "value", "std", f"{ci_label:.0%} CI (bootstrap)" if ci_label else "CI"]
        keep = [0, 1] + [j for j in (2, 3) if any(row[j] for row in rows)]
        headers, rows = [headers[j] for j in keep], [[row[j] for j in keep] for row in rows]
        counts = ", ".join(f"{k} {'not recorded' if v is None else v}" for k, v in self.counts.items())
        p = self.provenance
        lines = [format_table(headers, rows), f"images: {counts}",
                 f"backbone: {p.backbone} ({p.feature_layer}), weights sha256 {(p.weights_sha256 or 'n/a')[:12]}"
                 + (f", precision {p.precision}" if p.reduced_precision else "")
                 if p.backbone else "backbone: not recorded (statistics files without provenance)",
                 f"resize mode: {p.preprocessing or p.resize_mode or 'not recorded'}"]
        others = {}
        for key, p in self.spaces.items():
            others.setdefault(p, []).append(self.labels[key])
        lines += [f"also {p.backbone} ({p.preprocessing or p.resize_mode}), weights sha256 "
                  f"{(p.weights_sha256 or 'n/a')[:12]}: {', '.join(labels)}" for p, labels in others.items()]
        if "device" in self.details:
            lines.append(f"device: {self.details['device']}")
        lines += self._notes()
        if self.per_class:
            lines += ["", self.class_table()]
        return "\n".join(lines + ([f"warning: {w}" for w in self.warnings] if warnings else []))

    def _notes(self) -> list[str]:
        """The lines the metrics in the table have to say beyond their values (their ``note`` hooks)."""
        owners = dict.fromkeys(owner_of(key) for key in self.values)
        return [line for m in owners if m is not None and m.note is not None
                for line in (m.note(self) or "").splitlines()]

    def class_table(self) -> str:
        """Per-class values, worst class first (by the first metric), and their average."""
        from ..formatting import format_table

        # every metric some class has, in the order of the whole-set table (n/a where a class has none,
        # e.g. C_T for a class too small for its cells)
        present = {k for r in self.per_class.values() for k in r.values}
        keys = [k for k in self.values if k in present] + sorted(present - set(self.values))
        first = keys[0]
        owner = owner_of(first)
        direction = owner.lower_is_better if owner else None

        def worst_first(name):
            value = self.per_class[name].values.get(first)
            if value is None or math.isnan(value):
                return (True, 0.0)
            # a metric best near 0 (C_T: copying < 0, underfitting > 0): the farthest from 0 first
            return (False, -abs(value) if direction is None else (-value if direction else value))

        order = sorted(self.per_class, key=worst_first)
        labels = {k: next(r.labels[k] for r in self.per_class.values() if k in r.labels) for k in keys}
        rows = [[name] + [self.per_class[name].values.get(k) for k in keys]
                + [self.per_class[name].counts.get("real"), self.per_class[name].counts.get("fake")]
                for name in order]
        table = format_table(["class"] + [labels[k] for k in keys] + ["real", "fake"], rows)
        head = f"per class ({len(order)} classes), worst first by {labels[first]}"
        if direction is None:
            head += f" (largest |{labels[first]}|)"
        if "intra_fid" in self.details:
            head += f"; class-averaged FD (intra-FID): {self.details['intra_fid']:.6g}"
        return head + "\n" + table


def owner_of(key: str):
    """The metric that fills result key ``key`` (``fid@dinov2-vit-l14`` is FID's)."""
    return R.owner(key.split("@", 1)[0])


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _jsonable(obj):
    """``obj`` with numpy arrays and scalars as plain Python values, and every NaN or infinity (e.g.
    the Z of a C_T cell that holds no generated sample) as None: JSON has no such numbers."""
    if isinstance(obj, dict):
        return {key: _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return _finite(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__}")
