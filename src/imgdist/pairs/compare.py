"""Compare a pair of images (or one image with many) by pixel and by feature distance.

Feature distances use a backbone's outputs:

* ``feature_l2``     Euclidean distance between pooled feature vectors
* ``feature_cosine`` 1 - cosine similarity of pooled feature vectors (scale-free; the one that
                     shows best that a 1-pixel shift is "near")
* ``feature_spatial`` the LPIPS construction without learned weights (Zhang et al. 2018, "The
                     Unreasonable Effectiveness of Deep Features as a Perceptual Metric"): each
                     spatial feature map is unit-normalised along channels, squared differences are
                     summed over channels and averaged over space, then summed over layers

and, when asked for, the learned ones (:mod:`imgdist.extraction.perceptual`): ``lpips`` (LPIPS
v0.1 on AlexNet, VGG16 or SqueezeNet) and ``dists`` (DISTS), computed for many images of a source
in batches, with the first image run through their network once.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .. import defaults as D
from ..errors import ImageError, ImgdistError, ImgdistWarning
from . import perceptual
from .pixel import PixelDistances, compare_pixels
from ..extraction.sources import ImageSource, Skipped, check_on_error, iter_images, open_source

@dataclass(frozen=True)
class FeatureDistances:
    feature_l2: float
    feature_cosine: float
    feature_spatial: float


@dataclass
class Comparison:
    """Distances between image ``a`` and image ``b``."""

    a: str
    b: str
    pixel: PixelDistances
    feature: FeatureDistances | None = None
    backbone: str | None = None      # its name, with the weights' hash where not the published ones
    resize_mode: str | None = None
    resized: bool = False
    device: str | None = None
    weights_sha256: str | None = None
    #: learned distances (``lpips``, ``dists``) and the names they print under (``LPIPS[alex]``)
    perceptual: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        out = self.pixel.to_dict()
        if self.feature is not None:
            out.update(vars(self.feature))
        out.update(self.perceptual)
        return out

    def to_dict(self) -> dict:
        """Plain JSON-ready dict: non-finite values become ``None`` except PSNR's ``inf`` ("inf")."""
        def clean(v):
            if isinstance(v, float) and math.isinf(v):
                return "inf" if v > 0 else "-inf"
            if isinstance(v, float) and math.isnan(v):
                return None
            return v

        out = {"a": self.a, "b": self.b}
        out.update({k: clean(v) for k, v in self.values().items()})
        out["backbone"] = self.backbone
        out["resize_mode"] = self.resize_mode
        out["device"] = self.device
        out["weights_sha256"] = self.weights_sha256
        out["resized_b_to_a"] = self.resized
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


class _Embedder:
    """Runs one backbone on single images (pairs are small: no workers, no cache), in strict fp32
    like every extraction. ``label``: the backbone's name, with the first 8 hex digits of its
    weights' SHA-256 where they are not the published ones, as ``eval`` labels its numbers."""

    def __init__(self, backbone, mode: str | None, device=D.DEVICE, weights=None):
        from ..extraction.provenance import weights_tag
        from ..extraction.backbones import load_backbone
        from ..extraction.provenance import Provenance
        from ..checks import resolve_device

        self.device = resolve_device(device)
        self.model = load_backbone(backbone, weights).to(self.device)
        self.prep = self.model.spec.preprocessing(mode)
        self.name = self.model.spec.name
        self.weights_sha256 = getattr(self.model, "weights_id", None)
        tag = weights_tag(Provenance(backbone=self.name, weights_sha256=self.weights_sha256))
        self.label = self.name + (f":{tag}" if tag else "")

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, name: str = "the image") -> dict:
        from ..extraction.features import fp32_mode

        x = self.prep.normalise(self.prep.resize_image(image)[None]).to(self.device)
        with fp32_mode("fp32"):
            out = self.model(x, outputs=("pool", "spatial"))
        if not all(bool(torch.isfinite(t).all()) for t in [out["pool"], *out.get("spatial", [])]):
            raise ImgdistError(f"{self.label} produced non-finite features for {name} (NaN or infinity): its "
                               "weights are broken or overflow")
        return out


def _host64(t: torch.Tensor) -> torch.Tensor:
    """float64 on the host: the distances of one pair are small sums, and a device may have no
    float64 (Apple's MPS)."""
    return t.to("cpu").double()


def indistinguishable(fa: dict, fb: dict) -> bool:
    """Whether two images' pooled features are one vector, to float32 rounding (two ulps of their
    size, the bound of the collapsed-set check): a network that cannot tell them apart."""
    from ..extraction.stats import SPREAD_RTOL

    pa, pb = _host64(fa["pool"][0]), _host64(fb["pool"][0])
    return float((pa - pb).norm()) <= SPREAD_RTOL * max(float(pa.norm()), float(pb.norm()))


def feature_distances(fa: dict, fb: dict) -> FeatureDistances:
    pa, pb = _host64(fa["pool"][0]), _host64(fb["pool"][0])
    l2 = float((pa - pb).norm())
    na, nb = float(pa.norm()), float(pb.norm())
    # 1 - cos as half the squared distance of the unit vectors: the same number, but exactly 0 for
    # identical images and never negative (1 - a.b/(|a||b|) leaves -2e-16 or +4e-16 there)
    cosine = float(((pa / na - pb / nb) ** 2).sum()) / 2.0 if na > 0 and nb > 0 else math.nan
    spatial = 0.0
    for ma, mb in zip(fa.get("spatial", []), fb.get("spatial", [])):
        ma, mb = _host64(ma), _host64(mb)
        na = ma / (ma.norm(dim=1, keepdim=True) + 1e-10)
        nb = mb / (mb.norm(dim=1, keepdim=True) + 1e-10)
        spatial += float(((na - nb) ** 2).sum(dim=1).mean())
    return FeatureDistances(l2, cosine, spatial)


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` at ``shape`` (height, width) with Pillow's bicubic: how ``resize=True`` and the
    robustness table bring a second image to the first one's size."""
    height, width = shape
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def _load_one(spec) -> tuple[str, np.ndarray]:
    source = open_source(spec)
    if len(source) != 1:
        raise ImgdistError(f"{source.label}: expected one image, found {len(source)}")
    return source.name_of(0), source.load(0)


def compare(a, b, *, backbone: str | object | None = D.PAIR_BACKBONE, weights=None, mode: str | None = None,
            resize: bool = False, device: str = D.DEVICE, lpips: str | None = None, lpips_weights=None,
            dists: bool = False, dists_weights=None) -> Comparison:
    """Pixel (and, with a backbone, feature) distances between two images.

    ``a`` and ``b``: a path, an array (H x W x C), a tensor (C x H x W) or a PIL image.
    ``resize=True`` resizes ``b`` to ``a``'s size (antialiased bicubic) when sizes differ;
    otherwise different sizes are an error.
    ``lpips``: also LPIPS v0.1 on ``"alex"``, ``"vgg"`` or ``"squeeze"`` (``lpips_weights``: one
    state dict in the lpips package's layout instead of the published files); ``dists=True``: also
    DISTS (``dists_weights``: one state dict in DISTS_pytorch's layout).
    """
    return compare_many(a, b, backbone=backbone, weights=weights, mode=mode, resize=resize, device=device,
                        lpips=lpips, lpips_weights=lpips_weights, dists=dists, dists_weights=dists_weights)[0]


def compare_many(a, others, *, backbone: str | object | None = D.PAIR_BACKBONE, weights=None,
                 mode: str | None = None, resize: bool = False, device: str = D.DEVICE, sort_by: str | None = None,
                 on_error: str = "raise", skipped: Skipped | None = None, lpips: str | None = None,
                 lpips_weights=None, dists: bool = False, dists_weights=None) -> list[Comparison]:
    """Compare ``a`` with every image of ``others`` (any source), optionally sorted by a metric;
    ``lpips``, ``dists`` and their weights as in :func:`compare`."""
    name_a, image_a = _load_one(a)
    source = others if isinstance(others, ImageSource) else open_source(others)
    check_on_error(on_error)
    if weights is not None and backbone is None:
        raise ImgdistError("weights were given, but no backbone (pixel distances need none)")
    net_device = _device(device) if lpips is not None or dists else None
    nets = perceptual.load_models(lpips, lpips_weights, dists, dists_weights, device=net_device)
    perceptual.check_sizes(nets, image_a, name_a)
    embed = _Embedder(backbone, mode, device, weights) if backbone is not None else None
    features_a = embed(image_a, name_a) if embed else None
    anchored, labels = perceptual.anchors(nets, image_a), perceptual.labels(nets)
    results, blind = [], []
    skipped = Skipped() if skipped is None else skipped
    waiting: list[tuple[Comparison, np.ndarray]] = []  # compared but for the learned distances
    for name_b, image_b in iter_images(source, on_error, skipped):
        try:
            comparison, pixel_b = _compare_loaded(name_a, image_a, features_a, name_b, image_b, embed, resize,
                                                  blind, [net.key for net in nets])
        except ImageError as exc:
            if on_error == "raise":
                raise
            skipped.add(exc)
            continue
        results.append(comparison)
        if nets:
            waiting.append((comparison, pixel_b))
            if len(waiting) >= _PERCEPTUAL_BATCH:
                _add_perceptual(anchored, labels, waiting, net_device)
    if waiting:
        _add_perceptual(anchored, labels, waiting, net_device)
    _check_compared(results, source, skipped)
    if blind:
        what = blind[0] if len(results) == 1 else f"{len(blind)} of the {len(results)} images of {source.label}"
        warnings.warn(f"{embed.label} gives {what} the same features as {name_a}, although the pixels differ: the "
                      "network cannot tell them apart (broken or zeroed weights?), and a feature distance of 0 "
                      "means nothing here", ImgdistWarning, stacklevel=2)
    if sort_by:
        results.sort(key=lambda c: _sort_key(c, sort_by))
    return results


class SizeMismatch(ImageError):
    """An image of another size than ``a`` (without ``resize``): readable, just not comparable."""

    kind = "differently sized"


def _check_compared(results: list, source: ImageSource, skipped: Skipped) -> None:
    """Nothing compared although the source has images: an error, like ``eval`` on a set of
    unreadable images, not an empty table."""
    if not results and len(skipped):
        raise ImgdistError(f"{source.label}: none of its {len(source)} image(s) could be compared "
                           f"({skipped.summary()})")


#: images of a source held for one batch of the learned distances (each model splits it further
#: by its memory needs)
_PERCEPTUAL_BATCH = 32


def _device(device) -> str:
    from ..checks import resolve_device

    return resolve_device(device)


def _add_perceptual(anchored: list, labels: dict, waiting: list, device: str) -> None:
    """The learned distances of the comparisons in ``waiting`` (emptied), in one batch."""
    rows = perceptual.values_to(anchored, [pixel_b for _, pixel_b in waiting])
    for (comparison, _), row in zip(waiting, rows):
        comparison.perceptual = row
        comparison.labels = dict(labels)  # each comparison's own, as a field default would be
        comparison.device = comparison.device or device
    waiting.clear()


def _compare_loaded(name_a, image_a, features_a, name_b, image_b, embed, resize, blind: list,
                    learned: list[str] = ()) -> tuple[Comparison, np.ndarray]:
    """The pair's comparison (without the learned distances) and ``b`` at ``a``'s size; ``blind``
    collects the images the network cannot tell from ``a``."""
    resized = False
    pixel_b = image_b
    if image_b.shape != image_a.shape:
        if not resize:
            need = " and ".join(["pixel distances", *learned])
            raise SizeMismatch(name_b, f"is {image_b.shape[1]}x{image_b.shape[0]}, {os.path.basename(name_a)} "
                                     f"is {image_a.shape[1]}x{image_a.shape[0]}: {need} need equal "
                                     "sizes (use --resize / resize=True to resize it, bicubic)")
        pixel_b, resized = resize_to(image_b, image_a.shape[:2]), True
    pixel = compare_pixels(image_a, pixel_b)
    feature = None
    if embed:
        features_b = embed(image_b, name_b)
        feature = feature_distances(features_a, features_b)
        if pixel.sum_abs_diff > 0 and indistinguishable(features_a, features_b):
            blind.append(name_b)
    return Comparison(name_a, name_b, pixel, feature, embed.label if embed else None,
                      embed.prep.describe() if embed else None, resized, embed.device if embed else None,
                      embed.weights_sha256 if embed else None), pixel_b


def _sort_key(comparison: Comparison, metric: str) -> float:
    values = comparison.values()
    if metric not in values:
        raise ImgdistError(f"cannot sort by {metric!r}; choose from {', '.join(values)}")
    value = values[metric]
    if metric in ("psnr", "ssim", "ssim_luma"):  # similarities: larger is nearer
        value = -value
    return math.inf if math.isnan(value) else value
