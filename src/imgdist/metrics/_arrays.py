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

#: Smallest accepted eigenvalue of a covariance from outside (a file, an API caller), relative to
#: its largest: ``lambda_min >= -PSD_RTOL * lambda_max``. Measured on genuine files (pytorch-fid --save-stats, imgdist's old and
#: new accumulation, numpy.cov; d = 64 to 3072, N below and above d): >= -3.4e-16; their float32
#: copies >= -3.3e-9; covariances summed in float32 (torch.cov) >= -4.9e-8. 1e-6 accepts all of
#: those and refuses any real defect (a negative variance, -S, a sign flip in a matrix).
PSD_RTOL = 1e-6


def covariance_defect(s: np.ndarray, symbol: str = "S") -> str | None:
    """What keeps the square float64 matrix ``s`` from being a covariance, as the end of a sentence
    (``"is not symmetric (...)"``), or None: the one test for statistics files and the metric
    functions alike (``symbol``: the matrix's name in the message). Rounding-level asymmetry passes;
    callers use ``(s + s^T) / 2``."""
    asym = relative_asymmetry(s)
    if asym > SYMMETRY_RTOL:
        return (f"is not symmetric (max |{symbol} - {symbol}^T| is {asym:.3g} of its largest entry; rounding stays below "
                f"{SYMMETRY_RTOL:g})")
    extremes = psd_violation(0.5 * (s + s.T))
    if extremes is not None:
        return f"is not positive semi-definite (smallest eigenvalue {extremes[0]:.4g}, largest {extremes[1]:.4g})"
    return None


def psd_violation(sigma: np.ndarray) -> tuple[float, float] | None:
    """``(smallest, largest eigenvalue)`` if ``smallest < -PSD_RTOL * max(largest, 0)``, else None.

    The common case costs one Cholesky factorisation (about a tenth of a Fréchet distance at
    d = 2048): the largest eigenvalue is at least the largest diagonal entry ``v``, so if
    ``sigma + PSD_RTOL v I`` has a Cholesky factor, the smallest eigenvalue is above
    ``-PSD_RTOL v >= -PSD_RTOL lambda_max`` and the matrix passes. Only when that fails are the
    eigenvalues computed, to decide exactly and to name them in the message.
    """
    import scipy.linalg

    shift = PSD_RTOL * float(np.max(np.diag(sigma)))
    if shift > 0:
        shifted = sigma.copy()
        shifted.flat[:: len(sigma) + 1] += shift
        try:
            scipy.linalg.cholesky(shifted, lower=True, overwrite_a=True, check_finite=False)
            return None
        except np.linalg.LinAlgError:
            pass
    w = scipy.linalg.eigvalsh(sigma, check_finite=False)
    if w[0] >= -PSD_RTOL * max(float(w[-1]), 0.0):
        return None
    return float(w[0]), float(w[-1])


def real_array(x, name: str) -> np.ndarray:
    """``x`` as an array, or a ValueError naming ``name`` where it holds complex numbers: converting
    them to float would drop their imaginary parts without a word (``mu + 5j`` would be ``mu``),
    and a distance between real features has none. Statistics files are refused the same way."""
    a = np.asarray(x)
    if a.dtype.kind == "c" or (a.dtype.kind == "O" and any(isinstance(v, complex) for v in a.flat)):
        raise ValueError(f"{name} holds complex numbers ({a.dtype}); only real numbers are accepted")
    return a


def real_float64(x, name: str) -> np.ndarray:
    """``x`` as a float64 array (see :func:`real_array`)."""
    return real_array(x, name).astype(np.float64, copy=False)


def as_features(x, name: str) -> np.ndarray:
    """A finite 2-D float64 array of samples x features, or a ValueError naming ``name``."""
    a = real_float64(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x features), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def relative_asymmetry(s: np.ndarray) -> float:
    """``max|S - S^T| / max|S|`` of a square matrix (0 for the zero matrix)."""
    scale = float(np.max(np.abs(s))) if s.size else 0.0
    return float(np.max(np.abs(s - s.T))) / scale if scale > 0 else 0.0


def nonempty(x, name: str) -> np.ndarray:
    a = as_features(x, name)
    if len(a) == 0:
        raise ValueError(f"{name} holds no samples")
    return a


def same_dim(**sets: np.ndarray) -> None:
    dims = {name: a.shape[1] for name, a in sets.items()}
    if len(set(dims.values())) > 1:
        raise ValueError("feature dimensions differ: " + ", ".join(f"{k} {v}" for k, v in dims.items()))
