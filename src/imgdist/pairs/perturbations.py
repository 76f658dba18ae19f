"""How far does each distance move under changes nobody would call a different image?

For small shifts, noise and blur of an image, each metric's distance is divided by the same
metric's distance between the image and a genuinely different image. A ratio near 0 means "the
metric sees the same image"; near 1 means "as different as another photo". Pixel distances put a
1-pixel shift far away; feature distances keep it close. LPIPS and DISTS join the table when asked
for (``lpips=``, ``dists=``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from PIL import Image, ImageFilter

from . import perceptual
from .compare import _Embedder, feature_distances, indistinguishable
from .. import defaults as D
from ..errors import ImgdistError
from .pixel import pixel_distances, ssim_defined

SHIFTS = (1, 2, 4, 8)
NOISE_SIGMAS = (5, 10, 20)     # standard deviation on the 0..255 scale
BLUR_RADII = (1, 2, 4)         # Gaussian blur radius (Pillow's GaussianBlur), pixels
#: distances only (similarities such as PSNR and SSIM enter as 1 - SSIM)
PIXEL_DISTANCES = ("sum_abs_diff", "mse", "1-ssim")


def shift(image: np.ndarray, pixels: int) -> np.ndarray:
    """Move the content ``pixels`` to the right; the uncovered columns repeat the edge."""
    out = np.empty_like(image)
    out[:, pixels:] = image[:, :-pixels]
    out[:, :pixels] = image[:, :1]
    return out


def add_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def perturbations(image: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    out = {f"shift{s}": shift(image, s) for s in SHIFTS}
    out.update({f"noise{s}": add_noise(image, s, seed) for s in NOISE_SIGMAS})
    out.update({f"blur{r}": blur(image, r) for r in BLUR_RADII})
    return out


#: photos shipped inside the package (sources and licences: imgdist/data/README.md)
BUILTIN_PHOTOS = ("chelsea.jpg", "astronaut.jpg", "coffee.jpg")


def builtin_photo(name: str) -> np.ndarray:
    """One of :data:`BUILTIN_PHOTOS` as H x W x 3 uint8."""
    if name not in BUILTIN_PHOTOS:
        raise ImgdistError(f"no built-in photo {name!r}; choose from {', '.join(BUILTIN_PHOTOS)}")
    with resources.as_file(resources.files("imgdist") / "data" / name) as path:
        return np.array(Image.open(path).convert("RGB"))


def builtin_other() -> tuple[str, np.ndarray]:
    """The built-in different image: a photo of a cup of espresso (see imgdist/data/README.md)."""
    return "built-in coffee.jpg", builtin_photo("coffee.jpg")


@dataclass
class RobustnessResult:
    image: str
    other: str
    backbone: str | None
    resize_mode: str | None
    reference: dict[str, float]                      # metric -> distance(image, other)
    distances: dict[str, dict[str, float]] = field(default_factory=dict)  # perturbation -> metric -> d
    device: str | None = None                        # where the networks ran (None: no network)
    weights_sha256: str | None = None                # the backbone's weights (None: none, or no backbone)
    labels: dict[str, str] = field(default_factory=dict)  # learned distance -> its printed name

    @property
    def metrics(self) -> list[str]:
        return list(self.reference)

    def ratio(self, perturbation: str, metric: str) -> float:
        ref = self.reference[metric]
        return self.distances[perturbation][metric] / ref if ref > 0 else math.nan

    def to_dict(self) -> dict:
        clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
        return {
            "image": self.image, "other": self.other, "backbone": self.backbone,
            "resize_mode": self.resize_mode, "device": self.device, "weights_sha256": self.weights_sha256,
            "labels": dict(self.labels),
            "reference": {m: clean(v) for m, v in self.reference.items()},
            "perturbations": {p: {m: {"distance": clean(d[m]), "ratio": clean(self.ratio(p, m))}
                                  for m in self.metrics} for p, d in self.distances.items()},
        }

    def table(self) -> str:
        from ..formatting import format_table

        rows = [[p] + [self.ratio(p, m) for m in self.metrics] for p in self.distances]
        rows.append(["(other image)"] + [1.0] * len(self.metrics))
        head = (f"distance(image, perturbed) / distance(image, other image)\n"
                f"image: {self.image}\nother: {self.other}\n"
                f"backbone: {self.backbone or 'none'}" + (f", resize mode {self.resize_mode}" if self.resize_mode else "")
                + (f", device {self.device}" if self.device else "")
                + "".join(f"\n{key}: {label}" for key, label in self.labels.items()))
        return head + "\n" + format_table(["perturbation"] + self.metrics, rows)

    def plot(self, path: str | os.PathLike) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImgdistError("--plot needs matplotlib: pip install matplotlib") from None
        groups = {"shift": ("shift (px)", SHIFTS), "noise": ("Gaussian noise (sigma, 0..255)", NOISE_SIGMAS),
                  "blur": ("Gaussian blur (radius, px)", BLUR_RADII)}
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharey=True)
        for ax, (kind, (xlabel, levels)) in zip(axes, groups.items()):
            for metric in self.metrics:
                style = "--" if metric in PIXEL_DISTANCES else "-"
                ax.plot(levels, [self.ratio(f"{kind}{v}", metric) for v in levels], style, marker="o",
                        label=metric)
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(v) for v in levels])
            ax.set_xlabel(xlabel)
        axes[0].set_yscale("log")
        axes[0].set_ylabel("distance / distance to another image")
        axes[-1].legend(fontsize=8)
        fig.suptitle(f"pixel (dashed) vs feature (solid) distances, backbone {self.backbone}")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _distances(a: np.ndarray, b: np.ndarray, fa, fb) -> dict[str, float]:
    values = pixel_distances(a, b, with_ssim=ssim_defined(a[None]))
    out = {"sum_abs_diff": float(values["sum_abs_diff"][0]), "mse": float(values["mse"][0]),
           "1-ssim": 1.0 - float(values["ssim"][0]) if "ssim" in values else math.nan}
    if fa is not None:
        out.update(vars(feature_distances(fa, fb)))
    return out


def robustness(image, other=None, *, backbone=D.PAIR_BACKBONE, weights=None, mode=None, device=D.DEVICE,
               seed: int = 0, lpips: str | None = None, lpips_weights=None, dists: bool = False,
               dists_weights=None) -> RobustnessResult:
    """Distances of ``image`` to perturbed copies of itself, relative to its distance to ``other``;
    ``lpips``, ``dists`` and their weights add those columns (see :func:`imgdist.compare`)."""
    from ..checks import resolve_device
    from .compare import _load_one, resize_to

    name, img = _load_one(image)
    if min(img.shape[:2]) <= max(SHIFTS):
        raise ImgdistError(f"{name}: {img.shape[1]}x{img.shape[0]} is too small for shifts up to {max(SHIFTS)} px")
    other_name, oth = _load_one(other) if other is not None else builtin_other()
    if oth.shape != img.shape:  # pixel distances need one size; the features see the whole image anyway
        oth = resize_to(oth, img.shape[:2])
        other_name += f" (resized to {img.shape[1]}x{img.shape[0]}, bicubic)"
    if weights is not None and not backbone:
        raise ImgdistError("weights were given, but no backbone (pixel distances need none)")
    net_device = resolve_device(device) if lpips is not None or dists else None
    nets = perceptual.load_models(lpips, lpips_weights, dists, dists_weights, device=net_device)
    perceptual.check_sizes(nets, img, name)
    embed = _Embedder(backbone, mode, device, weights) if backbone else None
    f_img = embed(img, name) if embed else None
    feats = (lambda x, what: embed(x, what)) if embed else (lambda x, what: None)
    f_other = feats(oth, other_name)
    reference = _distances(img, oth, f_img, f_other)
    if embed and reference["sum_abs_diff"] > 0 and indistinguishable(f_img, f_other):
        # every feature ratio would divide by 0: a table of nulls
        raise ImgdistError(f"{embed.label} gives {name} and {other_name} the same features although their pixels "
                           "differ: the network cannot tell them apart (broken or zeroed weights?), so no feature "
                           "distance can be measured against theirs")
    result = RobustnessResult(name, other_name, embed.label if embed else None,
                              embed.prep.describe() if embed else None, reference=reference,
                              device=embed.device if embed else net_device,
                              weights_sha256=embed.weights_sha256 if embed else None)
    changed = perturbations(img, seed)
    for label, perturbed in changed.items():
        result.distances[label] = _distances(img, perturbed, f_img, feats(perturbed, f"{name} ({label})"))
    if nets:
        rows = perceptual.values_to(perceptual.anchors(nets, img), [oth, *changed.values()])
        result.reference.update(rows[0])
        for label, row in zip(changed, rows[1:]):
            result.distances[label].update(row)
        result.labels = perceptual.labels(nets)
    return result
