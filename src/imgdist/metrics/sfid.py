"""sFID: the Fréchet distance of spatial Inception features.

Paper: C. Nash, J. Menick, S. Dieleman, P. Battaglia, "Generating Images with Sparse
Representations", ICML 2021, as OpenAI's ADM evaluator (guided-diffusion
``evaluations/evaluator.py``) computes it: the first 7 channels of Inception's ``mixed_6/conv``
maps (``Mixed_6d.branch1x1`` after BatchNorm and ReLU, 17 x 17 x 7), flattened in (height, width,
channel) order: 2,023 values per image. The backbone computes them as its ``sfid`` output in the
same pass as the pool features; their Gaussian statistics stream like the pool layer's, and the
distance is :func:`imgdist.metrics.frechet.frechet_distance` of the two.
"""

from __future__ import annotations

from .frechet import frechet_distance, mean_cov
from .registry import Metric, register


def _sfid(run) -> float:
    return run.real.extra["sfid"].frechet_distance(run.fake.extra["sfid"], force=run.force)


SFID = register(Metric(
    "sfid", "Fréchet distance of Inception's mixed_6/conv maps, first 7 channels (Nash et al. 2021; ADM's "
    "evaluator)", _sfid, "sFID", "sFD", lower_is_better=True, covariance=True, outputs=("sfid",), per_class=False,
    order=100, paper="Nash et al., Generating Images with Sparse Representations, ICML 2021",
    function=lambda sets, options: frechet_distance(*mean_cov(sets.extra["sfid"][0]),
                                                    *mean_cov(sets.extra["sfid"][1]))))
