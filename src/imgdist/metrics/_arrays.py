"""Input checks shared by the metric functions, the statistics files and the report's neighbour search."""

from __future__ import annotations

import numbers

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


def check_int(value, name: str, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``; else a ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value, name: str) -> float:
    """``value`` as a float strictly between 0 and 1; else a ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def check_seed(value, name: str = "seed"):
    """``None`` or an integer >= 0 (what :func:`numpy.random.default_rng` takes); else a ValueError."""
    if value is None:
        return None
    return check_int(value, name, 0)
