"""LPIPS diversity of a set: the mean LPIPS distance between random pairs of distinct images.

What conditional generators report as sample diversity (BicycleGAN, Zhu et al. 2017; MUNIT, Huang
et al. 2018; DRIT, Lee et al. 2018: "the average LPIPS distance between pairs of samples"). Higher
is more diverse; a generator that ignores its noise gives 0.

``pairs`` unordered pairs ``{i, j}``, ``i != j``, are drawn without repetition from a seeded
generator (every pair when the set has no more than ``pairs`` of them). Each image a pair needs is
decoded once, in the decoding processes where the source allows it, and kept as uint8; the pairs
then run through the network in batches on the device, both images of a pair in one batch.

The interval is a percentile bootstrap over the pairs' distances (Efron 1979): it says how much
the mean could move with another draw of as many pairs from the same set, not how it would move
with another set of images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from ... import defaults as D
from ...checks import check_fraction, check_int, check_seed, resolve_device
from ...errors import ImageError, ImgdistError
from ..preprocess import Preprocessing
from ..sources import ImageSource, Skipped, check_on_error, open_source
from .names import DIVERSITY_BOOTSTRAP, DIVERSITY_PAIRS
from .base import pair_distances
from .lpips import LPIPS, load_lpips

PAIRS = DIVERSITY_PAIRS
BOOTSTRAP = DIVERSITY_BOOTSTRAP
#: decoding without any resize: LPIPS compares images at their own size
_NATIVE = Preprocessing("native", None, "none")
#: images per decoding task
_DECODE_CHUNK = 64


@dataclass
class Diversity:
    """The mean LPIPS over ``pairs`` pairs of distinct images, and its bootstrap interval."""

    value: float
    interval: tuple[float, float]
    ci: float
    label: str                      # e.g. LPIPS[alex]
    images: int                     # images in the set
    decoded: int                    # images the pairs needed (each decoded once)
    pairs: np.ndarray = field(repr=False)      # P x 2 indices into the source, i < j
    distances: np.ndarray = field(repr=False)  # P float64, one per pair
    skipped: Skipped = field(default_factory=Skipped, repr=False)

    def to_dict(self) -> dict:
        return {"value": self.value, "interval": list(self.interval), "ci": self.ci, "label": self.label,
                "pairs": int(len(self.pairs)), "images": self.images, "decoded": self.decoded,
                "skipped": len(self.skipped)}


def draw_pairs(n: int, pairs: int, seed: int | None = 0) -> np.ndarray:
    """``min(pairs, n (n - 1) / 2)`` distinct unordered pairs of ``0..n-1`` (``P x 2``, ``i < j``),
    uniformly without repetition, in the order drawn; every pair (in order) when that is all."""
    total = n * (n - 1) // 2
    if pairs >= total:
        i, j = np.triu_indices(n, 1)
        return np.stack([i, j], 1).astype(np.int64)
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, int], None] = {}  # insertion-ordered: the order drawn
    while len(seen) < pairs:
        m = 2 * (pairs - len(seen))
        i = rng.integers(0, n, m)
        j = rng.integers(0, n - 1, m)
        j = j + (j >= i)  # uniform over the other n - 1 images
        for a, b in zip(np.minimum(i, j).tolist(), np.maximum(i, j).tolist()):
            seen.setdefault((a, b))
            if len(seen) == pairs:
                break
    return np.array(list(seen), dtype=np.int64)


def bootstrap_mean_interval(values: np.ndarray, n_boot: int = BOOTSTRAP, ci: float = 0.95,
                            seed: int | None = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    rows = max(1, (1 << 22) // max(1, len(values)))  # resample indices in blocks of ~32 MB
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        means[start:stop] = values[rng.integers(0, len(values), (stop - start, len(values)))].mean(1)
    lo, hi = np.quantile(means, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    return float(lo), float(hi)


def lpips_diversity(source, model: LPIPS | str = "alex", *, pairs: int = PAIRS, seed: int | None = 0,
                    bootstrap: int = BOOTSTRAP, ci: float = 0.95, weights=None, device: str = D.DEVICE,
                    batch_size: int | None = None, workers: int | None = None, on_error: str = "raise",
                    progress: bool = False) -> Diversity:
    """The LPIPS diversity of ``source`` (any image source; see the module docstring).

    ``model``: a loaded :class:`~.lpips.LPIPS` (on its device), or a network name loaded with
    ``weights`` on ``device``. ``batch_size``: pairs per network batch (default: as many as fit
    about 1 GB of activations). ``workers``: decoding processes (default: none on a CPU, every
    usable core beside an accelerator; started here and closed when done).
    ``on_error='skip'``: pairs with an unreadable image are left out (and counted in ``skipped``).
    """
    pairs = check_int("lpips_pairs", pairs, 1)
    bootstrap = check_int("bootstrap", bootstrap, 1)
    ci = check_fraction("ci", ci)
    seed = check_seed(seed, flag=True)
    check_on_error(on_error)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    if workers is not None:
        workers = check_int("workers", workers, 0)
    source = source if isinstance(source, ImageSource) else open_source(source)
    n = len(source)
    if n < 2:
        raise ImgdistError(f"lpips-diversity: {source.label} has {n} image(s); pairs of distinct images need at least 2")
    if isinstance(model, str):
        model = load_lpips(model, weights, device=resolve_device(device), progress=progress)
    elif weights is not None:
        raise ImgdistError("lpips-diversity: weights were given with a network that is already loaded")
    net_device = next(model.parameters()).device

    chosen = draw_pairs(n, pairs, seed)
    skipped = Skipped()
    images = _decode(source, np.unique(chosen), workers, net_device, on_error, skipped)
    keep = np.array([int(i) in images and int(j) in images for i, j in chosen], dtype=bool)
    chosen = chosen[keep]
    if not len(chosen):
        raise ImgdistError(f"lpips-diversity: {source.label}: no pair of readable images ({skipped.summary()})")
    first = images[int(chosen[0, 0])]
    _check_one_size(source, images, first.shape)
    model.check_size(first.shape[1], first.shape[2], source.name_of(int(chosen[0, 0])))
    per_batch = batch_size or max(1, model.batch_images(first.shape[1], first.shape[2]) // 2)

    distances = np.empty(len(chosen))
    bar = _bar(len(chosen), progress, f"lpips-diversity {model.label}")
    for start in range(0, len(chosen), per_batch):
        block = chosen[start:start + per_batch]
        a = torch.stack([images[int(i)] for i in block[:, 0]]).to(net_device)
        b = torch.stack([images[int(j)] for j in block[:, 1]]).to(net_device)
        distances[start:start + len(block)] = pair_distances(model, a, b).double().cpu().numpy()
        bar.update(len(block))
    bar.close()
    interval = bootstrap_mean_interval(distances, bootstrap, ci, seed)
    return Diversity(float(distances.mean()), interval, ci, model.label, n, len(images), chosen, distances, skipped)


def _decode(source: ImageSource, indices: np.ndarray, workers: int | None, device, on_error: str,
            skipped: Skipped) -> dict[int, torch.Tensor]:
    """Each of ``indices`` decoded once: index -> uint8 ``3 x H x W`` (unreadable ones left out
    with ``on_error='skip'``)."""
    from ..batches import decode_batch, pickled
    from ..decode_pool import DecodePool
    from ..scheduling import accelerator_workers

    chunks = [indices[k:k + _DECODE_CHUNK].tolist() for k in range(0, len(indices), _DECODE_CHUNK)]
    if workers is None:
        workers = accelerator_workers() if torch.device(device).type != "cpu" else 0
    workers = min(workers, len(chunks)) if source.parallel_decode else 0
    out: dict[int, torch.Tensor] = {}

    def take(decoded) -> None:
        done, (batch,), errors = decoded  # one recipe: native size
        for i, err in errors:
            if on_error == "raise":
                raise ImageError(*err)
            skipped.add(ImageError(*err))
        for i, image in zip(done, batch if batch is not None else []):
            out[i] = image

    payload = pickled(functools.partial(decode_batch, source, (_NATIVE,))) if workers else None
    if payload is None:
        for chunk in chunks:
            take(decode_batch(source, (_NATIVE,), chunk))
        return out
    pool = DecodePool()
    try:
        pool.grow(workers)
        job = pool.start_job(payload)
        try:
            for seq, chunk in enumerate(chunks):
                pool.submit(job, seq, chunk)
            ready = dict(pool.result(job) for _ in chunks)
        finally:
            pool.end_job(job)
        for seq in range(len(chunks)):  # in source order, so that 'raise' names the first bad image
            take(ready[seq])
    finally:
        pool.close()
    return out


def _check_one_size(source: ImageSource, images: dict[int, torch.Tensor], shape) -> None:
    for i, image in images.items():
        if image.shape != shape:
            first = next(k for k, v in images.items() if v.shape == shape)
            raise ImageError(source.name_of(i), f"is {image.shape[2]}x{image.shape[1]}, "
                                                f"{source.name_of(first)} is {shape[2]}x{shape[1]}: LPIPS compares "
                                                "images of one size (resize the set first)")


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair", disable=not progress, leave=False, dynamic_ncols=True)


__all__ = ["Diversity", "lpips_diversity", "draw_pairs", "bootstrap_mean_interval"]
