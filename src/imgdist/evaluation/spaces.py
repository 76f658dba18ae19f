"""Several feature spaces in one run: which network computes which metric, and one result from all.

A run may need several networks: Inception for FID, CLIP for the CLIP score, DINOv2 for
FD_DINOv2. A metric runs on

* the network named after it, ``fid@dinov2-vit-l14`` (its result key keeps the ``@``);
* else, where no ``--backbone`` is given, its own space when it has one (CMMD's CLIP ViT-L/14 at
  336 px, the CLIP score's ViT-L/14);
* else the run's backbone (``--backbone``, a statistics file's, or Inception).

Every image is decoded once and fed to every network (:func:`~imgdist.extraction.features.extract_together`);
each network keeps its own statistics and cache, and each number is labelled with its network.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ImgdistError
from ..metrics import registry as R
from .plan import Request
from .results import PerImage, Result


@dataclass
class Space:
    """One network of a run and the metrics it computes."""

    backbone: object                 # a name or a Backbone
    mode: str | None
    request: Request
    suffix: str = ""                 # appended to its result keys ('@dinov2-vit-l14'); '' for the run's own
    dims: int | None = None
    weights: object = None
    user_options: bool = False       # --resize-mode, --dims, --weights apply here


def split_request(asked: Request, backbone, mode, dims, weights, default_backbone) -> list[Space]:
    """The run's spaces, the run's own first. ``backbone``: the user's (None: not named);
    ``default_backbone``: the run's backbone when none is named (a statistics file's, Inception);
    ``weights``: a file for the run's backbone, or ``{backbone name: file}`` for any of the run's."""
    own: dict[tuple, set] = {}
    primary = set()
    for name in asked.names:
        space = R.get(name).space
        if backbone is None and space is not None:
            own.setdefault(space, set()).add(name)
        else:
            primary.add(name)
    spaces = []
    if primary or asked.everything:
        spaces.append(Space(backbone if backbone is not None else default_backbone, mode,
                            Request(frozenset(primary), asked.everything), dims=dims,
                            weights=None if isinstance(weights, dict) else weights, user_options=True))
    for (name, own_mode), names in sorted(own.items()):
        spaces.append(Space(name, own_mode, Request(frozenset(names), False)))
    for net, names in sorted(asked.at.items()):
        spaces.append(Space(net, None, Request(frozenset(names), False), suffix=f"@{net}"))
    by_name = weights if isinstance(weights, dict) else None
    if by_name is not None:
        for space in spaces:
            space.weights = by_name.get(_name(space.backbone))
        unused = sorted(set(by_name) - {_name(space.backbone) for space in spaces})
        if unused:
            raise ImgdistError(f"--weights {unused[0]}=...: this run uses no {unused[0]} network (it uses "
                               f"{', '.join(_name(space.backbone) for space in spaces)})")
        weights = None
    if not spaces[0].user_options and (mode is not None or dims is not None or weights is not None):
        if len(spaces) > 1:
            raise ImgdistError("--resize-mode, --dims and --weights apply to the run's backbone, and this run has "
                               f"{len(spaces)} networks, none of them named with --backbone: name it (or give "
                               "--weights NAME=PATH per network)")
        spaces[0].mode, spaces[0].dims, spaces[0].user_options = mode or spaces[0].mode, dims, True
        spaces[0].weights = weights if weights is not None else spaces[0].weights
    return spaces


def _name(backbone) -> str:
    return backbone if isinstance(backbone, str) else backbone.spec.name


def merge(results: list[Result], spaces: list[Space]) -> Result:
    """One result from each space's: values under their keys (``@`` suffixes kept), the first
    space's provenance as the result's, the others' in ``spaces``; per-image columns and per-class
    values side by side."""
    if len(results) == 1 and not spaces[0].suffix:
        return results[0]
    out = Result(values={}, labels={}, provenance=results[0].provenance, counts=dict(results[0].counts))
    for result, space in zip(results, spaces):
        rename = {key: key + space.suffix for key in result.values}
        for key, new in rename.items():
            out.values[new] = result.values[key]
            out.labels[new] = result.labels[key]
            if key in result.stds:
                out.stds[new] = result.stds[key]
            if key in result.intervals:
                out.intervals[new] = result.intervals[key]
            if result.provenance != out.provenance:
                out.spaces[new] = result.provenance
        for key, value in result.details.items():
            out.details.setdefault(key if not space.suffix or key in ("ci_level", "bootstrap_samples", "device")
                                   else f"{key}{space.suffix}", value)
        out.warnings += [w for w in result.warnings if w not in out.warnings]
        if result.per_image is not None:
            out.per_image = _merge_rows(out.per_image, result.per_image, space.suffix)
        for name, class_result in result.per_class.items():
            mine = out.per_class.setdefault(name, Result(values={}, labels={}, provenance=class_result.provenance,
                                                         counts=dict(class_result.counts)))
            for key, value in class_result.values.items():
                mine.values[key + space.suffix] = value
                mine.labels[key + space.suffix] = class_result.labels[key]
    return out


def _merge_rows(table: PerImage | None, more: PerImage, suffix: str) -> PerImage:
    if table is None:
        return more
    columns = dict(table.columns)
    for column, cells in more.columns.items():
        columns[column if column not in columns else f"{column}{suffix or '@2'}"] = cells
    return PerImage(fake=table.fake, columns=columns)

