"""One decode, several networks: :func:`extract_together` reads and decodes each image of a source
once and feeds it to every network of a run, each through its own resize recipe, each keeping its
own statistics, per-image arrays and cache.
"""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..errors import ImgdistWarning
from .allocator import retained_memory
from .batches import select
from .cache import FeatureCache
from .collect import ExtractionRun, Timing
from .feature_set import Features
from .precision import fp32_mode
from .sources import ImageSource, check_on_error, open_source


@dataclass(frozen=True)
class Job:
    """One network's part of an extraction: what it keeps of each image besides the statistics."""

    extractor: object                  # a FeatureExtractor
    keep_features: bool = True
    keep_logits: bool = False
    extra_layers: tuple[str, ...] = ()
    keep_extra: bool = False


def extract_together(source, jobs: list[Job], *, on_error: str = "raise", desc: str | None = None) -> list[Features]:
    """Every job's :class:`Features` of ``source`` from one decode: each image is read and decoded
    once (by the first job's extractor and its decoding pool), then prepared by each network's
    recipe and fed to it. Each network keeps its own statistics, per-image arrays, errors check and
    cache; an image that is cached for one network is decoded only if another still needs it.
    Order is the source's; an image that cannot be read is skipped (or refused) for all networks
    alike, so that every network sees the same images."""
    check_on_error(on_error)
    source = open_source(source)
    lead = jobs[0].extractor
    timing = Timing()
    runs = []
    for job in jobs:
        run = job.extractor.new_run(source, job.keep_features, job.keep_logits and job.extractor.spec.has_logits,
                                    on_error, timing)
        run.want_extra(tuple(job.extra_layers), job.keep_extra)
        runs.append(run)
    bar = tqdm(total=len(source), desc=desc or _short(source.label), unit="img", disable=not lead.progress,
               dynamic_ncols=True, leave=False)
    on_cpu = [job.extractor for job in jobs if job.extractor.retain_memory and job.extractor.device.type == "cpu"]
    retain = retained_memory(max(ex.retained_bytes() for ex in on_cpu)) if on_cpu else nullcontext()
    caches: list[FeatureCache | None] = [None] * len(runs)
    keys = None
    try:
        with retain:
            t = time.perf_counter()
            for k, run in enumerate(runs):
                ex = run.ex
                # the cache stores one layer (and logits) per image: runs with extra layers go
                # without it rather than key rows by a layer set that other runs would never ask for
                if ex.cache_dir and run.extra_stats:
                    warnings.warn(f"the feature cache is not used for {', '.join(run.extra_stats)} (it keeps one "
                                  "layer per image): these images are computed again on every run", ImgdistWarning,
                                  stacklevel=3)
                elif ex.cache_dir and not ex._cache_given_up:
                    keys = keys if keys is not None else ex._hashes(source)
                    caches[k] = ex._open_cache() if keys is not None else None
            timing.hash = time.perf_counter() - t
            wanted = [run.read_cache(cache, keys) if cache else list(range(run.n)) for run, cache in zip(runs, caches)]
            todo = sorted(set().union(*wanted))
            cached = len(source) - len(todo)  # images every network has from its cache
            bar.update(cached)
            _rate_from_here(bar, cached)
            _feed(lead, source, runs, [set(w) for w in wanted], todo, caches, keys, timing, bar)
    finally:
        bar.close()
        for run, cache in zip(runs, caches):
            if cache:
                cache.close(source.label)
                # locked or unusable: the warning said this run goes on without it (evaluate's
                # second set included), so later extractions neither retry nor repeat it
                run.ex._cache_given_up = cache.given_up
    return [run.features() for run in runs]


def _feed(lead, source: ImageSource, runs: list[ExtractionRun], wanted: list[set], todo: list[int],
          caches: list, keys, timing: Timing, bar) -> None:
    """Decode ``todo`` once and launch each network on the images it still needs. A finished batch
    reaches its cache at once, and at the latest before the network's next batch is launched: an
    interruption loses at most the batches in flight."""
    preps = tuple(dict.fromkeys(run.ex.prep for run in runs))
    recipe = [preps.index(run.ex.prep) for run in runs]
    pending: list = [None] * len(runs)
    try:
        for indices, batches, errs in lead._batches(source, todo, timing, preps):
            for run in runs:
                run.add_errors(errs)
            for k, run in enumerate(runs):
                if pending[k] is not None:
                    done, pending[k] = pending[k], None
                    run.collect(*done, caches[k], keys)
                batch = batches[recipe[k]]
                positions = [j for j, i in enumerate(indices) if i in wanted[k]]
                if batch is None or not positions:
                    continue
                mine, batch = [indices[j] for j in positions], select(batch, positions)
                ex = run.ex
                if ex.prep.size is None:
                    run.first_shape = ex._check_one_size(source, mine, batch, run.first_shape)
                t = time.perf_counter()
                with fp32_mode(ex.precision):
                    launched = ex._launch(batch, run.keep_logits, run.needs_host(caches[k]), tuple(run.extra_stats),
                                          bool(run.extra_rows))
                timing.compute += time.perf_counter() - t
                pending[k] = (mine, launched)
                if launched.ready():  # always on a CPU
                    done, pending[k] = pending[k], None
                    run.collect(*done, caches[k], keys)
            bar.update(len(indices) + len(errs))
    finally:
        # also when interrupted or stopped by a bad image: the batches already computed reach the cache
        for k, run in enumerate(runs):
            if pending[k] is not None:
                run.collect(*pending[k], caches[k], keys)



def _rate_from_here(bar, done: int) -> None:
    """Restart the bar's clock and rate with ``done`` items (the cached ones) already counted, so
    that its speed and ETA are those of the network alone: cached rows arrive thousands of times
    faster than ViT-L/14 computes on a CPU, and counting them in the rate would show an ETA of
    seconds for hours of work. tqdm's own ``initial`` is the count its rate leaves out."""
    if not done or bar.disable:
        return
    bar.reset(total=bar.total)
    bar.n = bar.last_print_n = bar.initial = done
    bar.refresh()


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else "..." + label[-(width - 3):]


