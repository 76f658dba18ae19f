"""Metrics per class, for folders laid out one subfolder per class (the ImageFolder convention).

Each class's real and fake images are compared on their own, with the same extraction (no second
pass over the images), and the class-averaged Fréchet distance is reported: intra-FID (Miyato &
Koyama, "cGANs with Projection Discriminator", ICLR 2018; Brock et al., BigGAN, ICLR 2019), the
mean over classes of each class's FD.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .errors import ImgdistError
from .features import Features
from .options import MetricOptions
from .sources import FileSource, ImageSource
from .stats import GaussianStats


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


def subset(features: Features, rows: np.ndarray) -> Features:
    """The images at ``rows`` as their own set, with their own statistics."""
    stats = GaussianStats(provenance=features.provenance).update(features.features[rows])
    return dataclasses.replace(
        features, names=[features.names[i] for i in rows], stats=stats, features=features.features[rows],
        logits=None if features.logits is None else features.logits[rows],
        indices=[features.indices[i] for i in rows] if features.indices else [])


def runnable(chosen, options: MetricOptions, n_real: int, n_fake: int) -> list[str]:
    """The chosen metrics a class of this size can give (a small class cannot give k-NN metrics)."""
    keep = []
    for metric in chosen:
        if metric == "ct":
            continue  # needs a held-out real set per class
        try:
            options.check_sets([metric], {"real": n_real, "fake": n_fake})
        except ImgdistError:
            continue
        keep.append(metric)
    return keep


def evaluate_per_class(real: Features, fake: Features, real_source: ImageSource, fake_source: ImageSource,
                       chosen, options: MetricOptions, force: bool = False):
    """``({class: Result}, intra-FID or None, warnings)`` for the classes present on both sides."""
    from .evaluation import evaluate_features

    real_classes = np.array(class_names(real, real_source, "real"))
    fake_classes = np.array(class_names(fake, fake_source, "fake"))
    names = sorted(set(real_classes) & set(fake_classes))
    notes = []
    only = sorted(set(real_classes) ^ set(fake_classes))
    if only:
        notes.append(f"per class: {len(only)} class(es) only on one side, left out: {', '.join(only[:5])}"
                     + (" ..." if len(only) > 5 else ""))
    if not names:
        raise ImgdistError("per-class metrics: no class subfolder name is shared by the real and fake folders")
    class_options = dataclasses.replace(options, bootstrap=0)
    results, partial = {}, []
    for name in names:
        r_rows, f_rows = np.flatnonzero(real_classes == name), np.flatnonzero(fake_classes == name)
        metrics = runnable(chosen, class_options, len(r_rows), len(f_rows))
        if len(metrics) < len([m for m in chosen if m != "ct"]):
            partial.append(name)
        if metrics:
            results[name] = evaluate_features(subset(real, r_rows), subset(fake, f_rows), metrics=metrics,
                                              options=class_options, force=force)
    if partial:
        notes.append(f"per class: {len(partial)} class(es) too small for some metrics (k, splits or 2 images "
                     f"needed): {', '.join(partial[:5])}" + (" ..." if len(partial) > 5 else ""))
    if "ct" in chosen:
        notes.append("per class: C_T is computed for the whole sets only (it needs a held-out set per class)")
    fds = [r.values["fid"] for r in results.values() if "fid" in r.values]
    intra = float(np.mean(fds)) if fds else None
    return results, intra, notes
