"""Checks of an evaluation's sides made before extraction: what the files and names already tell.

Each refuses (or warns about) a run that would otherwise fail, or print a misleading number, only
after minutes of embedding: a statistics file whose dimension no layer of the chosen backbone has,
class folders that share no class, a held-out set that is the training set.
"""

from __future__ import annotations

import dataclasses
import hashlib

from ..errors import ImgdistError
from ..extraction.provenance import Provenance
from ..extraction.stats import GaussianStats


def check_stats_dims(inputs: dict, given: dict, extractor) -> None:
    """A statistics file's dimension against the features the extractor will give (where they do
    not depend on the images' size: ``pixels`` at native size does)."""
    if extractor.prep.size is None:
        return
    for side, obj in inputs.items():
        if isinstance(obj, GaussianStats) and obj.dim != extractor.feature_dim:
            raise ImgdistError(f"{given[side]}: {obj.dim}-dimensional statistics cannot be compared with the "
                               f"{extractor.feature_dim}-dimensional {extractor.layer} features of "
                               f"{extractor.spec.name}; name the backbone (and --dims) they were made with")


def assert_backbone(inputs: dict, spec) -> str | None:
    """Two statistics files without provenance: with a backbone the user named (``spec``), the files
    are taken to be that backbone's (labels name it; never plain ``FID``, since the weights cannot be
    told); without one, the numbers print as ``FD[unknown]``. Returns the warning that says which,
    or None where a file carries its own provenance."""
    files = [obj for obj in inputs.values() if isinstance(obj, GaussianStats)]
    if len(files) != 2 or any(obj.provenance.known for obj in files):
        return None
    if spec is None:
        return ("neither statistics file records how it was made: the numbers print as FD[unknown], not FID "
                "(name the backbone with --backbone to label them)")
    for side, obj in inputs.items():
        if isinstance(obj, GaussianStats):
            obj.provenance = dataclasses.replace(Provenance(), backbone=spec.name, precision=None,
                                                 feature_layer=_layer_of(spec, obj.dim, side))
    return (f"the statistics files carry no provenance: taken to be {spec.name} features because --backbone "
            "says so (weights, layer and resize mode unknown)")


def _layer_of(spec, dim: int, side: str) -> str | None:
    """The layer of ``spec`` that gives ``dim`` features; a dimension none of its layers gives is
    refused (the label would name a network that cannot have made the file). None where the size
    depends on the images (``pixels`` at native size)."""
    if any(prep.size is None for prep in spec.modes.values()):
        return None
    layers = {spec.feature_dim: "pool", **spec.feature_layers}
    if dim not in layers:
        raise ImgdistError(f"--backbone {spec.name}: the {side} statistics are {dim}-dimensional, and no layer of "
                           f"{spec.name} gives that ({', '.join(map(str, sorted(layers)))}); name the backbone "
                           "they were made with")
    return layers[dim]


def check_shared_classes(real_source, fake_source) -> None:
    """``--per-class``: each side laid out in class subfolders, and at least one class on both."""
    from ..extraction.features import Features
    from .per_class import class_names

    found = []
    for side, source in (("real", real_source), ("fake", fake_source)):
        names = [source.name_of(i) for i in range(len(source))]
        found.append(set(class_names(Features(names=names, stats=None, provenance=None), source, side)))
    if not found[0] & found[1]:
        raise ImgdistError(f"--per-class: no class subfolder name is shared by the real folder {real_source.label} "
                           f"({len(found[0])} classes) and the fake folder {fake_source.label} ({len(found[1])} "
                           "classes)")


def content_digest(source, i: int) -> bytes:
    """SHA-256 of item ``i``'s encoded bytes (its pixels where it has none): equal digests, same image."""
    data = source.content_bytes(i)
    return hashlib.sha256(data if data is not None else source.load(i).tobytes()).digest()


def _hashes(source) -> list[bytes]:
    return [content_digest(source, i) for i in range(len(source))]


def check_held_out(train_source, fake_source, test_source, given_test) -> list[str]:
    """C_T's held-out set must be images the generator never saw, by content (not name); each
    held-out image is read and hashed once for both checks. The warnings, in order.

    Training images: refused when every held-out image is one, a warning with the count when some are.
    The generator's own samples (``fake_source`` None: a statistics file, no images to compare): C_T
    measures how much closer the fakes lie to the training set than held-out images do, and fakes
    among the held-out images pull it towards 0, which reads as "no copying" (the fake set itself
    as --real-test gave 0.004); a warning with the count."""
    train = set(_hashes(train_source))
    test = _hashes(test_source)
    shared = sum(h in train for h in test)
    if shared == len(test):
        raise ImgdistError(f"--real-test {given_test}: every one of its {len(test)} images is also in the training "
                           "(real) set, by content; C_T needs held-out images the generator never saw")
    notes = []
    if shared:
        notes.append(f"--real-test {given_test}: {shared} of its {len(test)} images are also in the training (real) "
                     "set, by content; C_T treats them as unseen, which pulls it towards copying (< 0)")
    if fake_source is None:
        return notes
    fakes = set(_hashes(fake_source))
    shared = sum(h in fakes for h in test)
    if shared:
        what = f"every one of its {len(test)} images is" if shared == len(test) else \
            f"{shared} of its {len(test)} images are"
        notes.append(f"--real-test {given_test}: {what} also in the fake set, by content; C_T compares the fakes "
                     "with held-out real images, and fakes among them pull it towards 0, which reads as no copying")
    return notes
