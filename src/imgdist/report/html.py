"""One self-contained HTML file for people: metrics, provenance, a distance plot and thumbnails.

Everything is inline (CSS, PNG thumbnails and the plot as base64 data URIs); no JavaScript, no
external files. Three thumbnail sections come from the features (chunked distances, see
:mod:`imgdist.report.neighbours`):

(a) nearest real neighbour of each fake (the first ``per_section`` fakes, or a seeded sample):
    memorisation and near-copies show up as tiny distances;
(b) fakes farthest from the real manifold: the largest ``min_x d(fake, x) / r_k(x)``, the distance
    in units of the reals' k-NN radii; >= 1 means outside every real k-NN ball, i.e. not counted
    by precision (Kynkäänniemi et al. 2019) with this k;
(c) real images no fake covers: reals whose k-NN ball holds no fake, coverage's misses
    (Naeem et al. 2020), farthest (in radii) first.
"""

from __future__ import annotations

import base64
import datetime
import io
import os
from html import escape

import numpy as np
from PIL import Image

from dataclasses import dataclass

from .. import __version__
from .. import metrics as M
from ..evaluation.options import MetricOptions
from ..metrics import registry as R
from ..metrics.prdc import knn_radii
from ..errors import ImageError, ImgdistError, one_line
from ..files import atomic_write
from ..formatting import format_value
from ..extraction.sources import open_source
from .neighbours import cross_neighbours

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
p.note{color:#555;font-size:.9em;max-width:60em}
table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.25em .8em;border-bottom:1px solid #e4e4e4;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;font-size:.95em}
dl.meta dt{color:#666}dl.meta dd{margin:0;word-break:break-all}
ul.warn{color:#8a4b00}
div.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(%(card)dpx,1fr));gap:12px}
figure{margin:0;padding:6px;border:1px solid #ddd;border-radius:4px;background:#fafafa}
figure div.pair{display:flex;gap:4px;justify-content:center}
figure img{image-rendering:pixelated;max-width:100%%;height:auto}
figcaption{font-size:.78em;line-height:1.3;margin-top:4px;word-break:break-all}
figcaption .lbl{color:#777}
span.missing{display:inline-block;width:%(thumb)dpx;height:%(thumb)dpx;background:#eee;color:#a00;
font-size:.7em;overflow:hidden}
"""


@dataclass
class ReportContext:
    """What a metric's ``report`` hook receives: the result, both sides' features, the settings, and
    the neighbour passes the report made (the reals' ``pr_k``-NN neighbours, the cross passes)."""

    result: object
    real: object               # the Features (names, prompts, text where the run had them)
    fake: object
    xr: np.ndarray
    xf: np.ndarray
    options: MetricOptions
    own: object
    cross: object
    per_section: int


def write_report(path, result, real, fake, real_source, fake_source, *, per_section: int = 12,
                 thumb: int = 96, chunk_size: int | None = None, sample_seed: int | None = None,
                 options: MetricOptions | dict | None = None, **settings) -> str:
    """Write the HTML report of one evaluation to ``path``; returns the path.

    ``result``: the :class:`~imgdist.evaluation.run.Result`; ``real`` / ``fake``: the
    :class:`~imgdist.extraction.features.Features` it was computed from, with per-image ``features`` kept
    (``evaluate(..., return_features=True)``); ``real_source`` / ``fake_source``: the same sources
    (anything :func:`~imgdist.extraction.sources.open_source` takes), for the thumbnails. The metric
    settings as in the evaluation, by keyword or as ``options``: ``pr_k`` (the "farthest fakes"
    section), ``dc_k`` (the "uncovered reals" section) and those the metrics' report sections read
    (``copies_percentile``). ``sample_seed``: None shows the first ``per_section`` fakes in section
    (a), an int a seeded random sample. Every metric with a ``report`` hook adds its section.
    """
    if isinstance(options, dict):
        options = MetricOptions(**options, **settings)
    options = options or MetricOptions(**settings)
    pr_k, dc_k = options.pr_k, options.dc_k
    for side, feats in (("real", real), ("fake", fake)):
        if getattr(feats, "features", None) is None:
            raise ImgdistError(f"the report needs per-image features, but the {side} side has none "
                               "(extract with keep_features=True, or evaluate(..., return_features=True))")
    if per_section < 1 or thumb < 8:
        raise ImgdistError("the report needs per_section >= 1 and thumbnails of at least 8 pixels")
    xr, xf = real.features, fake.features
    try:
        own = M.real_neighbours(xr, pr_k, chunk_size)
        dc_radii = own.radii if dc_k == pr_k else knn_radii(xr, dc_k, chunk_size)
        cross = cross_neighbours(xr, xf, own.radii, chunk_size, coverage_radii=dc_radii)
    except ValueError as exc:  # too few images for k, feature sizes differ
        raise ImgdistError(f"report: {one_line(exc)}") from None

    thumbs = _Thumbnails(open_source(real_source), real, open_source(fake_source), fake, thumb)
    n_fake = len(xf)
    if sample_seed is None:
        shown = np.arange(min(per_section, n_fake))
    else:
        shown = np.sort(np.random.default_rng(sample_seed).choice(n_fake, min(per_section, n_fake),
                                                                  replace=False))
    far = np.argsort(-cross.fake_ratio, kind="stable")[:per_section]
    uncovered = np.flatnonzero(~cross.real_covered)
    real_ratio = cross.real_nn_dist[uncovered] / np.where(dc_radii[uncovered] > 0, dc_radii[uncovered], 1.0)
    uncovered = uncovered[np.argsort(-real_ratio, kind="stable")]

    # the metrics' own sections, from the passes made above (given them, they need no new pass)
    ctx = ReportContext(result, real, fake, xr, xf, options, own, cross, per_section)
    sections = [section for m in R.metrics() if m.report is not None for section in [m.report(ctx)] if section]
    parts = [_header(result, thumbs), _metric_table(result)]
    parts += [_metric_section(s, thumbs) for s in sections if s.placement == "top"]
    parts.append(_plot_section(cross.fake_nn_dist, own.nn_distance))

    cards = [thumbs.card(("fake", i), ("real", int(cross.fake_nn[i])),
                         numbers=[("distance", cross.fake_nn_dist[i])]) for i in shown]
    how = "a seeded random sample of" if sample_seed is not None else "the first"
    parts.append(_section("nearest", "(a) Nearest real neighbour of each fake",
                          f"Left: fake; right: its nearest real image in feature space. Showing {how} "
                          f"{len(shown)} of {n_fake} fakes. Very small distances can mean copies of "
                          "training images.", cards))

    cards = [thumbs.card(("fake", i), ("real", int(cross.fake_ratio_real[i])),
                         numbers=[("ratio", cross.fake_ratio[i]),
                                  ("distance", _dist(xf[i], xr[cross.fake_ratio_real[i]]))]) for i in far]
    outside = int((cross.fake_ratio >= 1).sum())
    parts.append(_section("farthest", "(b) Fakes farthest from the real manifold",
                          f"Fakes with the largest ratio min over reals x of d(fake, x) / r<sub>{pr_k}</sub>(x), "
                          f"the distance in units of the reals' {pr_k}-NN radii; right: the real attaining "
                          f"the minimum. A ratio &ge; 1 means outside every real {pr_k}-NN ball (not "
                          f"counted by precision with k = {pr_k}): {outside} of {n_fake} fakes.", cards))

    cards = [thumbs.card(("real", i), ("fake", int(cross.real_nn[i])),
                         numbers=[("distance to nearest fake", cross.real_nn_dist[i]),
                                  (f"{dc_k}-NN radius", dc_radii[i])]) for i in uncovered[:per_section]]
    parts.append(_section("uncovered", "(c) Real images no fake covers",
                          f"Reals whose {dc_k}-NN ball holds no fake (the misses of coverage, Naeem et al. "
                          f"2020): {len(uncovered)} of {len(xr)}; showing up to {per_section}, farthest "
                          "(in radii) first. Left: real; right: its nearest fake.", cards))

    parts += [_metric_section(s, thumbs) for s in sections if s.placement != "top"]
    parts.append(_spread_section(xr, xf, sample_seed))
    body = "\n".join(parts)
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           "<title>imgdist report</title>\n<style>" + _CSS % {"card": 2 * thumb + 30, "thumb": thumb}
           + "</style>\n</head>\n<body>\n" + body + "\n</body>\n</html>\n")
    _write_atomic(os.fspath(path), doc)
    return os.fspath(path)


# ------------------------------------------------------------------ pieces

def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))


def _header(result, thumbs) -> str:
    p = result.provenance
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    rows = [("imgdist", p.imgdist_version or __version__), ("date", now),
            ("real", thumbs.real_source.label), ("fake", thumbs.fake_source.label),
            ("backbone", f"{p.backbone} ({p.feature_layer})"),
            ("weights sha256", (p.weights_sha256 or "n/a")[:12]),
            ("resize mode", p.preprocessing or p.resize_mode or "n/a"),
            ("images", ", ".join(f"{key} {value}" for key, value in result.counts.items()))]
    meta = "".join(f"<dt>{escape(str(key))}</dt><dd>{escape(str(value))}</dd>" for key, value in rows)
    out = [f"<h1>imgdist report</h1>\n<dl class=\"meta\">{meta}</dl>"]
    if result.warnings:
        out.append("<ul class=\"warn\">" + "".join(f"<li>warning: {escape(w)}</li>" for w in result.warnings)
                   + "</ul>")
    return "\n".join(out)


def _metric_table(result) -> str:
    ci = result.details.get("ci_level")
    columns = ["metric", "value"] + (["std"] if result.stds else []) + \
        ([f"{ci:.0%} CI (bootstrap)" if ci else "CI"] if result.intervals else [])
    rows = []
    for key, value in result.values.items():
        cells = [escape(result.labels.get(key, key)), escape(format_value(value))]
        if result.stds:
            cells.append(f"&plusmn; {escape(format_value(result.stds[key]))}" if key in result.stds else "")
        if result.intervals:
            cells.append(f"[{escape(format_value(result.intervals[key][0]))}, "
                         f"{escape(format_value(result.intervals[key][1]))}]" if key in result.intervals else "")
        rows.append("<tr><td>" + cells[0] + "</td>" + "".join(f"<td class=\"num\">{c}</td>" for c in cells[1:])
                    + "</tr>")
    ks = [f"{name} k = {result.details[key]}" for name, key in
          (("precision/recall", "precision_recall_k"), ("density/coverage", "density_coverage_k"))
          if key in result.details]
    note = f"<p class=\"note\">{escape('; '.join(ks))}</p>" if ks else ""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    return (f"<h2>Metrics</h2>\n<table><thead><tr>{head}</tr></thead>\n<tbody>" + "\n".join(rows)
            + "</tbody></table>" + note)


def _metric_section(section: R.Section, thumbs) -> str:
    """A metric's section (:class:`imgdist.metrics.registry.Section`): its sentence, its small
    table, its thumbnail cards; every text escaped here."""
    body = ""
    if section.table:
        header, *rows = section.table
        head = "".join(f"<th>{escape(str(c))}</th>" for c in header)
        cells = "".join("<tr>" + "".join(f"<td class=\"num\">{escape(format_value(v))}</td>"
                                           if isinstance(v, (int, float, np.number)) else f"<td>{escape(str(v))}</td>"
                                           for v in row) + "</tr>" for row in rows)
        body = f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>\n"
    cards = [thumbs.card(*card.images, numbers=list(card.captions)) for card in section.cards]
    return _section(escape(section.key), section.title, escape(section.note), cards, body)


def _spread_section(xr: np.ndarray, xf: np.ndarray, seed: int | None) -> str:
    """Where the two sets lie on their first two principal axes."""
    try:
        plot = (f"<img src=\"data:image/png;base64,{_pca_png(xr, xf, seed)}\" width=\"520\" "
                "alt=\"real and fake features on their first two principal axes\">")
    except ImportError:
        plot = "<p class=\"note\">(install matplotlib for the plot: pip install matplotlib)</p>"
    return ("<h2 id=\"spread\">Where the sets lie</h2>\n<p class=\"note\">Real and fake features on the first two "
            "principal axes of both sets together (up to 5,000 points per set): fakes that fill only part of the "
            "real cloud miss modes.</p>\n" + plot)


def _pca_png(xr: np.ndarray, xf: np.ndarray, seed: int | None, limit: int = 5000) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0 if seed is None else seed)
    pick = [x if len(x) <= limit else x[np.sort(rng.choice(len(x), limit, replace=False))] for x in (xr, xf)]
    both = np.concatenate(pick).astype(np.float64)
    centred = both - both.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, ::-1][:, :2]  # the two largest
    r2, f2 = (centred[: len(pick[0])] @ axes), (centred[len(pick[0]):] @ axes)
    fig = Figure(figsize=(5.2, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(r2[:, 0], r2[:, 1], s=6, alpha=0.5, color="#1f77b4", label="real")
    ax.scatter(f2[:, 0], f2[:, 1], s=6, alpha=0.5, color="#d62728", label="fake")
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_section(fake_to_real: np.ndarray, real_to_real: np.ndarray) -> str:
    head = "<h2>Distances to the nearest real image</h2>\n"
    note = ("<p class=\"note\">Fake to nearest real against real to nearest other real (k = 1, self "
            "excluded). Fakes as close to the reals as the reals are to each other overlap the real curve; "
            "a fake histogram shifted right means samples off the real manifold, a spike near 0 "
            "means near-copies.</p>")
    try:
        png = _histogram_png(fake_to_real, real_to_real)
    except ImportError:
        return head + note + "<p class=\"note\">(install matplotlib for the plot: pip install matplotlib)</p>"
    return (head + note + f"<img src=\"data:image/png;base64,{png}\" width=\"560\" "
            "alt=\"histogram of nearest-real distances\">")


def _histogram_png(fake_to_real: np.ndarray, real_to_real: np.ndarray) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = np.concatenate([fake_to_real, real_to_real])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    ax.hist(real_to_real, bins=bins, alpha=0.55, density=True, label="real → nearest other real",
            color="#1f77b4")
    ax.hist(fake_to_real, bins=bins, alpha=0.55, density=True, label="fake → nearest real", color="#d62728")
    ax.set_xlabel("feature distance")
    ax.set_ylabel("share per unit of distance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _section(anchor: str, title: str, note: str, cards: list[str], body: str = "") -> str:
    """``note`` and ``body`` are HTML written here (numbers only, or escaped by the caller); names
    reach the page only through ``escape``. A section with a body and no cards needs no "(none)"."""
    grid = "<div class=\"grid\">\n" + "\n".join(cards) + "\n</div>" if cards else \
        ("" if body else "<p class=\"note\">(none)</p>")
    return f"<h2 id=\"{anchor}\">{escape(title)}</h2>\n<p class=\"note\">{note}</p>\n{body}{grid}"


class _Thumbnails:
    """PNG data URIs of source images, each encoded once."""

    def __init__(self, real_source, real, fake_source, fake, size: int):
        self.real_source, self.fake_source = real_source, fake_source
        self.sides = {"real": (real_source, real), "fake": (fake_source, fake)}
        self.size = size
        self._done: dict[tuple[str, int], str | None] = {}

    def name(self, side: str, i: int) -> str:
        return self.sides[side][1].names[i]

    def short(self, side: str, i: int) -> str:
        """The name inside its folder or archive (the full name stays in the image's title)."""
        name, label = self.name(side, i), self.sides[side][0].label
        base = label.rstrip("/" + os.sep)
        for sep in {os.sep, "/", ":"}:
            if base and name.startswith(base + sep) and len(name) > len(base) + 1:
                return name[len(base) + 1:]
        return name

    def uri(self, side: str, i: int) -> str | None:
        key = (side, i)
        if key not in self._done:
            source, feats = self.sides[side]
            position = feats.indices[i] if feats.indices else i
            try:
                image = Image.fromarray(source.load(position))
            except ImageError:  # changed or removed since extraction: show a placeholder
                self._done[key] = None
                return None
            scale = self.size / max(image.size)
            new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            # upscaling small images (e.g. 32x32) keeps their pixels visible
            image = image.resize(new, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            image.save(buf, format="PNG", optimize=True)
            self._done[key] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        return self._done[key]

    def img(self, side: str, i: int) -> str:
        uri = self.uri(side, i)
        name = escape(self.name(side, i))
        if uri is None:
            return f"<span class=\"missing\">{side} {name}: unreadable now</span>"
        return f"<img src=\"{uri}\" alt=\"{side} {name}\" title=\"{side} {name}\">"

    def card(self, *images: tuple[str, int], numbers: list[tuple[str, object]]) -> str:
        """One or two images side by side, their names, then the captions (numbers or text)."""
        shown = [(side, int(i)) for side, i in images]
        caption = "<br>".join(
            [f"<span class=\"lbl\">{side}:</span> {escape(self.short(side, i))}" for side, i in shown]
            + [f"<span class=\"lbl\">{escape(label)}:</span> {escape(format_value(value))}" for label, value in numbers])
        return (f"<figure><div class=\"pair\">{''.join(self.img(side, i) for side, i in shown)}</div>"
                f"<figcaption>{caption}</figcaption></figure>")


def _write_atomic(path: str, text: str) -> None:
    try:
        with atomic_write(path) as fh:
            fh.write(text)
    except OSError as exc:
        raise ImgdistError(f"cannot write the report {path}: {exc.strerror or exc}") from None