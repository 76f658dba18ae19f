"""Deterministic features for the ADM parity fixtures (``tests/fixtures/adm_peers.npz``).

Shared by ``tools/peers/make_adm_fixtures.py`` (which runs OpenAI's ADM evaluator on them) and
``tests/test_adm_parity.py`` (which runs imgdist on them), so the fixture stores a seed and a
digest instead of 50 MB of features.

The features must come out bit-identical in both environments. They are therefore drawn from
``numpy.random.default_rng`` (a stable bit stream) and shaped with correctly rounded elementwise
arithmetic only (+, *, maximum): no BLAS, no transcendental functions, whose last bits may depend
on the CPU or the library build. ``digest`` lets the test prove the inputs are the fixture's own.

Shapes follow the evaluator's inputs: pool_3 features (2048, non-negative, clustered like image
classes), the sFID spatial features (2023 = 17 x 17 x 7, non-negative) and the 2048 x 1008
classifier weights the Inception Score multiplies pool_3 with. The sample set is a perturbed copy
of the reference distribution (moved cluster centres, other spreads, a few clusters of its own)
so that FID, sFID, precision and recall are all far from their trivial values. More rows than
dimensions keep the covariances full rank, as in real use (10,000 x 50,000 images).
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED = 2023
N_REF = 2500
N_SAMPLE = 3000
POOL_DIM = 2048
SPATIAL_DIM = 2023
CLASSES = 1008
CLUSTERS = 24
LATENT = 6
NOISE = 0.05
# the float32-fallback case: features scaled so that float16 squared norms overflow
N_REF_LARGE = 300
N_SAMPLE_LARGE = 400
LARGE_SCALE = 16.0


def _clustered(rng, n, shape, scale):
    """relu(centre + latent combination of the cluster's directions + isotropic noise).

    A few latent directions per cluster give the features a low intrinsic dimension, like real
    network features, so that k-NN radii vary and precision and recall land in between 0 and 1.
    The sum runs as a fixed sequence of elementwise operations (no BLAS) to stay bit-exact.
    """
    centers, directions = shape
    labels = rng.integers(0, len(centers), n)
    latent = scale * rng.standard_normal((n, directions.shape[1]))
    x = centers[labels]
    for m in range(directions.shape[1]):
        x = x + latent[:, m:m + 1] * directions[labels, m]
    x = x + NOISE * rng.standard_normal(x.shape)
    return np.maximum(x, 0.0).astype(np.float32)


def _shape(rng, dim, clusters=CLUSTERS):
    """Cluster centres and LATENT directions per cluster."""
    centers = 0.25 + 0.35 * rng.standard_normal((clusters, dim))
    return centers, 0.1 * rng.standard_normal((clusters, LATENT, dim))


def _moved(rng, shape, extra):
    """The reference's clusters slightly moved and turned, plus ``extra`` clusters of its own."""
    centers, directions = shape
    new_centers, new_directions = _shape(rng, centers.shape[1], extra)
    return (np.concatenate([centers + 0.03 * rng.standard_normal(centers.shape), new_centers]),
            np.concatenate([directions + 0.03 * rng.standard_normal(directions.shape),
                            new_directions]))


def make_inputs(seed: int = SEED) -> dict[str, np.ndarray]:
    """All fixture inputs, float32: ``ref_pool``, ``sample_pool``, ``ref_spatial``,
    ``sample_spatial``, ``classifier`` (2048 x 1008), ``ref_pool_large``, ``sample_pool_large``."""
    rng = np.random.default_rng(seed)
    pool = _shape(rng, POOL_DIM)
    spatial = _shape(rng, SPATIAL_DIM)
    out = {
        "ref_pool": _clustered(rng, N_REF, pool, 1.0),
        "sample_pool": _clustered(rng, N_SAMPLE, _moved(rng, pool, 2), 1.25),
        "ref_spatial": _clustered(rng, N_REF, spatial, 1.0),
        "sample_spatial": _clustered(rng, N_SAMPLE, _moved(rng, spatial, 2), 1.25),
    }
    # logits pool @ W of a few units: an Inception Score well above 1 and below the class count
    out["classifier"] = (0.15 * rng.standard_normal((POOL_DIM, CLASSES))).astype(np.float32)
    out["ref_pool_large"] = (LARGE_SCALE * out["ref_pool"][:N_REF_LARGE]).astype(np.float32)
    out["sample_pool_large"] = (LARGE_SCALE * out["sample_pool"][:N_SAMPLE_LARGE]).astype(
        np.float32)
    return out


def digest(inputs: dict[str, np.ndarray]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of the inputs, in name order."""
    h = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        h.update(f"{name}{array.shape}{array.dtype}".encode())
        h.update(array.tobytes())
    return h.hexdigest()
