"""Set-level metrics: one module per metric (or family), each with its pure functions (arrays in,
numbers out, no I/O) and, at its end, its registration (:mod:`.registry`, which discovers them).

- :mod:`.frechet` -- Fréchet distance (FID; Heusel et al. 2017)
- :mod:`.kid` -- Kernel Inception Distance (Bińkowski et al. 2018)
- :mod:`.inception_score` -- Inception Score (Salimans et al. 2016)
- :mod:`.prdc` -- precision/recall (Kynkäänniemi et al. 2019), density/coverage (Naeem et al. 2020)
- :mod:`.fid_infinity` -- FID extrapolated to infinite N (Chong & Forsyth 2020)
- :mod:`.bootstrap` -- bootstrap confidence intervals (Efron 1979)
- :mod:`.vendi` -- Vendi score and its order-q family (Friedman & Dieng 2023; Pasarkar & Dieng 2024)
- :mod:`.memorization` -- authenticity (Alaa et al. 2022), copies of training samples
- :mod:`.ct` -- the data-copying test C_T (Meehan et al. 2020)
- :mod:`.realism` -- per-image realism score (Kynkäänniemi et al. 2019, eq. 3)
- :mod:`.cmmd` -- CMMD, RBF-kernel MMD on CLIP embeddings (Jayasumana et al. 2024)
- :mod:`.clip_score` -- CLIP score, image-prompt cosine (Hessel et al. 2021)
- :mod:`.adm` -- the Inception Score and precision/recall as OpenAI's ADM evaluator computes them
- :mod:`.sfid` -- sFID (Nash et al. 2021); :mod:`.fwd` -- the Fréchet Wavelet Distance (2025)
- :mod:`.rarity`, :mod:`.probabilistic_pr`, :mod:`.pr_cover`, :mod:`.top_pr`, :mod:`.rke`,
  :mod:`.sliced_wasserstein` -- the fidelity and diversity metrics of 2022-2025
"""

from .adm import AdmPR, adm_inception_score, adm_precision_recall
from .bootstrap import bootstrap_ci, bootstrap_replicates, fid_bootstrap_ci
from .clip_score import clip_score, clip_score_per_image
from .cmmd import cmmd
from .fid_infinity import FIDInfinity, fid_infinity
from .frechet import fid_from_features, frechet_distance, mean_cov, trace_sqrt_product
from .inception_score import inception_score
from .kid import kid, kid_full, mmd2_unbiased, polynomial_kernel
from .ct import CT, NoUsableCell, ct_score, kmeans
from .memorization import Authenticity, Copies, RealNeighbours, authenticity, copies, nearest_real, real_neighbours
from .prdc import PRDC, density_coverage, knn_radii, prdc, precision_recall
from .realism import Realism, realism
from .vendi import vendi_from_spectrum, vendi_score, vendi_spectrum

__all__ = [
    "AdmPR",
    "adm_inception_score",
    "adm_precision_recall",
    "CT",
    "Authenticity",
    "Copies",
    "FIDInfinity",
    "NoUsableCell",
    "PRDC",
    "RealNeighbours",
    "Realism",
    "authenticity",
    "bootstrap_ci",
    "bootstrap_replicates",
    "clip_score",
    "clip_score_per_image",
    "cmmd",
    "copies",
    "ct_score",
    "density_coverage",
    "fid_bootstrap_ci",
    "fid_from_features",
    "fid_infinity",
    "frechet_distance",
    "inception_score",
    "kid",
    "kid_full",
    "kmeans",
    "knn_radii",
    "mean_cov",
    "mmd2_unbiased",
    "nearest_real",
    "polynomial_kernel",
    "prdc",
    "precision_recall",
    "real_neighbours",
    "realism",
    "trace_sqrt_product",
    "vendi_from_spectrum",
    "vendi_score",
    "vendi_spectrum",
]
