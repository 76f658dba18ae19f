"""Regenerate the ADM-suite parity fixture with OpenAI's ADM evaluator's own functions.

The evaluator is ``evaluations/evaluator.py`` of openai/guided-diffusion (the file diffusion papers
run for FID, sFID, Inception Score, precision and recall). It is not part of this repository and
must not be copied into it: fetch it yourself and pass its path. Run in the peers environment with
tensorflow-cpu added (``pip install tensorflow-cpu``; made with 2.21.0, numpy 2.4.6, scipy 1.17.1):

    /tmp/peers-venv/bin/python tools/peers/make_adm_fixtures.py --evaluator /tmp/adm/evaluator.py

It writes ``tests/fixtures/adm_peers.npz``. The inputs are not stored: ``tests/adm_inputs.py``
generates them bit-exactly from a seed, and the fixture records their digest.

What runs, all from the evaluator module, unmodified except as listed below:

* ``Evaluator.compute_statistics`` (``np.mean``, ``np.cov(rowvar=False)``) on the pool (2048-d)
  and spatial (2023-d) features, then ``FIDStatistics.frechet_distance`` (sample against
  reference, the evaluator's order) for FID and sFID;
* ``Evaluator.compute_inception_score`` on the sample pool features, with the default split size
  (one split) and with ``split_size=200`` (15 splits), through the evaluator's TF softmax graph
  (``softmax_batch_size`` 512, so several batches);
* ``Evaluator.compute_prec_recall`` (``ManifoldEstimator`` with its own batch sizes and k = 3:
  ``manifold_radii`` and ``evaluate_pr``, float16 distance blocks with the float32 fallback) on
  the pool features; plus the per-point decisions from the same objects: the radii from
  ``manifold_radii`` and one ``DistanceBlock.less_thans`` call, which is exactly the one call
  ``evaluate_pr`` makes when both sets fit one 10,000-row block (checked against its result);
* the same precision/recall on 16x larger features (``*_large``), whose float16 squared norms
  overflow, so the evaluator takes its float32 fallback.

Compatibility patches (the only changes to the evaluator's behaviour):

1. ``scipy.linalg.sqrtm(A, disp=False)``: SciPy deprecated ``disp`` in 1.16 and removes it in 1.18.
   The module's ``linalg`` is replaced by a shim whose ``sqrtm(A, disp=False)`` returns
   ``(scipy.linalg.sqrtm(A), errest)`` with SciPy's old error estimate
   ``||X @ X - A||_F / ||A||_F``, as ``disp=False`` did; the evaluator ignores ``errest``.
2. ``np.bool``: removed in NumPy 1.24, restored as an alias of ``np.bool_`` in NumPy 2.0. The
   script sets ``np.bool = np.bool_`` only where it is missing (it is present in NumPy 2.4.6, so
   this patch was not needed for the stored fixture); the fixture records which patches ran.

One substitution: the evaluator reads the 2015 Inception graph ``classify_image_graph_def.pb``
(which it downloads) for both its feature graph and its softmax graph. The features here are
generated, so the feature graph never runs, and the softmax graph needs only the classifier
weights, the second input of the graph's ``softmax/logits/MatMul``. The script writes a small
stand-in graph file under that name in a temporary working directory, holding the stand-in
2048 x 1008 weights (``tests/adm_inputs.py``) as the second input of a ``softmax/logits/MatMul``
node, plus nodes named ``ExpandDims``, ``pool_3`` and ``mixed_6/conv`` so that the evaluator's own
``_create_feature_graph`` and ``_create_softmax_graph`` import it unchanged.

No imgdist code is used: the fixture is an independent reference for ``tests/test_adm_parity.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np
import scipy.linalg

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "adm_peers.npz"
IS_SPLIT_SMALL = 200


def load_evaluator(path: Path) -> tuple[types.ModuleType, list[str]]:
    """Import the evaluator file as a module and apply the compatibility patches."""
    patches = []
    if not hasattr(np, "bool"):
        np.bool = np.bool_
        patches.append("np.bool = np.bool_ (NumPy >= 1.24 lacks np.bool)")
    spec = importlib.util.spec_from_file_location("adm_evaluator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def sqrtm(a, disp=True):
        root = scipy.linalg.sqrtm(a)
        if disp:
            return root
        errest = np.linalg.norm(root @ root - a, "fro") / np.linalg.norm(a, "fro")
        return root, errest

    module.linalg = types.SimpleNamespace(sqrtm=sqrtm)
    patches.append("linalg.sqrtm(A, disp=False) -> (scipy.linalg.sqrtm(A), errest) "
                   "(SciPy 1.18 removes disp)")
    return module, patches


def write_stand_in_graph(path: Path, classifier: np.ndarray) -> None:
    """A GraphDef with the node names the evaluator imports; the classifier is the stand-in."""
    import tensorflow.compat.v1 as tf

    graph = tf.Graph()
    with graph.as_default():
        image = tf.placeholder(tf.float32, [1, None, None, 3], name="DecodeJpeg")
        expand = tf.identity(image, name="ExpandDims")
        # never run: only their names must resolve, the features are fed in directly
        pool = tf.tile(tf.reduce_mean(expand, [1, 2], keepdims=True)[..., :1], [1, 1, 1, 2048],
                       name="pool_3")
        tf.tile(expand[:, :17, :17, :1], [1, 1, 1, 192], name="mixed_6/conv")
        weights = tf.constant(classifier, name="softmax/weights")
        tf.matmul(tf.reshape(pool, [-1, 2048]), weights, name="softmax/logits/MatMul")
    path.write_bytes(graph.as_graph_def().SerializeToString())


@contextlib.contextmanager
def working_directory(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def frechet(evaluator, ref: np.ndarray, sample: np.ndarray) -> float:
    ref_stats = evaluator.compute_statistics(ref)
    sample_stats = evaluator.compute_statistics(sample)
    return float(sample_stats.frechet_distance(ref_stats))


def precision_recall(evaluator, ref: np.ndarray, sample: np.ndarray, prefix: str) -> dict:
    """The evaluator's precision/recall and its per-point decisions from the same objects."""
    manifold = evaluator.manifold_estimator
    precision, recall = evaluator.compute_prec_recall(ref, sample)
    radii_ref = manifold.manifold_radii(ref)
    radii_sample = manifold.manifold_radii(sample)
    assert max(len(ref), len(sample)) <= min(manifold.row_batch_size, manifold.col_batch_size)
    ref_in, sample_in = manifold.distance_block.less_thans(ref, radii_ref, sample, radii_sample)
    assert sample_in.mean() == precision and ref_in.mean() == recall
    # float16 path or float32 fallback: only the float16 block's values are all float16 numbers
    distances = manifold.distance_block.pairwise_distances(sample, ref)
    float16 = np.array_equal(distances, distances.astype(np.float16).astype(np.float32))
    return {
        f"{prefix}precision": np.float64(precision),
        f"{prefix}recall": np.float64(recall),
        f"{prefix}radii_ref": radii_ref[:, 0],
        f"{prefix}radii_sample": radii_sample[:, 0],
        f"{prefix}sample_in": sample_in[:, 0],  # counted for precision
        f"{prefix}ref_in": ref_in[:, 0],  # counted for recall
        f"{prefix}float16": np.bool_(float16),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluator", type=Path, required=True,
                        help="path to openai/guided-diffusion evaluations/evaluator.py")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from adm_inputs import SEED, digest, make_inputs

    inputs = make_inputs()
    module, patches = load_evaluator(args.evaluator.resolve())
    tf = module.tf
    results = {}
    with tempfile.TemporaryDirectory() as tmp, working_directory(Path(tmp)):
        write_stand_in_graph(Path(module.INCEPTION_V3_PATH), inputs["classifier"])
        evaluator = module.Evaluator(tf.Session(config=tf.ConfigProto()))
        results["fid"] = np.float64(frechet(evaluator, inputs["ref_pool"], inputs["sample_pool"]))
        results["sfid"] = np.float64(frechet(evaluator, inputs["ref_spatial"],
                                             inputs["sample_spatial"]))
        results["is"] = np.float64(evaluator.compute_inception_score(inputs["sample_pool"]))
        results[f"is_split{IS_SPLIT_SMALL}"] = np.float64(evaluator.compute_inception_score(
            inputs["sample_pool"], split_size=IS_SPLIT_SMALL))
        results.update(precision_recall(evaluator, inputs["ref_pool"], inputs["sample_pool"], ""))
        results.update(precision_recall(evaluator, inputs["ref_pool_large"],
                                        inputs["sample_pool_large"], "large_"))

    meta = {
        "seed": np.int64(SEED),
        "inputs_sha256": np.array(digest(inputs)),
        "evaluator_sha256": np.array(hashlib.sha256(args.evaluator.read_bytes()).hexdigest()),
        "patches": np.array(json.dumps(patches)),
        "is_split_small": np.int64(IS_SPLIT_SMALL),
        "versions": np.array(json.dumps({p: version(p) for p in (
            "tensorflow-cpu", "numpy", "scipy")})),
        "onednn": np.array(os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")),
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **results, **meta)
    for key, value in results.items():
        shown = value if np.ndim(value) == 0 else f"{value.dtype} {value.shape} mean {value.mean()}"
        print(f"{key:24s} {shown}")
    for key, value in meta.items():
        print(f"{key:24s} {value}")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
