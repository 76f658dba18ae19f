"""Metrics per class, for folders laid out one subfolder per class (the ImageFolder convention).

Each class's real and fake images are compared on their own, with the same extraction (no second
pass over the images), and the class-averaged Fréchet distance is reported: intra-FID (Miyato &
Koyama, "cGANs with Projection Discriminator", ICLR 2018; Brock et al., BigGAN, ICLR 2019), the
mean over classes of each class's FD.

C_T per class needs held-out real images per class: when the held-out set (``--real-test``) is a
folder with the same class subfolders, each class's C_T uses that class's held-out images and its
own k-means cells (``ct_cells`` of them, fitted on the class's real images); otherwise C_T is given
for the whole sets only. A class none of whose cells holds ``min_fake_per_cell`` fakes and a held-out
image gets no C_T (named in a note).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .. import defaults as D
from .. import metrics as M
from .catalogue import METRIC, MetricOptions, per_class_metrics
from .compute import evaluate_features
from ..errors import ImgdistError
from ..extraction.features import Features
from ..metrics.memorization import NoUsableCell
from .results import Result, metric_label
from ..extraction.sources import FileSource, ImageSource
from ..extraction.stats import GaussianStats


def class_names(features: Features, source: ImageSource, side: str) -> list[str]:
    """The first-level subfolder of each image, in ``features`` order."""
    if not isinstance(source, FileSource) or not os.path.isdir(source.label):
        raise ImgdistError(f"per-class metrics need folders with one subfolder per class; the {side} set "
                           f"{source.label} is not a folder")
    root = os.path.abspath(source.label)
    out = []
    for name in features.names:
        parts = os.path.relpath(os.path.abspath(name), root).split(os.sep)
        if len(parts) < 2:
            raise ImgdistError(f"per-class metrics need one subfolder per class, but {name} lies directly in "
                               f"the {side} folder {source.label}")
        out.append(parts[0])
    return out


#: metrics that read a set's Gaussian statistics (the others work on the per-image features)
NEEDS_GAUSSIAN = frozenset({"fid"})


def subset(features: Features, rows: np.ndarray, gaussian: bool = True) -> Features:
    """The images at ``rows`` as their own set, with their own statistics (``gaussian`` False: count
    and mean only, for metrics that never read a covariance)."""
    x = features.features[rows]
    stats = (GaussianStats(provenance=features.provenance).update(x) if gaussian
             else GaussianStats.without_covariance(x, features.provenance))
    return dataclasses.replace(
        features, names=[features.names[i] for i in rows], stats=stats,
        features=x, logits=None if features.logits is None else features.logits[rows],
        indices=[features.indices[i] for i in rows] if features.indices else [])


def evaluate_per_class(real: Features, fake: Features, real_source: ImageSource, fake_source: ImageSource,
                       chosen, options: MetricOptions, force: bool = False, *, real_test: Features | None = None,
                       real_test_source: ImageSource | None = None):
    """``({class: Result}, intra-FID or None, warnings)`` for the classes present on both sides.

    ``real_test`` / ``real_test_source``: the held-out real images (C_T), per class when they too
    lie in class subfolders.
    """
    real_classes = np.array(class_names(real, real_source, "real"))
    fake_classes = np.array(class_names(fake, fake_source, "fake"))
    names = sorted(set(real_classes) & set(fake_classes))
    notes = []
    only = sorted(set(real_classes) ^ set(fake_classes))
    if only:
        notes.append(f"per class: {len(only)} class(es) only on one side, left out: {_some(only)}")
    if not names:
        raise ImgdistError("per-class metrics: no class subfolder name is shared by the real and fake folders")
    test_classes = None
    if "ct" in chosen:
        try:
            if real_test is None or real_test.features is None or real_test_source is None:
                raise ImgdistError("no held-out images")
            test_classes = np.array(class_names(real_test, real_test_source, "held-out real"))
        except ImgdistError:
            notes.append("per class: C_T is computed for the whole sets only (per class it needs the held-out "
                         "images, --real-test, in the same class subfolders)")
    class_options = dataclasses.replace(options, bootstrap=0)
    results, partial, no_ct = {}, [], []
    applicable = [m for m in chosen if METRIC[m].per_class]
    for name in names:
        r_rows, f_rows = np.flatnonzero(real_classes == name), np.flatnonzero(fake_classes == name)
        metrics = per_class_metrics(chosen, class_options, len(r_rows), len(f_rows))
        if len(metrics) < len(applicable):
            partial.append(name)
        if metrics:
            gaussian = bool(NEEDS_GAUSSIAN & set(metrics))
            results[name] = evaluate_features(subset(real, r_rows, gaussian), subset(fake, f_rows, gaussian),
                                              metrics=metrics, options=class_options, force=force)
        if test_classes is not None:
            ct = _class_ct(real, fake, real_test, r_rows, f_rows, np.flatnonzero(test_classes == name),
                           class_options)
            if ct is None:
                no_ct.append(name)
                continue
            if name not in results:  # C_T is the only metric this class gives
                results[name] = Result(values={}, labels={}, provenance=real.provenance,
                                       counts={"real": len(r_rows), "fake": len(f_rows)})
            results[name].values["ct"] = ct
            results[name].labels["ct"] = metric_label("ct", real.provenance)
            results[name].counts["real_test"] = int(np.sum(test_classes == name))
    if partial:
        notes.append(f"per class: {len(partial)} class(es) too small for some metrics (k, splits or 2 images "
                     f"needed): {_some(partial)}")
    if no_ct:
        notes.append(f"per class: no C_T for {len(no_ct)} class(es): no held-out image of the class, or no "
                     f"k-means cell with {D.CT_MIN_FAKE_PER_CELL} fakes and a held-out image (fewer --ct-cells "
                     f"may help): {_some(no_ct)}")
    fds = [r.values["fid"] for r in results.values() if "fid" in r.values]
    intra = float(np.mean(fds)) if fds else None
    return results, intra, notes


def _class_ct(real: Features, fake: Features, test: Features, r_rows, f_rows, t_rows,
              options: MetricOptions) -> float | None:
    """C_T of one class on its own cells, or None where the class cannot give one."""
    if len(t_rows) == 0 or len(r_rows) < options.ct_cells or len(f_rows) < D.CT_MIN_FAKE_PER_CELL:
        return None
    try:
        return M.ct_score(real.features[r_rows], test.features[t_rows], fake.features[f_rows],
                          n_cells=options.ct_cells, min_fake_per_cell=D.CT_MIN_FAKE_PER_CELL, seed=options.seed).value
    except NoUsableCell:
        return None


def _some(names, limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
