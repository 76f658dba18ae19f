"""``lpips-diversity`` as a metric of ``eval`` and ``score``: the mean LPIPS between seeded random
pairs of distinct fakes (:func:`.diversity.lpips_diversity`), with its bootstrap interval.

It runs a network of its own (LPIPS) on the fakes' images, not on a backbone's features, so it
lives beside that network and reaches the registry through the entry-point group
``imgdist.metrics`` (imgdist's own ``pyproject.toml`` names it), like any other package's metric.
"""

from __future__ import annotations

from ...metrics.registry import IMAGES, Metric, Setting, register
from .names import DIVERSITY_BOOTSTRAP, DIVERSITY_PAIRS, LPIPS_NETS


def _compute(run) -> float:
    from .diversity import lpips_diversity  # torch: only when the metric runs, not for --help

    o = run.options
    d = lpips_diversity(run.fake_source, o.lpips_net, pairs=o.lpips_pairs, seed=o.seed,
                        bootstrap=o.bootstrap or DIVERSITY_BOOTSTRAP, ci=o.ci, weights=o.lpips_weights,
                        device=run.device, on_error=run.on_error, progress=run.progress)
    key = LPIPS_DIVERSITY.name
    run.result.intervals[key] = tuple(d.interval)
    run.result.details.setdefault("ci_level", d.ci)
    run.result.details["lpips_diversity"] = {"network": d.label, "pairs": int(len(d.pairs)), "images": d.images,
                                             "decoded": d.decoded, "ci": d.ci}
    return d.value


def _note(result) -> str | None:
    d = result.details.get("lpips_diversity")
    if d is None:
        return None
    return (f"LPIPS diversity: {d['network']} over {d['pairs']} seeded pairs of distinct fakes ({d['decoded']} of "
            f"{d['images']} images decoded), {d['ci']:.0%} bootstrap interval over the pairs")


LPIPS_DIVERSITY = register(Metric(
    "lpips-diversity", "mean LPIPS between random pairs of distinct fakes (the sample diversity of conditional "
    "generators; Zhu et al. 2017)", _compute, "LPIPS_diversity", lower_is_better=False, needs={IMAGES},
    needs_real=False, per_class=False, published_on=("*", None), note=_note, order=120, in_all=False,
    # no backbone's features are read: the cheapest space when none is named
    space=("pixels", None),
    settings=(Setting("lpips_pairs", DIVERSITY_PAIRS, "lpips-diversity: random pairs of distinct fakes", minimum=1),
              Setting("lpips_net", "alex", "lpips-diversity: the LPIPS network", kind="choice", choices=LPIPS_NETS,
                      in_label=True),
              Setting("lpips_weights", None, "lpips-diversity: one state dict in the lpips package's layout "
                      "instead of the published files (labelled with its hash)", kind="path", in_label=True),
              "seed", "ci"),
    paper="Zhu et al., Toward Multimodal Image-to-Image Translation (BicycleGAN), NeurIPS 2017; LPIPS: Zhang et al., "
          "CVPR 2018"))
