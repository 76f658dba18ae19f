"""The streaming :class:`Evaluator`: a training-loop metric, updated batch by batch.

Like a torchmetrics metric, its state is typed and small: per side the float64 Gaussian
statistics (count, mean, centred scatter), and per-image features, logits or a backbone's extra
outputs only where a chosen metric reads them. ``state_dict()`` holds tensors and plain values
only (``torch.load(..., weights_only=True)`` reads it), ``load_state_dict()`` checks it as
untrusted input, and under an initialised ``torch.distributed`` process group ``compute()``
combines every rank's state itself (statistics merged in rank order, per-image rows gathered),
without changing any rank's own state.

It runs the same :class:`~imgdist.evaluation.plan.Plan` as :func:`~imgdist.evaluation.run.evaluate`.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import defaults as D
from ..errors import ImgdistError
from ..extraction.features import FeatureExtractor, Features
from ..extraction.provenance import Provenance
from ..extraction.stats import GaussianStats
from ..metrics import registry as R
from ..metrics._arrays import covariance_defect
from ..metrics.registry import PROMPTS, REAL_TEST
from .compute import evaluate_features
from .options import MetricOptions
from .plan import make_plan, request
from .results import Result

#: the layout of ``state_dict()``; a different one is refused on load
STATE_VERSION = 1
SIDES = ("real", "fake", "real_test")


class _Side:
    """One side's streaming state."""

    def __init__(self, provenance: Provenance, frozen: GaussianStats | None = None):
        self.stats = frozen if frozen is not None else GaussianStats(provenance=provenance)
        self.frozen = frozen is not None
        self.features: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []
        self.extra: dict[str, GaussianStats] = {}
        self.extra_features: dict[str, list[np.ndarray]] = {}
        self.prompts: list[str] = []
        self.text: list[np.ndarray] = []
        self.truncated: list[np.ndarray] = []

    def rows(self, parts: list) -> np.ndarray | None:
        return np.concatenate(parts) if parts else None


class Evaluator:
    """Streaming evaluation for training loops.

    >>> ev = Evaluator(backbone="efficientnet-lite0", metrics="fid,kid")
    >>> ev.update(real=real_batch)          # uint8 N x 3 x H x W tensors, or float in [0, 1]
    >>> ev.update(fake=generator(z))
    >>> ev.compute().values                 # {'fid': ..., 'kid': ...}
    >>> ev.reset_fake()                     # next checkpoint, real statistics kept

    ``real_stats``: a :class:`GaussianStats` or a statistics file standing for the real side (then
    only metrics that need no per-image real features). ``update(real_test=...)`` feeds the
    held-out set of C_T. Every metric is available, or refused here with the reason.
    """

    def __init__(self, backbone=D.EVAL_BACKBONE, *, metrics=None, real_stats=None, weights=None, mode=None,
                 dims=None, device=D.DEVICE, precision="fp32", **settings):
        options = MetricOptions.from_keywords(settings)
        self.extractor = FeatureExtractor(backbone, weights=weights, mode=mode, dims=dims, device=device,
                                          precision=precision, progress=False)
        frozen = None
        if real_stats is not None:
            frozen = real_stats if isinstance(real_stats, GaussianStats) else GaussianStats.load(real_stats)
            frozen.provenance.check_compatible(self.extractor.provenance, "real statistics vs the backbone")
        if metrics is None:  # the default metrics (with statistics up front: those that need no features)
            metrics = [m for m in R.default_metrics() if frozen is None or R.FEATURES not in R.get(m).needs]
        asked = request(metrics)
        # a held-out set only where a metric named explicitly reads one ('all' leaves C_T out)
        held_out = any(REAL_TEST in R.get(name).needs for name in asked.names)
        self.plan = make_plan(asked, options, spec=self.extractor.spec,
                              stats_sides=("real",) if frozen is not None else (),
                              counts={"real_test": None} if held_out else {}, real_test=held_out)
        self.metrics = self.plan.metrics
        self.options = options
        self._frozen = frozen
        self._sides = {side: _Side(self.extractor.provenance, frozen if side == "real" else None) for side in SIDES}

    # ---------------------------------------------------------------- state

    def reset_fake(self) -> None:
        """Forget the generated images (the next checkpoint); the real side is kept."""
        self._sides["fake"] = _Side(self.extractor.provenance)

    def reset(self) -> None:
        """Forget every update (statistics given up front stay)."""
        self._sides = {side: _Side(self.extractor.provenance, self._frozen if side == "real" else None)
                       for side in SIDES}

    def to(self, device) -> "Evaluator":
        """Run the network (and accumulate) on ``device`` from now on; the state stays as it is."""
        self.extractor.to(device)
        return self

    def update(self, real=None, fake=None, real_test=None, prompts=None) -> None:
        """Embed a batch of each given side: uint8 N x H x W x C arrays or N x C x H x W tensors
        (float in [0, 1] is rounded to uint8, as saving would). ``prompts``: one per fake image,
        for the metrics that read them (``clip-score``)."""
        wants_prompts = self.plan.needs(PROMPTS)
        if fake is not None and wants_prompts and (prompts is None or len(prompts) != len(fake)):
            raise ImgdistError(f"{', '.join(m for m in self.metrics if PROMPTS in R.get(m).needs)}: update(fake=..., "
                               "prompts=[...]) needs one prompt per fake image")
        if prompts is not None and not wants_prompts:
            raise ImgdistError("update(prompts=...): no chosen metric reads prompts (clip-score does)")
        for side, images in (("real", real), ("fake", fake), ("real_test", real_test)):
            if images is None:
                continue
            state = self._sides[side]
            if state.frozen:
                raise ImgdistError("real statistics were given up front; update(real=...) is not allowed")
            if side == "real_test" and not self.plan.real_test:
                raise ImgdistError("update(real_test=...): no chosen metric reads a held-out set (only ct does)")
            keeps = self.plan.keeps(side)
            out = self.extractor.embed_outputs(images, logits=keeps.logits, extra=keeps.extra)
            state.stats.update(out["features"])
            if keeps.features or side == "real_test":
                state.features.append(out["features"])
            if keeps.logits:
                state.logits.append(out["logits"])
            for name in keeps.extra:
                state.extra.setdefault(name, GaussianStats(provenance=self.extractor.provenance)).update(out[name])
                if keeps.keep_extra:
                    state.extra_features.setdefault(name, []).append(out[name])
            if keeps.text:
                from ..extraction.text import embed_prompts

                text, truncated = embed_prompts(self.extractor.text_tower(), [str(p) for p in prompts])
                state.prompts += [str(p) for p in prompts]
                state.text.append(text)
                state.truncated.append(truncated)

    def merge(self, other: "Evaluator") -> None:
        """Fold another evaluator's updates in (same backbone and metrics)."""
        if other.metrics != self.metrics:
            raise ImgdistError(f"cannot merge evaluators of different metrics ({', '.join(self.metrics)} vs "
                               f"{', '.join(other.metrics)})")
        for side in SIDES:
            mine, theirs = self._sides[side], other._sides[side]
            if mine.frozen:
                continue
            mine.stats.merge(theirs.stats)
            mine.features += theirs.features
            mine.logits += theirs.logits
            for name, stats in theirs.extra.items():
                mine.extra.setdefault(name, GaussianStats(provenance=stats.provenance)).merge(stats)
            for name, parts in theirs.extra_features.items():
                mine.extra_features.setdefault(name, []).extend(parts)
            mine.prompts += theirs.prompts
            mine.text += theirs.text
            mine.truncated += theirs.truncated

    def state_dict(self) -> dict:
        """The state as tensors and plain values (``torch.save`` it with a checkpoint)."""
        out = {"version": STATE_VERSION, "metrics": list(self.metrics),
               "provenance": self.extractor.provenance.to_dict()}
        for side in SIDES:
            s = self._sides[side]
            out[side] = {"frozen": s.frozen, "stats": _stats_state(s.stats),
                         "features": _tensor(s.rows(s.features)), "logits": _tensor(s.rows(s.logits)),
                         "extra": {name: _stats_state(st) for name, st in s.extra.items()},
                         "extra_features": {name: _tensor(s.rows(parts)) for name, parts in s.extra_features.items()},
                         "prompts": list(s.prompts), "text": _tensor(s.rows(s.text)),
                         "prompts_truncated": _tensor(s.rows(s.truncated))}
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (from this or another process), checked first: the
        same metrics and provenance, finite statistics of consistent shapes, per-image rows that
        match the counts. Nothing changes unless all of it holds."""
        where = "Evaluator state"
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ImgdistError(f"{where}: not an imgdist Evaluator state of version {STATE_VERSION}")
        if list(state.get("metrics", ())) != list(self.metrics):
            raise ImgdistError(f"{where}: made for metrics {state.get('metrics')}, this evaluator computes "
                               f"{list(self.metrics)}")
        provenance = Provenance.from_dict(state.get("provenance") or {})
        provenance.check_compatible(self.extractor.provenance, where)
        sides = {}
        for side in SIDES:
            part = state.get(side)
            if not isinstance(part, dict):
                raise ImgdistError(f"{where}: the {side} side is missing")
            if part.get("frozen") != self._sides[side].frozen:
                raise ImgdistError(f"{where}: the {side} side was {'' if part.get('frozen') else 'not '}given as "
                                   "statistics up front, unlike this evaluator's")
            if self._sides[side].frozen:
                sides[side] = self._sides[side]
                continue
            s = _Side(self.extractor.provenance)
            s.stats = _stats_from(part.get("stats"), self.extractor.provenance, f"{where} ({side})")
            for key, target in (("features", s.features), ("logits", s.logits)):
                rows = _rows_from(part.get(key), s.stats.n, f"{where} ({side} {key})")
                if rows is not None:
                    target.append(rows)
            for name, st in (part.get("extra") or {}).items():
                s.extra[name] = _stats_from(st, self.extractor.provenance, f"{where} ({side} {name})")
            for name, t in (part.get("extra_features") or {}).items():
                rows = _rows_from(t, s.stats.n, f"{where} ({side} {name})")
                if rows is not None:
                    s.extra_features[name] = [rows]
            prompts = part.get("prompts") or []
            if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts) or \
                    len(prompts) not in (0, s.stats.n):
                raise ImgdistError(f"{where} ({side} prompts): a list of one string per image was expected")
            if prompts:
                s.prompts = prompts
                s.text = [_rows_from(part.get("text"), s.stats.n, f"{where} ({side} text)")]
                flags = part.get("prompts_truncated")
                if not isinstance(flags, torch.Tensor) or flags.shape != (s.stats.n,) or flags.dtype != torch.bool:
                    raise ImgdistError(f"{where} ({side} prompts_truncated): one flag per image was expected")
                s.truncated = [flags.numpy()]
            sides[side] = s
        self._sides = sides

    # ---------------------------------------------------------------- result

    def compute(self) -> Result:
        """The metrics on everything seen so far: under an initialised ``torch.distributed``
        process group, every rank's updates together (each rank gets the same result)."""
        sides = self._synced() if _distributed() else self._sides
        fake, real = sides["fake"], sides["real"]
        if fake.stats.n == 0 or (real.stats.n == 0 and not real.frozen):
            raise ImgdistError("update(real=...) and update(fake=...) first: a set is empty")
        test = sides["real_test"]
        if self.plan.real_test and test.stats.n == 0:
            raise ImgdistError("ct needs held-out real images: update(real_test=...) first")
        return evaluate_features(_features(real), _features(fake), metrics=self.metrics, options=self.options,
                                 real_test=_features(test) if self.plan.real_test else None)

    def _synced(self) -> dict:
        """Every rank's state combined (in rank order), leaving this rank's own untouched."""
        from .distributed import all_gather_objects, all_reduce_stats

        out = {}
        for side, s in self._sides.items():
            if s.frozen:
                out[side] = s
                continue
            merged = _Side(self.extractor.provenance)
            merged.stats = all_reduce_stats(s.stats)
            for key in ("features", "logits"):
                parts = all_gather_objects(s.rows(getattr(s, key)))
                getattr(merged, key).extend(p for p in parts if p is not None)
            for name in sorted(s.extra):
                merged.extra[name] = all_reduce_stats(s.extra[name])
            for name in sorted(s.extra_features):
                parts = all_gather_objects(s.rows(s.extra_features[name]))
                merged.extra_features[name] = [p for p in parts if p is not None]
            for key in ("text", "truncated"):
                parts = all_gather_objects(s.rows(getattr(s, key)))
                setattr(merged, key, [p for p in parts if p is not None])
            merged.prompts = [p for part in all_gather_objects(s.prompts) for p in part]
            out[side] = merged
        return out


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _features(s: _Side) -> Features | GaussianStats:
    if s.frozen:
        return s.stats
    return Features(names=[], stats=s.stats, provenance=s.stats.provenance, features=s.rows(s.features),
                    logits=s.rows(s.logits), extra=dict(s.extra),
                    extra_features={name: s.rows(parts) for name, parts in s.extra_features.items()},
                    prompts=s.prompts or None, text=s.rows(s.text), prompts_truncated=s.rows(s.truncated))


def _tensor(x: np.ndarray | None) -> torch.Tensor:
    return torch.empty(0) if x is None else torch.from_numpy(np.ascontiguousarray(x))


def _stats_state(stats: GaussianStats) -> dict:
    if stats.n == 0:
        return {"n": 0, "mean": torch.empty(0, dtype=torch.float64), "scatter": torch.empty(0, dtype=torch.float64)}
    n, mean, scatter = stats.state
    return {"n": int(n), "mean": torch.from_numpy(mean), "scatter": torch.from_numpy(scatter)}


def _stats_from(part, provenance: Provenance, where: str) -> GaussianStats:
    if not isinstance(part, dict) or not isinstance(part.get("n"), int) or part["n"] < 0:
        raise ImgdistError(f"{where}: statistics need an image count n >= 0")
    n = part["n"]
    if n == 0:
        return GaussianStats(provenance=provenance)
    mean, scatter = (np.asarray(part.get(k), dtype=np.float64) if isinstance(part.get(k), torch.Tensor) else None
                     for k in ("mean", "scatter"))
    if mean is None or scatter is None or mean.ndim != 1 or scatter.shape != (len(mean), len(mean)):
        raise ImgdistError(f"{where}: the mean must be a vector and the scatter a square matrix of its size")
    if not (np.isfinite(mean).all() and np.isfinite(scatter).all()):
        raise ImgdistError(f"{where}: the statistics hold NaN or infinity")
    # the project's one covariance test (a positive diagonal proves no PSD); the scatter is n or n - 1
    # times a covariance, and the test is relative, so the same bounds hold
    defect = covariance_defect(scatter, "scatter")
    if defect:
        raise ImgdistError(f"{where}: the scatter matrix is not symmetric positive semi-definite: it {defect}")
    return GaussianStats.from_state(n, mean, scatter, provenance)


def _rows_from(t, n: int, where: str) -> np.ndarray | None:
    if not isinstance(t, torch.Tensor):
        raise ImgdistError(f"{where}: expected a tensor")
    if t.numel() == 0:
        return None
    rows = t.detach().cpu().numpy()
    if rows.ndim != 2 or len(rows) != n:
        raise ImgdistError(f"{where}: {tuple(rows.shape)} rows for {n} images")
    if not np.isfinite(rows).all():
        raise ImgdistError(f"{where}: holds NaN or infinity")
    return rows
