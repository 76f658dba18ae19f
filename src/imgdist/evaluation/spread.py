"""Feature sets that collapsed to one point, refused before any metric is printed.

A broken network (zeroed or saturated weights, a stem whose output is clamped to a constant) maps
every image to the same feature vector without failing. Every metric then reads "identical sets"
(FD 0, precision 1, Vendi 1), a perfect-looking score. The rule:

* a set whose images differ but whose feature rows are all one vector: the network is broken;
* both sets collapsed, whatever the images: nothing is left to compare but two points.

A set of identical images (a constant test pattern through ``pixels``) legitimately gives one
vector; that alone is accepted, which is why the images themselves are looked at before refusing.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImgdistError
from ..extraction.stats import SPREAD_RTOL, GaussianStats
from .side_checks import content_digest



def collapsed(stats: GaussianStats) -> tuple[float, float] | None:
    """``(spread, |mu|)`` where a set of >= 2 images has (next to) no spread, else None."""
    if stats is None or stats.n < 2 or stats.dim is None or stats._scatter is None:
        return None
    n, mean, scatter = stats.state
    spread = float(np.sqrt(max(np.trace(scatter), 0.0) / (n - 1)))
    norm = float(np.linalg.norm(mean))
    return (spread, norm) if spread <= SPREAD_RTOL * norm or spread == 0.0 else None


def images_identical(source, rows) -> bool:
    """Whether the images at ``rows`` of ``source`` are all one image (same bytes, or same pixels)."""
    digests = (content_digest(source, i) for i in rows)
    first = next(digests, None)
    return all(d == first for d in digests)


def check_spread(sides: dict, sources: dict, backbone: str) -> None:
    """Refuse collapsed feature sets (see the module's rule); ``sides``: name -> Features or
    GaussianStats (statistics files are left alone), ``sources``: name -> ImageSource."""
    flat = {}
    for side in ("real", "fake"):
        obj = sides.get(side)
        if obj is None or isinstance(obj, GaussianStats):
            continue
        found = check_set(obj, sources[side], backbone, f"the {side} set")
        if found is not None:
            flat[side] = found
    if len(flat) == 2:
        raise ImgdistError(f"the real and the fake set each collapse to a single {backbone} feature vector (each "
                           "set is one image repeated): there is no spread to compare, only two points")


def check_set(features, source, backbone: str, subject: str) -> tuple[float, float] | None:
    """One set's half of the rule (``eval``'s sides, ``stats``' source): refuse differing images
    that collapsed to one vector; returns ``(spread, |mu|)`` where identical images did, else None."""
    found = collapsed(features.stats)
    if found is None:
        return None
    rows = features.indices or range(len(features))
    if not images_identical(source, rows):
        raise ImgdistError(f"{subject}'s {features.stats.n} images differ, yet {backbone} gives every one the "
                           f"same feature vector (spread {found[0]:.3g} around a mean of norm {found[1]:.3g}): "
                           "its weights are broken (zeroed or saturated?); no metric would mean anything")
    return found
