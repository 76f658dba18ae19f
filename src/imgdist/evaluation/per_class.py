"""Metrics per class, for folders laid out one subfolder per class (the ImageFolder convention).

Each class's real and fake images are compared on their own, with the same extraction (no second
pass over the images), and the class-averaged Fréchet distance is reported: intra-FID (Miyato &
Koyama, "cGANs with Projection Discriminator", ICLR 2018; Brock et al., BigGAN, ICLR 2019), the
mean over classes of each class's FD.

Which metrics a class gives is read from their registrations: ``per_class`` and the size rules,
applied to the class's own counts. A metric that needs the held-out set (C_T) gets each class's
held-out images when the held-out set (``--real-test``) is a folder with the same class subfolders;
otherwise it is given for the whole sets only. A metric a class cannot give is named in a note.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..errors import ImgdistError
from ..extraction.features import Features
from ..extraction.sources import FileSource, ImageSource
from ..extraction.stats import GaussianStats
from ..metrics import registry as R
from ..metrics.registry import REAL_TEST
from .compute import evaluate_features
from .options import MetricOptions
from .plan import Selection, per_class_metrics
from .results import metric_label


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


def subset(features: Features, rows: np.ndarray, gaussian: bool = True) -> Features:
    """The images at ``rows`` as their own set, with their own statistics (``gaussian`` False: count
    and mean only, for metrics that never read a covariance)."""
    x = features.features[rows]
    stats = (GaussianStats(provenance=features.provenance).update(x) if gaussian
             else GaussianStats.without_covariance(x, features.provenance))
    return dataclasses.replace(
        features, names=[features.names[i] for i in rows], stats=stats,
        features=x, logits=None if features.logits is None else features.logits[rows],
        indices=[features.indices[i] for i in rows] if features.indices else [],
        prompts=None if features.prompts is None else [features.prompts[i] for i in rows],
        text=None if features.text is None else features.text[rows],
        prompts_truncated=None if features.prompts_truncated is None else features.prompts_truncated[rows])


def evaluate_per_class(real: Features, fake: Features, real_source: ImageSource, fake_source: ImageSource,
                       chosen, options: MetricOptions, force: bool = False, *, real_test: Features | None = None,
                       real_test_source: ImageSource | None = None):
    """``({class: Result}, intra-FID or None, warnings)`` for the classes present on both sides.

    ``real_test`` / ``real_test_source``: the held-out real images, per class when they too lie in
    class subfolders.
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
    applicable = [m for m in chosen if R.get(m).per_class]
    held_out = [m for m in applicable if REAL_TEST in R.get(m).needs]
    test_classes = None
    if held_out:
        try:
            if real_test is None or real_test.features is None or real_test_source is None:
                raise ImgdistError("no held-out images")
            test_classes = np.array(class_names(real_test, real_test_source, "held-out real"))
        except ImgdistError:
            labels = ", ".join(_name(m, real) for m in held_out)
            notes.append(f"per class: {labels} is computed for the whole sets only (per class it needs the held-out "
                         "images, --real-test, in the same class subfolders)")
            applicable = [m for m in applicable if m not in held_out]
    class_options = options.replace(bootstrap=0)
    results, missing = {}, {m: [] for m in applicable}
    for name in names:
        r_rows, f_rows = np.flatnonzero(real_classes == name), np.flatnonzero(fake_classes == name)
        counts = {"real": len(r_rows), "fake": len(f_rows)}
        test = None
        if test_classes is not None:
            t_rows = np.flatnonzero(test_classes == name)
            counts["real_test"] = len(t_rows)
            test = subset(real_test, t_rows, gaussian=False) if len(t_rows) else None
        metrics = [m for m in per_class_metrics(applicable, class_options, counts)
                   if test is not None or REAL_TEST not in R.get(m).needs]
        if metrics:
            gaussian = any(R.get(m).gaussian for m in metrics)
            result = evaluate_features(subset(real, r_rows, gaussian), subset(fake, f_rows, gaussian),
                                       metrics=Selection(metrics), options=class_options, force=force,
                                       real_test=test if any(REAL_TEST in R.get(m).needs for m in metrics) else None,
                                       skip_unfit=True)
            results[name] = result
        for m in applicable:
            if name not in results or not set(R.get(m).keys) & set(results[name].values):
                missing[m].append(name)
    for m, classes in missing.items():
        if classes:
            notes.append(f"per class: no {_name(m, real)} for {len(classes)} "
                         f"class(es), too small for its settings (k, splits, cells or 2 images per set), or without "
                         f"held-out images where it needs them: {_some(classes)}")
    fid_like = [m for m in applicable if R.get(m).gaussian]
    fds = [r.values[fid_like[0]] for r in results.values() if fid_like and fid_like[0] in r.values]
    intra = float(np.mean(fds)) if fds else None
    return results, intra, notes


def _name(metric: str, features: Features) -> str:
    """A metric's printed name without its feature space (``C_T``), for notes."""
    return metric_label(metric, features.provenance).split("[")[0]


def _some(names, limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
