"""Haar wavelet packets of images: the feature space of the Fréchet Wavelet Distance (FWD).

Paper: L. Veeramacheneni, M. Wolter, H. Kuehne, J. Gall, "Fréchet Wavelet Distance: A
Domain-Agnostic Metric for Image Generation", ICLR 2025. No network is involved: each image is
split into wavelet packets, each packet gets a Gaussian (:mod:`.packet_stats`), and FWD is the
mean over packets of their Fréchet distances (:mod:`imgdist.metrics.fwd`).

What ``pytorchfwd`` 1.0.1 (with ``ptwt`` 0.1.8) does, and this module reproduces without either:

* Images are read as RGB (Pillow's ``convert("RGB")``), optionally resized to ``size x size``
  with Pillow's bilinear filter (``torchvision.transforms.Resize`` on a PIL image), and scaled to
  [0, 1] as float64 (``ToTensor`` after pytorchfwd sets torch's default dtype to float64).
* ``ptwt.WaveletPacket2D(image, "haar", mode="reflect", maxlevel=L)``: every node is split by
  a one-level 2-D Haar transform of each channel, ``L`` times, giving ``4^L`` packets. On each
  2 x 2 block ``[[a, b], [c, e]]`` the four children are ``(a + b + c + e) / 2`` (``a``, the
  approximation), ``(a + b - c - e) / 2`` (``h``), ``(a - b + c - e) / 2`` (``v``) and
  ``(a - b - c + e) / 2`` (``d``). A side of odd length is first extended by one reflected sample
  (the one before the last), as ``ptwt``'s reflect padding does for the two-tap Haar filter.
* Packets in ``ptwt``'s natural order: ``itertools.product("ahvd", repeat=L)``, the first
  letter the first split (``aaaa, aaah, ..., dddd``).
* Each packet of an image is flattened with its channels together, channel-major
  (``C x h x w`` -> ``C * h * w``): one Gaussian per packet over all three channels.

The transform here is batched on whatever device the batch is on, in float64.

Differences from pytorchfwd's image reading, all from imgdist's decoding (:mod:`.decode`): EXIF
orientation is applied, transparent pixels are composited on white (Pillow's ``convert("RGB")``
drops the alpha channel), and 16-bit images keep their range. Plain 8-bit RGB and grayscale
images decode identically.
"""

from __future__ import annotations

from itertools import product

import numpy as np
import torch

from ..errors import ImgdistError

__all__ = ["WAVELETS", "WaveletPackets", "as_unit_float64", "check_wavelet", "fwd_preprocessing", "haar_packets",
           "packet_layout", "packet_names", "wavelet_statistics"]

#: wavelets supported (only Haar: its packets need no filter bank and no boundary handling beyond
#: one reflected sample; others would need ptwt's padded convolutions)
WAVELETS = ("haar",)


def check_wavelet(wavelet: str) -> str:
    """The wavelet's canonical name, or a one-line error (pywt names are case-insensitive here,
    as pytorchfwd's default ``"Haar"`` shows)."""
    name = str(wavelet).strip().lower()
    if name not in WAVELETS:
        raise ImgdistError(f"fwd_wavelet (--fwd-wavelet) {wavelet!r} is not supported: only haar (the "
                           "Fréchet Wavelet Distance's default) is implemented")
    return name


def _halve(side: int) -> int:
    return (side + 1) // 2


def packet_layout(height: int, width: int, level: int, channels: int = 3) -> tuple[int, int]:
    """``(packets, dim)`` for images of ``height x width``: ``4^level`` packets of ``channels *
    h * w`` coefficients each (each split halves a side, rounding up). A side that reaches 1
    before the last split cannot be reflected (ptwt fails there too): a one-line error."""
    if level < 1:
        raise ImgdistError(f"fwd_level (--fwd-level) must be at least 1, got {level}")
    h, w = height, width
    for step in range(level):
        if min(h, w) < 2:
            raise ImgdistError(f"images of {width}x{height} pixels are too small for {level} wavelet levels "
                               f"(a side is 1 pixel before split {step + 1}); use fewer levels or larger images")
        h, w = _halve(h), _halve(w)
    return 4 ** level, channels * h * w


def packet_names(level: int) -> list[str]:
    """The packets' names in their order: ``aaaa``, ``aaah``, ... (ptwt's natural order)."""
    return ["".join(p) for p in product("ahvd", repeat=level)]


def _haar_split(x: torch.Tensor) -> torch.Tensor:
    """``... x H x W`` -> ``... x 4 x ceil(H/2) x ceil(W/2)`` (children a, h, v, d)."""
    if x.shape[-2] % 2:
        x = torch.cat([x, x[..., -2:-1, :]], dim=-2)  # reflect: the row before the last
    if x.shape[-1] % 2:
        x = torch.cat([x, x[..., -2:-1]], dim=-1)
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, e = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    top, bottom = a + b, c + e
    left_minus_right_top, left_minus_right_bottom = a - b, c - e
    return 0.5 * torch.stack([top + bottom, top - bottom, left_minus_right_top + left_minus_right_bottom,
                              left_minus_right_top - left_minus_right_bottom], dim=-3)


def haar_packets(images: torch.Tensor, level: int = 4) -> torch.Tensor:
    """Haar wavelet packets of a float ``N x C x H x W`` batch -> ``N x 4^level x (C * h * w)``
    (packets in natural order, each flattened channel-major), in the batch's dtype and device."""
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    n, c, height, width = images.shape
    packet_layout(height, width, level, c)  # size check, one line
    x = images.unsqueeze(1)  # N x P x C x H x W with P = 1
    for _ in range(level):
        x = _haar_split(x)  # N x P x C x 4 x h x w
        x = x.transpose(2, 3).reshape(n, -1, c, x.shape[-2], x.shape[-1])  # child k of packet p: 4p + k
    return x.reshape(n, x.shape[1], -1)


def as_unit_float64(batch) -> torch.Tensor:
    """A batch of images -> float64 ``N x C x H x W`` in [0, 1].

    uint8 (0..255, divided by 255 as ``ToTensor`` does) or float (taken to be in [0, 1]); torch
    tensors are channels-first ``N x C x H x W``, numpy arrays channels-last ``N x H x W x C``
    (imgdist's decoded images)."""
    if isinstance(batch, np.ndarray):
        if batch.ndim != 4:
            raise ValueError(f"a numpy batch must be N x H x W x C, got shape {batch.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
    if batch.ndim != 4:
        raise ValueError(f"a batch must be N x C x H x W, got shape {tuple(batch.shape)}")
    if batch.dtype == torch.uint8:
        return batch.to(torch.float64) / 255.0
    if not batch.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {batch.dtype}")
    return batch.to(torch.float64)


class WaveletPackets(torch.nn.Module):
    """The FWD feature space as a module: a batch of images (see :func:`as_unit_float64`) ->
    float64 ``N x P x D`` packet coefficients (``P = 4^level``, ``D = C * h * w``), on the batch's
    device. Holds no parameters; ``wavelet`` must be ``"haar"``."""

    def __init__(self, wavelet: str = "haar", level: int = 4):
        super().__init__()
        self.wavelet = check_wavelet(wavelet)
        packet_layout(2 ** level, 2 ** level, level)  # level >= 1, one line otherwise
        self.level = int(level)

    def layout(self, height: int, width: int, channels: int = 3) -> tuple[int, int]:
        """``(packets, dim)`` of this module's output for images of ``height x width``."""
        return packet_layout(height, width, self.level, channels)

    def forward(self, batch) -> torch.Tensor:
        return haar_packets(as_unit_float64(batch), self.level)

    def extra_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, level={self.level}"


# ---------------------------------------------------------------- a whole image source


def fwd_preprocessing(resize: int | None = None):
    """How FWD reads images: uint8 RGB at their own size, or resized to ``resize x resize`` with
    Pillow's bilinear filter (pytorchfwd's ``--resize``); the module divides by 255 itself."""
    from .preprocess import Preprocessing

    if resize is None:
        return Preprocessing("native", None, "none", mean=0.0, std=255.0)
    if isinstance(resize, bool) or not isinstance(resize, (int, np.integer)) or resize < 1:
        raise ImgdistError(f"fwd_resize (--fwd-resize) must be a whole number of pixels >= 1, got {resize!r}")
    return Preprocessing("pil-bilinear", int(resize), "pil-bilinear-rgb", mean=0.0, std=255.0)


def wavelet_statistics(source, *, level: int = 4, wavelet: str = "haar", resize: int | None = None,
                       batch_size: int = 64, device=None, on_error: str = "raise", skipped=None,
                       progress: bool = False, limit: int | None = None):
    """Every image of ``source`` through the Haar packets into one :class:`~.packet_stats.PacketStats`.

    ``source``: anything :func:`~.sources.open_source` reads (a folder, glob, archive, array ...),
    decoded by imgdist's decoder. ``resize``: a side in pixels (Pillow bilinear), else every image
    must have the first one's size (an :class:`~imgdist.errors.ImageError` names the first that does
    not). ``device``: where the transform runs and the statistics accumulate (``auto``: CUDA when
    available). ``on_error="skip"`` passes over unreadable images, recorded in ``skipped`` (a
    :class:`~.sources.Skipped`). The memory bound (:func:`~.packet_stats.check_memory`, ``limit``)
    is checked before any image is read when ``resize`` is given, else once the first batch is
    decoded.
    """
    from tqdm import tqdm

    from ..checks import resolve_device
    from ..errors import ImageError
    from .packet_stats import PacketStats, check_memory
    from .sources import check_on_error, open_source

    check_on_error(on_error)
    module = WaveletPackets(wavelet, level)
    prep = fwd_preprocessing(resize)
    if resize is not None:
        check_memory(*module.layout(resize, resize), limit)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ImgdistError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    device = torch.device(resolve_device(device))
    source = open_source(source)
    stats, first = None, None
    bar = tqdm(total=len(source), desc="wavelet packets", unit="img", disable=not progress, leave=False)
    try:
        for start in range(0, len(source), batch_size):
            images = []
            for i in range(start, min(start + batch_size, len(source))):
                try:
                    image = prep.prepare(source.load(i))
                except ImageError as exc:
                    if on_error == "raise":
                        raise
                    if skipped is not None:
                        skipped.add(exc)
                    continue
                first = first or (tuple(image.shape), source.name_of(i))
                if tuple(image.shape) != first[0]:
                    raise ImageError(source.name_of(i), f"is {image.shape[2]}x{image.shape[1]}, {first[1]} is "
                                                        f"{first[0][2]}x{first[0][1]}; FWD needs one size "
                                                        "(set fwd_resize)")
                images.append(image)
            bar.update(min(batch_size, len(source) - start))
            if not images:
                continue
            if stats is None:
                stats = PacketStats(*module.layout(first[0][1], first[0][2], first[0][0]), device, limit)
            stats.update(module(torch.stack(images).to(device)))
    finally:
        bar.close()
    if stats is None or stats.n < 2:
        raise ImgdistError(f"{source.label}: FWD needs at least 2 readable images, got "
                           f"{0 if stats is None else stats.n}")
    return stats
