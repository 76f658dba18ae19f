"""Batches of an extraction: decoded images (in a decoding process or here), collated per resize
recipe, and a launched batch's outputs on their way from the device.

One decode serves several networks: :func:`decode_batch` runs the decoding side of every recipe
the networks need (:meth:`~imgdist.extraction.preprocess.Preprocessing.prepare`) on the image it
decoded once.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import torch

from ..errors import ImageError, ImgdistWarning, one_line
from .preprocess import Preprocessing
from .sources import ImageSource

class _Decoded:
    """Decodes source items once and runs the decoding side of each recipe on them
    (:meth:`Preprocessing.prepare`: uint8 images, resized here only by the Pillow kernels), in a
    worker or in the main process. Failures travel back as values, not exceptions, so that
    ``on_error='skip'`` can count them and ``'raise'`` can name the first in order; an image a
    recipe cannot take is an error for every network, so that all see the same images."""

    def __init__(self, source: ImageSource, preps: tuple[Preprocessing, ...], indices: list[int]):
        self.source, self.preps, self.indices = source, preps, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            image = self.source.load(i)
            return i, [prep.prepare(image) for prep in self.preps], None
        except ImageError as exc:
            return i, None, (exc.name, exc.cause)
        except ValueError as exc:  # e.g. resize 'none' on an image of the wrong size
            return i, None, (self.source.name_of(i), one_line(exc))


def decode_batch(source: ImageSource, preps: tuple[Preprocessing, ...], indices: list[int]):
    """-> ``(indices, [batch per recipe], errors)`` (see :func:`collate`); in the main process or a
    decoding one."""
    dataset = _Decoded(source, preps, indices)
    items = [dataset[k] for k in range(len(dataset))]
    errors = [(i, err) for i, _, err in items if err is not None]
    good = [(i, xs) for i, xs, err in items if err is None]
    indices = [i for i, _ in good]
    return indices, [collate([xs[r] for _, xs in good]) for r in range(len(preps))], errors


def pickled(work) -> bytes | None:
    """``work`` pickled for the decoding processes; None, with a warning, where it cannot be (a
    custom source holding e.g. a lambda): it is then decoded in the main process."""
    try:
        return pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises means the same
        warnings.warn(f"{work.args[0].label}: decoding in the main process, the source cannot be sent to "
                      f"decoding processes ({one_line(exc)})", ImgdistWarning, stacklevel=2)
        return None


def collate(tensors: list):
    """One N x C x H x W tensor where every image has one size (the device resizes it as a whole),
    else a list of C x H x W tensors; None for no image."""
    if tensors and any(t.shape != tensors[0].shape for t in tensors):
        return tensors
    return torch.stack(tensors) if tensors else None


def select(batch, positions: list[int]):
    """The images of a batch (tensor or list) at ``positions``."""
    if isinstance(batch, torch.Tensor):
        return batch[positions] if len(positions) < len(batch) else batch
    return [batch[j] for j in positions]


def split_batch(batch, size: int | None) -> list:
    """A batch (tensor or list of images) in parts of at most ``size`` images (None: whole)."""
    if size is None or len(batch) <= size:
        return [batch]
    return [batch[i:i + size] for i in range(0, len(batch), size)]


class Pending:
    """A batch's outputs: on the device, where the statistics are accumulated, and, where the run
    needs them on the host (kept features, logits, the cache), on their way there: on CUDA copied
    into pinned host memory without blocking, with an event to wait for; elsewhere already there.
    Whether the features are finite is decided on the device; only that flag always travels."""

    def __init__(self, tensors: list[torch.Tensor], device: torch.device, host: bool = True,
                 extra: dict[str, torch.Tensor] | None = None, extra_host: bool = False):
        self.on_device = tensors
        self.extra_on_device = extra or {}
        self.event = None
        self._main = len(tensors) if host else 0
        self._extra_names = tuple(self.extra_on_device) if extra_host else ()
        checked = [tensors[0], *self.extra_on_device.values()]
        finite = torch.stack([torch.isfinite(t).all() for t in checked]).all().reshape(1)
        sent = (list(tensors) if host else []) + [self.extra_on_device[n] for n in self._extra_names] + [finite]
        if device.type == "cuda":
            self.host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in sent]
            for host_t, t in zip(self.host, sent):
                host_t.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = [t.cpu() for t in sent]

    def ready(self) -> bool:
        """Whether the device has finished the batch (always, off CUDA)."""
        return self.event is None or self.event.query()

    def finite(self) -> bool:
        if self.event is not None:
            self.event.synchronize()
        return bool(self.host[-1].item())

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(features, logits or None) on the host; (None, None) where they were not sent."""
        if self.event is not None:
            self.event.synchronize()
        arrays = [h.numpy() for h in self.host[:self._main]]
        if not arrays:
            return None, None
        return arrays[0], (arrays[1] if len(arrays) > 1 else None)

    def extra(self) -> dict[str, np.ndarray]:
        """The extra outputs sent to the host, by name (after :meth:`result`, which waits for them)."""
        start = self._main
        return {name: self.host[start + j].numpy() for j, name in enumerate(self._extra_names)}
