"""Each chosen metric, computed once from extracted features, into a :class:`~imgdist.results.Result`.

:class:`MetricRun` holds one evaluation's inputs and the nearest-neighbour passes that several
metrics share (the reals' k-NN radii and nearest other real; each fake's nearest real), so that
realism, authenticity, copies and the per-image table cost one pass each over real x real and
fake x real, however many of them are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import defaults as D
from . import metrics as M
from .errors import ImgdistError
from .features import Features
from .metrics._shard import ALONE, Shard
from .options import CMMD_BACKBONE, CMMD_MODE, MetricOptions
from .results import Result
from .stats import GaussianStats


@dataclass
class PerImage:
    """One row per fake: what imgdist knows about each generated image (``--per-image out.csv``)."""

    fake: list[str]
    realism: np.ndarray          # Kynkäänniemi et al. 2019, eq. 3
    nearest_real: list[str]
    distance: np.ndarray         # to the nearest real
    inside: np.ndarray           # inside some real's k-NN ball (counted by precision)
    authentic: np.ndarray        # farther from its nearest real than that real from its own (Alaa et al.)
    copy: np.ndarray             # nearer its nearest real than the copies threshold

    COLUMNS = ("fake", "realism", "nearest_real", "distance", "inside_real_manifold", "authentic", "copy")

    def rows(self):
        for i, name in enumerate(self.fake):
            yield (name, float(self.realism[i]), self.nearest_real[i], float(self.distance[i]),
                   _yes(self.inside[i]), _yes(self.authentic[i]), _yes(self.copy[i]))

    def write_csv(self, path) -> None:
        import csv
        import os
        import tempfile

        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".imgdist-per-image-", suffix=".csv", dir=folder)
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(self.COLUMNS)
                for row in self.rows():
                    writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)  # never a half-written table
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _yes(flag) -> str:
    return "yes" if bool(flag) else "no"


@dataclass
class MetricRun:
    """The inputs of one evaluation and the passes its metrics share."""

    real: Features | GaussianStats
    fake: Features | GaussianStats
    options: MetricOptions
    result: Result
    force: bool = False
    progress: bool = False
    real_test: Features | None = None
    chosen: tuple[str, ...] = ()
    #: this process's share of the k-NN passes, KID subsets and FID-infinity subsets (torchrun)
    shard: Shard = ALONE
    _shared: dict = field(default_factory=dict)

    @property
    def real_stats(self) -> GaussianStats:
        return self.real if isinstance(self.real, GaussianStats) else self.real.stats

    @property
    def fake_stats(self) -> GaussianStats:
        return self.fake if isinstance(self.fake, GaussianStats) else self.fake.stats

    @property
    def xr(self) -> np.ndarray | None:
        return None if isinstance(self.real, GaussianStats) else self.real.features

    @property
    def xf(self) -> np.ndarray | None:
        return None if isinstance(self.fake, GaussianStats) else self.fake.features

    # ---------------------------------------------------------------- shared passes

    def _once(self, key, make):
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def real_neighbours(self, k: int | None = None) -> M.RealNeighbours:
        """The real x real pass at radius ``k``; None: the one authenticity and copies share, which
        need only each real's nearest other real (k = 1, so 2 reals suffice), unless realism's
        ``pr_k`` pass is made anyway."""
        if k is None:
            k = self.options.pr_k if "realism" in self.chosen else 1
        return self._once(("real_nn", k), lambda: M.real_neighbours(self.xr, k=k))

    def realism(self) -> M.Realism:
        return self._once("realism", lambda: M.realism(self.xr, self.xf, k=self.options.pr_k,
                                                       prune_percentile=D.REALISM_PRUNE_PERCENTILE,
                                                       real_radii=self.real_neighbours(self.options.pr_k).radii))

    def fake_nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """Each fake's nearest real: from realism's pass where it is made anyway."""
        if "realism" in self.chosen:
            r = self.realism()
            return r.nearest_real, r.distance
        return self._once("fake_nearest", lambda: M.nearest_real(self.xr, self.xf))

    def authenticity(self) -> M.Authenticity:
        return self._once("authenticity", lambda: M.authenticity(
            self.xr, self.xf, real_nn=self.real_neighbours(), fake_nearest=self.fake_nearest()))

    def copies(self) -> M.Copies:
        return self._once("copies", lambda: M.copies(
            self.xr, self.xf, percentile=self.options.copies_percentile, real_nn=self.real_neighbours(),
            fake_nearest=self.fake_nearest()))

    def per_image(self) -> PerImage:
        r, a, c = self.realism(), self.authenticity(), self.copies()
        is_copy = np.zeros(len(self.xf), dtype=bool)
        is_copy[c.fake_index] = True
        return PerImage(fake=list(self.fake.names), realism=r.realism,
                        nearest_real=[self.real.names[j] for j in r.nearest_real], distance=r.distance,
                        inside=r.inside, authentic=a.authentic, copy=is_copy)

    # ---------------------------------------------------------------- metrics

    def compute(self, metric: str) -> None:
        getattr(self, "_" + metric.replace("-", "_"))()

    def _fid(self):
        xr, xf = self.xr, self.xf
        if xr is not None and xf is not None and min(len(xr), len(xf)) < xr.shape[1]:
            # fewer images than dimensions: the same distance from the features, exactly and
            # without any d x d decomposition (see metrics.frechet.fid_from_features)
            self.real_stats.check_comparable(self.fake_stats, self.force)
            self.result.values["fid"] = M.fid_from_features(xr, xf)
        else:
            self.result.values["fid"] = self.real_stats.frechet_distance(self.fake_stats, force=self.force)

    def _kid(self):
        o, result = self.options, self.result
        value, std = M.kid(self.xr, self.xf, subsets=o.kid_subsets, subset_size=o.kid_subset_size, seed=o.seed,
                           shard=self.shard)
        result.values["kid"] = value
        if std is None:  # every subset would be the whole set: one estimate, no spread to report
            result.details["kid_subsets"] = "full sets"
        else:
            result.stds["kid"] = std
            result.details["kid_subsets"] = f"{o.kid_subsets} x {min(o.kid_subset_size, len(self.xr), len(self.xf))}"

    def _is(self):
        self.result.values["is"], self.result.stds["is"] = M.inception_score(self.fake.logits,
                                                                            splits=self.options.is_splits)

    def _knn_metrics(self):
        """Precision, recall, density, coverage: one set of distance passes for whichever are
        chosen (real x real for both k, fake x fake only where precision/recall need it, real x fake)."""
        o, chosen = self.options, set(self.chosen)
        pr = bool(chosen & {"precision", "recall"})
        r = self._once("prdc", lambda: M.prdc(self.xr, self.xf, k=o.dc_k, pr_k=o.pr_k, shard=self.shard,
                                               precision_recall=pr))
        for name in ("precision", "recall", "density", "coverage"):
            if name in chosen:
                self.result.values[name] = getattr(r, name)
        if pr:
            self.result.details["precision_recall_k"] = o.pr_k
        if chosen & {"density", "coverage"}:
            self.result.details["density_coverage_k"] = o.dc_k

    _precision = _recall = _density = _coverage = _knn_metrics

    def _fid_inf(self):
        o = self.options
        fit = M.fid_infinity(self.xr, self.xf, sizes=o.fid_inf_sizes, seed=o.seed, progress=self.progress,
                             shard=self.shard)
        self.result.values["fid-inf"] = fit.value
        self.result.details["fid_inf_fit"] = {"slope": fit.slope, "sizes": fit.sizes, "fids": fit.fids,
                                              "r2": fit.r2, "residual_rms": fit.residual_rms}

    def _cmmd(self):
        """CMMD (Jayasumana et al. 2024) on L2-normalised embeddings, sigma 10, x1000."""
        self.result.values["cmmd"] = M.cmmd(self.xr, self.xf)
        p = self.real_stats.provenance
        if (p.backbone, p.resize_mode) != (CMMD_BACKBONE, CMMD_MODE):
            self.result.warnings.append(
                f"CMMD as published uses {CMMD_BACKBONE} features in resize mode {CMMD_MODE}; this one is on "
                f"{p.backbone} ({p.resize_mode}) and is not comparable with published CMMD values")

    def _vendi(self):
        """Vendi of the fakes and, for reference, of the reals, at every order q."""
        orders = {}
        for side, x in (("fake", self.xf), ("real", self.xr)):
            if x is None:
                continue
            spectrum = M.vendi_spectrum(x, name=side)
            orders[side] = {_order_name(q): M.vendi_from_spectrum(spectrum, q) for q in D.VENDI_ORDERS}
        self.result.values["vendi"] = orders["fake"]["1"]
        if "real" in orders:
            self.result.values["vendi-real"] = orders["real"]["1"]
        self.result.details["vendi_orders"] = orders

    def _authenticity(self):
        self.result.values["authenticity"] = self.authenticity().value

    def _copies(self):
        c = self.copies()
        self.result.values["copies"] = c.count
        self.result.details["copies"] = {
            "threshold": c.threshold, "percentile": c.percentile, "fraction": c.fraction,
            # the closest first; the full list is in --per-image
            "pairs": [{"fake": _name(self.fake, i, "fake"), "real": _name(self.real, j, "real"), "distance": float(d)}
                      for i, j, d in zip(c.fake_index[:100], c.real_index[:100], c.distance[:100])],
            "fake_index": c.fake_index.tolist(), "real_index": c.real_index.tolist(),
        }

    def _realism(self):
        r = self.realism()
        self.result.values["realism"] = float(np.median(r.realism))
        self.result.details["realism"] = {"k": r.k, "prune_percentile": r.prune_percentile,
                                          "share_at_least_1": float(np.mean(r.realism >= 1.0))}

    def _ct(self):
        if self.real_test is None or self.real_test.features is None:
            raise ImgdistError("ct: needs held-out real images: pass --real-test SRC (real_test=...)")
        ct = M.ct_score(self.xr, self.real_test.features, self.xf, n_cells=self.options.ct_cells,
                        min_fake_per_cell=D.CT_MIN_FAKE_PER_CELL, seed=self.options.seed)
        self.result.values["ct"] = ct.value
        self.result.counts["real_test"] = len(self.real_test.features)
        self.result.details["ct"] = {"cells": ct.n_cells, "cells_used": int(ct.used.sum()),
                                     "fake_fraction_used": ct.fake_fraction_used, "z": ct.z,
                                     "weight": ct.weight, "fake_count": ct.fake_count,
                                     "test_count": ct.test_count, "min_fake_per_cell": ct.min_fake_per_cell}


def _name(features: Features, i, side: str) -> str:
    """The image's name, or its position where the features came without names (the streaming
    :class:`~imgdist.evaluation.Evaluator`)."""
    names = features.names
    return names[i] if len(names) == len(features.features) else f"{side} #{int(i)}"


def _order_name(q: float) -> str:
    return "inf" if np.isinf(q) else f"{q:g}"
