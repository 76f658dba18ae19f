"""Input checks shared by the metric functions, the statistics files and the report's neighbour search."""

from __future__ import annotations

import numpy as np

#: Largest accepted ``max|S - S^T| / max|S|`` of a covariance. Measured: numpy.cov, torch.cov and
#: the files of pytorch-fid and imgdist are exactly symmetric (0.0; BLAS computes ``X^T X`` with
#: a symmetric rank-k update). 1e-6 leaves room for covariances summed in float32 by other code
#: (GPU reductions round at ~1e-7) and still refuses an edited matrix: removing the asymmetric part
#: of a rounding-level defect changes nothing, while an entry moved by more than 1e-6 of the
#: largest one is no rounding.
SYMMETRY_RTOL = 1e-6


def as_features(x, name: str) -> np.ndarray:
    """A finite 2-D float64 array of samples x features, or a ValueError naming ``name``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x features), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def relative_asymmetry(s: np.ndarray) -> float:
    """``max|S - S^T| / max|S|`` of a square matrix (0 for the zero matrix)."""
    scale = float(np.max(np.abs(s))) if s.size else 0.0
    return float(np.max(np.abs(s - s.T))) / scale if scale > 0 else 0.0
