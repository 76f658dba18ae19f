"""The ADM suite (``imgdist eval REF.npz SAMPLE.npz --suite adm``) and its batch files.

OpenAI's ADM evaluator (openai/guided-diffusion, ``evaluations/evaluator.py``) prints the table
diffusion papers report: Inception Score, FID, sFID, Precision, Recall. It needs TensorFlow 1 graph
code, ``np.bool`` and ``scipy.linalg.sqrtm(disp=)``, none of which run on current software; this
module computes the same table with imgdist's port of the same network.

Files ("ADM batches") are ``.npz`` archives:

* ``arr_0``: uint8 images, N x H x W x 3, any size (the network resizes them, TF1 bilinear);
* ``arr_1``: class labels, ignored;
* optionally ``mu``, ``sigma`` (2048) and ``mu_s``, ``sigma_s`` (2023): stored statistics, used for
  FID and sFID instead of those of ``arr_0`` (the evaluator does this for either file; a reference
  batch carries them, and its ``arr_0``, typically 10,000 images, serves precision and recall).

What is computed (see :mod:`imgdist.metrics.adm` for the definitions): the FID Inception in resize
mode ``tf`` (TF1 bilinear to 299, ``(x - 128) / 128``); Inception Score on the samples' ``pool_3 @
W``; FID and sFID of samples vs reference; precision and recall of the reference ``arr_0`` pool
features against all samples, with ADM's float16 distances (or float64 with ``exact=True``).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np

from .. import defaults as D
from ..checks import check_int, check_output
from ..errors import ImgdistWarning, SourceError
from ..files import atomic_write
from ..extraction.provenance import Provenance
from ..metrics import registry as R
from ..metrics.adm import ADM_IS_SPLIT, ADM_K, ADM_SUITE
from ..metrics.sfid import SFID
from .results import Result, weights_tag
from ..extraction.stats import _checked_moments, _read_npz_keys

POOL_DIM, SFID_DIM = 2048, 2023
#: the backbone outputs whose statistics an ADM batch stores (mu_s, sigma_s: sFID's maps)
_STORED_OUTPUTS = SFID.outputs
REFERENCE_IMAGES = 10_000
_STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


@dataclass
class AdmBatch:
    """One ADM ``.npz``: its images (memory-mapped where the archive stores them uncompressed)
    and, where present, its stored statistics ``(mu, sigma, mu_s, sigma_s)``, checked."""

    path: str
    images: np.ndarray
    stored: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
    provenance: Provenance | None   # provenance_* fields, written by imgdist (ADM's own have none)

    def __len__(self) -> int:
        return len(self.images)


def read_adm_batch(path) -> AdmBatch:
    """An ADM batch, validated; every malformed case is a one-line :class:`SourceError` naming it."""
    path = os.fspath(path)
    keys = _read_npz_keys(path)
    if "arr_0" not in keys:
        what = "a statistics file (mu, sigma) without images" if {"mu", "sigma"} <= set(keys) else \
            f"arrays {', '.join(sorted(keys)) or 'none'}"
        raise SourceError(f"{path}: not an ADM batch (needs images in 'arr_0'; holds {what})")
    images = _member_array(path, "arr_0")
    _check_images(images, path)
    present = [k for k in _STAT_KEYS if k in keys]
    stored = None
    if present:
        if len(present) != len(_STAT_KEYS):
            missing = [k for k in _STAT_KEYS if k not in keys]
            raise SourceError(f"{path}: stored statistics are incomplete: has {', '.join(present)} but not "
                              f"{', '.join(missing)} (an ADM reference batch carries all four)")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in _STAT_KEYS}
        mu, sigma, _ = _checked_moments(arrays["mu"], arrays["sigma"], None, path, SourceError)
        mu_s, sigma_s, _ = _checked_moments(arrays["mu_s"], arrays["sigma_s"], None, f"{path} (sFID)",
                                            SourceError)
        for name, vec, dim in (("mu", mu, POOL_DIM), ("mu_s", mu_s, SFID_DIM)):
            if len(vec) != dim:
                raise SourceError(f"{path}: {name} has {len(vec)} dimensions, ADM's is {dim}")
        stored = (mu, sigma, mu_s, sigma_s)
    return AdmBatch(path, images, stored, _stored_provenance(path, keys))


def _check_images(images: np.ndarray, path: str) -> None:
    if images.dtype != np.uint8:
        raise SourceError(f"{path}: arr_0 must hold uint8 images (0..255), got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise SourceError(f"{path}: arr_0 must be N x H x W x 3 (channels last, RGB), got shape {images.shape}")
    if not all(images.shape[:3]):
        raise SourceError(f"{path}: arr_0 holds no images (shape {images.shape})")


def _stored_provenance(path: str, keys) -> Provenance | None:
    fields = [k for k in keys if k.startswith("provenance_")]
    if not fields:
        return None
    with np.load(path, allow_pickle=False) as data:
        meta = {}
        for key in fields:
            value = np.asarray(data[key])
            if value.ndim != 0 or value.dtype.kind != "U":
                raise SourceError(f"{path}: {key} must be a string")
            meta[key[len("provenance_"):]] = str(value) or None
    return Provenance.from_dict(meta)


def _member_array(path: str, name: str) -> np.ndarray:
    """``name`` from the archive, memory-mapped (copy-on-write: never written back, and writable for
    torch) where it is stored uncompressed (``np.savez``: a
    50,000 x 256 x 256 x 3 sample batch is 9.8 GB, more than many machines hold); else read."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{name}.npy")
            if info.compress_type == zipfile.ZIP_STORED:
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(member)
                    header = member.tell()
                with open(path, "rb") as raw:  # the member's data starts after its local header
                    raw.seek(info.header_offset + 26)
                    name_len, extra_len = np.frombuffer(raw.read(4), "<u2")
                start = info.header_offset + 30 + int(name_len) + int(extra_len) + header
                if not dtype.hasobject and start + int(np.prod(shape)) * dtype.itemsize <= os.path.getsize(path):
                    return np.memmap(path, dtype=dtype, mode="c", offset=start, shape=tuple(shape),
                                     order="F" if fortran else "C")
        with np.load(path, allow_pickle=False) as data:
            return data[name]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{path}: cannot read '{name}' ({' '.join(str(exc).split())})") from None


# ---------------------------------------------------------------------- the suite

def evaluate_adm(ref, sample, *, exact: bool = False, batch_size: int | None = D.BATCH_SIZE,
                 device: str = D.DEVICE, weights=None, progress: bool = True, workers: int | None = None,
                 force: bool = False) -> Result:
    """ADM's table for a reference batch and a sample batch (paths of ``.npz`` ADM batches).

    The metrics are the suite's (``metrics.adm.ADM_SUITE``: is-adm, fid, sfid, precision-adm,
    recall-adm), computed by :func:`~imgdist.evaluation.compute.evaluate_features` like any other run, on the
    FID Inception in resize mode ``tf``. Stored statistics (``mu``/``sigma``/``mu_s``/``sigma_s``) are
    preferred over ``arr_0`` for FID and sFID, on either side, as the evaluator does; ``arr_0``
    always serves the Inception Score (the samples) and precision/recall. ``exact``:
    precision/recall in float64 instead of ADM's float16 distance blocks. ``weights``: an Inception
    weights file (default: found like ``FeatureExtractor("inception")``; other weights label every
    number with their hash).
    """
    from ..extraction.features import FeatureExtractor
    from ..extraction.stats import GaussianStats
    from .compute import evaluate_features
    from .options import MetricOptions
    from .plan import Selection, make_plan

    suite = ADM_SUITE
    batches = {"reference": read_adm_batch(ref), "sample": read_adm_batch(sample)}
    for batch in batches.values():
        if len(batch) <= ADM_K:
            raise SourceError(f"{batch.path}: {len(batch)} images; precision and recall need more than "
                              f"k = {ADM_K} (each image's radius is its {ADM_K}rd neighbour)")
    ext = FeatureExtractor(suite.backbone, weights=weights, mode=suite.mode, device=device,
                           batch_size=batch_size, workers=workers, progress=progress, cache=False)
    plan = make_plan(Selection(suite.metrics), MetricOptions(adm_exact=exact), spec=ext.spec,
                     counts={"real": len(batches["reference"]), "fake": len(batches["sample"])})
    notes: list[str] = []
    sides = {}
    for (side, batch), role in zip(batches.items(), ("real", "fake")):
        if batch.stored is not None:
            notes += _check_stored(batch, ext.provenance, force)
        keeps = plan.keeps(role, len(batch), ext.feature_dim)
        # stored statistics replace the outputs whose statistics they hold (sFID's maps); outputs kept
        # per image (the unbiased logits of ADM's Inception Score) serve the samples' metrics only
        extra = tuple(name for name in keeps.extra
                      if not (batch.stored is not None and name in _STORED_OUTPUTS)
                      and (role == "fake" or name in _STORED_OUTPUTS))
        out = ext.extract(batch.images, keep_features=True, extra_layers=extra,
                          keep_extra=keeps.keep_extra and role == "fake", desc=side)
        if batch.stored is not None:
            mu, sigma, mu_s, sigma_s = batch.stored
            out.stats = GaussianStats.from_moments(mu, sigma, provenance=ext.provenance)
            out.extra[_STORED_OUTPUTS[0]] = GaussianStats.from_moments(
                mu_s, sigma_s, provenance=_layer(ext.provenance, _STORED_OUTPUTS[0]))
            out.stats_from_file = True
        sides[side] = out
    result = evaluate_features(sides["reference"], sides["sample"], metrics=plan.metrics, options=plan.options,
                               force=force)
    result.values = {key: result.values[key] for key in suite.metrics}  # ADM's order
    result.labels = adm_labels(ext.provenance, exact)
    result.counts = {side: len(batch) for side, batch in batches.items()}
    result.warnings = notes + result.warnings
    pr = result.details["adm_precision_recall"]
    result.details.update(
        suite=suite.name, k=ADM_K, is_split_size=ADM_IS_SPLIT, pr_exact=exact,
        borderline_precision=pr["borderline_precision"], borderline_recall=pr["borderline_recall"],
        statistics={side: "stored mu/sigma, mu_s/sigma_s" if b.stored is not None
                    else f"computed from arr_0 ({len(b)} images)" for side, b in batches.items()},
        device=str(ext.device))
    return result


def _layer(provenance: Provenance, name: str) -> Provenance:
    import dataclasses

    return dataclasses.replace(provenance, feature_layer=name)


def adm_labels(provenance: Provenance, exact: bool = False) -> dict[str, str]:
    """ADM's names (the suite's own); with weights other than the published ones each names their
    hash, and FID/sFID become FD/sFD (FID is only ever the published Inception); float64
    precision/recall (the metrics that read ``adm_exact``) say so."""
    tag = weights_tag(provenance)
    labels = {}
    for key, name in ADM_SUITE.names.items():
        entry = R.get(key)
        if tag:
            claims = entry.generic not in (None, entry.label)  # FID, sFID: the published network
            name = f"{entry.generic if claims else name}[inception:{tag}]"
        if exact and "adm_exact" in entry.setting_names:
            name += " (float64)"
        labels[key] = name
    return labels


def _check_stored(batch: AdmBatch, provenance: Provenance, force: bool) -> list[str]:
    """Stored statistics must come from the network used for the images."""
    if batch.provenance is not None and batch.provenance.known:
        return batch.provenance.check_compatible(provenance, f"{batch.path} statistics", force)
    if weights_tag(provenance):
        return [f"{batch.path}: stored statistics without provenance are taken as ADM's (the published "
                f"Inception), but these weights are not the published ones: FD and sFD mix two networks"]
    return []


def adm_summary(result: Result) -> str:
    """The table plus what ADM's own output cannot say: statistics used, float16 borderline counts."""
    d = result.details
    stats = "; ".join(f"{side}: {how}" for side, how in d["statistics"].items())
    if d["pr_exact"]:
        pr = "precision/recall computed in float64 (--adm-exact), not ADM's float16 distance blocks"
    else:
        pr = (f"precision/recall with ADM's float16 distance blocks: {d['borderline_precision']} samples and "
              f"{d['borderline_recall']} reference images lie within float16 rounding of a radius "
              f"(--adm-exact decides them in float64)")
    return "\n".join([result.table(warnings=False), f"FID/sFID statistics: {stats}", pr])


# ---------------------------------------------------------------------- reference batches

def write_adm_reference(source, output, *, images: int = REFERENCE_IMAGES, seed: int = 0,
                        batch_size: int = D.BATCH_SIZE, device: str = D.DEVICE, weights=None,
                        workers: int | None = None, progress: bool = True, on_error: str = "raise") -> dict:
    """Write an ADM reference batch: ``arr_0`` = ``images`` images of ``source`` drawn with
    ``seed`` (all of them where it holds fewer), at their own size (ADM's batches are at the
    model's resolution; sources of mixed sizes are refused), and ``mu``/``sigma``/``mu_s``/
    ``sigma_s`` over the *whole* source (streaming, float64), plus imgdist's provenance fields.
    Returns a summary dict."""
    from ..extraction.features import FeatureExtractor
    from ..extraction.sources import open_source

    output = check_output(output, "-o/--output", ".npz")
    images = check_int("adm_images", images, 1)
    seed = check_int("seed", seed, 0)
    src = open_source(source)
    n = len(src)
    if n <= ADM_K:
        raise SourceError(f"{src.label}: {n} images; a reference batch needs more than k = {ADM_K} for "
                          "precision and recall")
    drawn = np.sort(np.random.default_rng(seed).choice(n, size=min(images, n), replace=False))
    arr_0 = _images_of_one_size(src, drawn)
    suite = ADM_SUITE
    ext = FeatureExtractor(suite.backbone, weights=weights, mode=suite.mode, device=device, batch_size=batch_size,
                           workers=workers, progress=progress, cache=False)
    feats = ext.extract(src, keep_features=False, extra_layers=_STORED_OUTPUTS, on_error=on_error, desc="reference")
    spatial = feats.extra[_STORED_OUTPUTS[0]]
    meta = {f"provenance_{k}": ("" if v is None else v) for k, v in ext.provenance.to_dict().items()}
    with atomic_write(output, "wb") as fh:  # never a half-written reference batch
        np.savez(fh, arr_0=arr_0, mu=feats.stats.mu, sigma=feats.stats.sigma, mu_s=spatial.mu,
                 sigma_s=spatial.sigma, **meta)
    summary = {"output": output, "images": len(arr_0), "statistics_over": feats.stats.n,
               "size": f"{arr_0.shape[2]}x{arr_0.shape[1]}", "provenance": ext.provenance}
    if len(arr_0) < images:
        warnings.warn(f"{src.label}: holds {n} images, fewer than --adm-images {images}: arr_0 holds all of them",
                      ImgdistWarning, stacklevel=2)
    if feats.skipped:
        warnings.warn(feats.skipped.summary(), ImgdistWarning, stacklevel=2)
    return summary


def _images_of_one_size(src, indices: np.ndarray) -> np.ndarray:
    first = src.load(int(indices[0]))
    out = np.empty((len(indices),) + first.shape, np.uint8)
    for j, i in enumerate(indices):
        img = first if j == 0 else src.load(int(i))
        if img.shape != first.shape:
            raise SourceError(f"{src.name_of(int(i))}: is {img.shape[1]}x{img.shape[0]}, "
                              f"{src.name_of(int(indices[0]))} is {first.shape[1]}x{first.shape[0]}; an ADM reference "
                              "batch stores images at one size (the model's resolution): resize them first")
        out[j] = img
    return out
