"""Which metrics exist, what each needs, and their settings, checked before any extraction starts.

:func:`parse_metrics` turns ``"fid,kid,prdc"`` (or ``"all"``) into canonical names;
:class:`MetricOptions` holds every metric setting (the defaults of :mod:`imgdist.defaults`) and
refuses a bad one on construction; :meth:`MetricOptions.check_sets` refuses what the sizes of the
sets already tell (a k larger than a set, splits larger than the fakes) before minutes of work.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import defaults as D
from .checks import check_ct_sizes, check_fraction, check_int, check_number, option
from .errors import ImgdistError

METRICS = ("fid", "kid", "is", "precision", "recall", "density", "coverage", "fid-inf", "cmmd",
           "vendi", "authenticity", "ct", "copies", "realism")
ALIASES = {"prdc": ("precision", "recall", "density", "coverage"), "pr": ("precision", "recall"),
           "dc": ("density", "coverage"), "fid_inf": ("fid-inf",), "fidinf": ("fid-inf",),
           "memorization": ("authenticity", "ct", "copies")}
#: metrics that need per-image features of both sets (not just the Gaussian statistics)
NEEDS_FEATURES = frozenset({"kid", "precision", "recall", "density", "coverage", "fid-inf", "cmmd", "vendi",
                            "authenticity", "ct", "copies", "realism"})
#: metrics defined on CLIP image embeddings only (Jayasumana et al. 2024)
NEEDS_CLIP = frozenset({"cmmd"})
#: CMMD as published: CLIP ViT-L/14 at 336 px, the reference code's resize
CMMD_BACKBONE, CMMD_MODE = "clip-vit-l14-336", "cmmd"
#: metrics that need the backbone's classifier logits of the fakes
NEEDS_LOGITS = frozenset({"is"})
#: metrics that need a held-out real set (``real_test`` / ``--real-test``)
NEEDS_REAL_TEST = frozenset({"ct"})


def default_backbone(chosen) -> tuple[str, str | None]:
    """``(backbone, resize mode)`` when none is named: CMMD's own encoder and resize when CMMD is all
    that is asked for, else Inception (its default mode)."""
    from . import defaults as D

    if chosen and set(chosen) <= NEEDS_CLIP:
        return CMMD_BACKBONE, CMMD_MODE
    if set(chosen) & NEEDS_CLIP:
        raise ImgdistError("cmmd needs CLIP features, and the other metrics would then be computed on CLIP too: "
                           f"name the backbone (--backbone {CMMD_BACKBONE} for CMMD as published), or run CMMD "
                           "on its own")
    return D.EVAL_BACKBONE, None


def parse_metrics(metrics, *, has_logits: bool = True, features: bool = True,
                  real_test: bool = False, clip: bool = False) -> tuple[str, ...]:
    """``'fid,kid,prdc'`` or a list -> canonical names in canonical order.

    ``'all'`` means every metric that applies: without classifier logits (``has_logits``) no
    Inception Score, with a statistics file on a side (``features`` False) only FID, C_T only
    with a held-out real set (``real_test``), CMMD only on CLIP features (``clip``).
    Metrics named explicitly are kept; :meth:`MetricOptions.check_sets` explains why one cannot be
    computed.
    """
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    chosen = set()
    for raw in names:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name == "all":
            chosen.update(m for m in METRICS if (has_logits or m not in NEEDS_LOGITS)
                          and (features or m not in NEEDS_FEATURES | NEEDS_LOGITS)
                          and (real_test or m not in NEEDS_REAL_TEST)
                          and (clip or m not in NEEDS_CLIP))
        elif name in ALIASES:
            chosen.update(ALIASES[name])
        elif name in METRICS:
            chosen.add(name)
        else:
            raise ImgdistError(f"unknown metric {raw!r}; choose from {', '.join(METRICS)} "
                               f"(or {', '.join(ALIASES)}, all)")
    if not chosen:
        raise ImgdistError("no metric chosen")
    return tuple(m for m in METRICS if m in chosen)


@dataclass(frozen=True)
class MetricOptions:
    """Every metric setting; the keyword names are the CLI flags with ``_`` for ``-``."""

    kid_subsets: int = D.KID_SUBSETS
    kid_subset_size: int = D.KID_SUBSET_SIZE
    is_splits: int = D.IS_SPLITS
    pr_k: int = D.PR_K
    dc_k: int = D.DC_K
    fid_inf_sizes: tuple[int, ...] | None = None
    bootstrap: int = D.BOOTSTRAP
    ci: float = D.CI
    seed: int = D.SEED
    ct_cells: int = D.CT_CELLS
    copies_percentile: float = D.COPIES_PERCENTILE

    def __post_init__(self):
        put = object.__setattr__  # frozen: normalise the values once, here
        put(self, "kid_subsets", check_int("kid_subsets", self.kid_subsets, 1))
        put(self, "kid_subset_size", check_int("kid_subset_size", self.kid_subset_size, 2))
        put(self, "is_splits", check_int("is_splits", self.is_splits, 1))
        put(self, "pr_k", check_int("pr_k", self.pr_k, 1))
        put(self, "dc_k", check_int("dc_k", self.dc_k, 1))
        put(self, "bootstrap", check_int("bootstrap", self.bootstrap, 0))
        put(self, "ci", check_fraction("ci", self.ci))
        put(self, "seed", check_int("seed", self.seed, 0))
        put(self, "ct_cells", check_int("ct_cells", self.ct_cells, 1))
        put(self, "copies_percentile", check_number("copies_percentile", self.copies_percentile, 0.0, 100.0))
        if self.fid_inf_sizes is not None:
            sizes = tuple(check_int("fid_inf_sizes", s, 2) for s in self.fid_inf_sizes)
            if len(set(sizes)) < 2:
                raise ImgdistError(f"{option('fid_inf_sizes')} needs at least two different sizes, got {sizes}")
            put(self, "fid_inf_sizes", tuple(sorted(set(sizes))))

    def check_sets(self, chosen, counts: dict[str, int], *, has_logits: bool = True,
                   stats_sides: tuple[str, ...] = ()) -> None:
        """Refuse, before extraction, what the set sizes and the sides' kinds already rule out.

        ``counts``: images per side (``real``, ``fake`` and, where given, ``real_test``);
        ``stats_sides``: sides given as statistics files (mu and sigma only).
        """
        chosen = set(chosen)
        if chosen & NEEDS_REAL_TEST and "real_test" not in counts:
            raise ImgdistError("ct: the data-copying test C_T needs held-out real images the generator never "
                               "saw; pass them with --real-test SRC (real_test=...)")
        for side in stats_sides:
            missing = [m for m in sorted(chosen) if m in NEEDS_FEATURES or (m in NEEDS_LOGITS and side == "fake")]
            if missing or self.bootstrap:
                what = ", ".join(missing) + (" and " if missing and self.bootstrap else "") + \
                    ("bootstrap intervals" if self.bootstrap else "")
                raise ImgdistError(f"{what} need(s) images, but {side} is a statistics file (it holds only "
                                   "mu and sigma); pass the images, or use --metrics fid")
        if chosen & NEEDS_LOGITS and not has_logits:
            raise ImgdistError("is: the Inception Score needs a classifier, and this backbone has no logits; "
                               "use --backbone inception (or a backbone with classes in 'imgdist backbones')")
        pairwise = [m for m in METRICS if m in chosen & {"fid", "kid", "fid-inf"}]
        for side, n in counts.items():
            if side == "real_test":
                continue
            if n < 2 and pairwise:
                raise ImgdistError(f"{', '.join(pairwise)}: the {side} set has {n} image(s); a covariance "
                                   "needs at least 2 images per set")
        real, fake = counts.get("real"), counts.get("fake")
        if "ct" in chosen and real is not None and self.ct_cells > real:
            raise ImgdistError(f"ct: {option('ct_cells')} {self.ct_cells} is more than the {real} real images")
        if "ct" in chosen:
            check_ct_sizes(counts, self.ct_cells)
        if chosen & {"authenticity", "copies", "realism"} and real is not None and real < 2:
            raise ImgdistError("authenticity, copies and realism need at least 2 real images (each real's "
                               "nearest other real)")
        if "is" in chosen and fake is not None and self.is_splits > fake:
            raise ImgdistError(f"is: {option('is_splits')} {self.is_splits} is more than the {fake} fake images")
        # precision/recall need k-NN radii in both sets, realism in the real set only
        k_sides = ("real", "fake") if chosen & {"precision", "recall"} else ("real",) if "realism" in chosen else ()
        for side in k_sides:
            n = counts.get(side)
            if n is not None and self.pr_k >= n:
                raise ImgdistError(f"{'precision/recall' if len(k_sides) == 2 else 'realism'}: {option('pr_k')} "
                                   f"{self.pr_k} needs more than {self.pr_k} images per set, and the {side} set has {n}")
        if chosen & {"density", "coverage"} and real is not None and self.dc_k >= real:
            raise ImgdistError(f"density/coverage: {option('dc_k')} {self.dc_k} needs more than {self.dc_k} real images, "
                               f"and the real set has {real}")
        if "fid-inf" in chosen and fake is not None:
            if fake < 3:
                raise ImgdistError(f"fid-inf needs at least 3 fake images, got {fake}")
            if self.fid_inf_sizes and max(self.fid_inf_sizes) > fake:
                raise ImgdistError(f"{option('fid_inf_sizes')} go up to {max(self.fid_inf_sizes)}, more "
                                   f"than the {fake} fake images")
