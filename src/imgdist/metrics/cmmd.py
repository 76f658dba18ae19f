"""CMMD: the maximum mean discrepancy between CLIP embeddings with a Gaussian RBF kernel.

Paper: S. Jayasumana, S. Ramalingam, A. Veit, D. Glasner, A. Chakrabarti, S. Kumar, "Rethinking
FID: Towards a Better Evaluation Metric for Image Generation", CVPR 2024.

Definition, as the paper's reference code (google-research ``cmmd/distance.py``) computes it::

    CMMD = scale * ( mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j) )
    k(a, b) = exp(-|a - b|^2 / (2 sigma^2)),   sigma = 10,   scale = 1000

on L2-normalised embeddings (the reference embeds with CLIP ViT-L/14@336px and divides each
embedding by its norm). The means run over *all* pairs, the diagonal included: this is the
biased, minimum-variance estimator (Gretton et al. 2012, eq. 5), not KID's unbiased one. It makes
no normality assumption (unlike FID) and needs no subsets. The protocol behind a published CMMD:
``clip-vit-l14-336`` features in resize mode ``cmmd`` (centre square, Pillow bicubic to 336 px).

Numerics: float64 throughout; the kernel matrices are never held whole: squared distances come
in row blocks from :func:`imgdist.metrics.prdc.distance_blocks` (the chunked generator PRDC uses),
so memory is O(N x block) however many images there are.
"""

from __future__ import annotations

import numpy as np

from ._arrays import as_features
from .prdc import distance_blocks
from .registry import CLIP, FEATURES, Metric, register

__all__ = ["cmmd", "CMMD_SIGMA", "CMMD_SCALE"]

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def _kernel_mean(a: np.ndarray, b: np.ndarray, gamma: float, chunk_size: int | None, same: bool) -> float:
    total = 0.0
    for _, d in distance_blocks(a, b, chunk_size, same=same):
        d *= d  # back to squared distances
        d *= -gamma
        total += float(np.exp(d, out=d).sum())
    return total / (len(a) * len(b))


def cmmd(real, fake, *, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE, normalize: bool = True,
         chunk_size: int | None = None) -> float:
    """CMMD between two sets of embeddings (rows), Jayasumana et al. 2024.

    ``normalize``: divide every row by its L2 norm first, as the paper does with CLIP embeddings
    (pass already-normalised features with False). ``chunk_size``: rows per distance block
    (default: blocks of ~64 MiB).
    """
    x = as_features(real, "real")
    y = as_features(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError("CMMD needs at least one sample in each set")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if normalize:
        for name, a in (("real", x), ("fake", y)):
            norms = np.linalg.norm(a, axis=1, keepdims=True)
            if np.any(norms == 0):
                raise ValueError(f"{name} has an all-zero embedding, which cannot be L2-normalised")
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
    gamma = 1.0 / (2.0 * sigma * sigma)
    k_xx = _kernel_mean(x, x, gamma, chunk_size, same=True)
    k_yy = _kernel_mean(y, y, gamma, chunk_size, same=True)
    k_xy = _kernel_mean(x, y, gamma, chunk_size, same=False)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))


# ---------------------------------------------------------------- registration

#: CMMD as published: CLIP ViT-L/14 at 336 px, the reference code's resize
CMMD_SPACE = ("clip-vit-l14-336", "cmmd")


def _cmmd(run) -> float:
    p = run.real_stats.provenance
    if (p.backbone, p.resize_mode) != CMMD_SPACE:
        run.result.warnings.append(
            f"CMMD as published uses {CMMD_SPACE[0]} features in resize mode {CMMD_SPACE[1]}; this one is on "
            f"{p.backbone} ({p.resize_mode}) and is not comparable with published CMMD values")
    return cmmd(run.xr, run.xf)


CMMD = register(Metric(
    "cmmd", "1000 × MMD² with a Gaussian kernel (σ 10) on normalised CLIP embeddings (Jayasumana et al. 2024)",
    _cmmd, "CMMD", lower_is_better=True, needs={FEATURES, CLIP}, published_on=CMMD_SPACE, space=CMMD_SPACE,
    function=lambda sets, options: cmmd(sets.real, sets.fake),
    order=60, paper="Jayasumana et al., Rethinking FID: Towards a Better Evaluation Metric for Image Generation, "
                    "CVPR 2024"))
