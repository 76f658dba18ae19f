"""Input checks shared by the metric functions (and the report's neighbour search)."""

from __future__ import annotations

import numpy as np


def as_features(x, name: str) -> np.ndarray:
    """A finite 2-D float64 array of samples x features, or a ValueError naming ``name``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x features), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a
