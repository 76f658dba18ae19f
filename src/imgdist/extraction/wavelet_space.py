"""The wavelet space in the extraction engine: FWD's packets fed from the same decode as the networks.

:class:`WaveletExtractor` is a :class:`~imgdist.extraction.features.FeatureExtractor` whose
"network" is :class:`~imgdist.extraction.wavelets.WaveletPackets` (float64, no weights) and whose
statistics are one Gaussian per packet (:class:`~imgdist.extraction.packet_stats.PacketStats`,
in ``Features.extra["packets"]``) instead of one over a pooled vector: ``imgdist eval R F
--metrics fid,fwd`` decodes each image once and feeds both Inception and the packets. The
decoding (pool of processes, order, errors) is the engine's own.
"""

from __future__ import annotations

import torch

from .. import defaults as D
from ..checks import check_int, resolve_device
from ..errors import ImgdistError
from .backbones import get_spec
from .backbones.wavelets import NAME
from .collect import ExtractionRun
from .feature_set import Features
from .features import FeatureExtractor
from .packet_stats import PacketStats, check_memory
from .provenance import Provenance
from .sources import Skipped
from .stats import GaussianStats
from .wavelets import WaveletPackets, fwd_preprocessing

#: the name of the output ``fwd`` reads
PACKETS = "packets"


class _Packets:
    """A launched batch's packet coefficients (computed at once: the transform is a few adds)."""

    def __init__(self, packets: torch.Tensor):
        self.packets = packets

    def ready(self) -> bool:
        return True


class WaveletExtractor(FeatureExtractor):
    """Haar packets of every image at ``level``, at the images' own size or resized to ``resize``."""

    network = False  # nothing that can break into collapsed features: no collapse check

    def __init__(self, *, wavelet: str = "haar", level: int = 4, resize: int | None = None, device: str = D.DEVICE,
                 batch_size: int | None = D.BATCH_SIZE, workers: int | None = None, progress: bool = True):
        self.workers = None if workers is None else check_int("workers", workers, 0)
        self.device = torch.device(resolve_device(device))
        self.precision, self.dtype = "fp32", torch.float64  # float64 throughout; no network arithmetic to label
        self.spec = get_spec(NAME)
        self.prep = fwd_preprocessing(resize)
        self.model = WaveletPackets(wavelet, level)
        if resize is not None:  # the memory bound before any image is read
            check_memory(*self.model.layout(resize, resize))
        self.layer = PACKETS
        self.batch_size = check_int("batch_size", batch_size, 1) if batch_size is not None else D.CPU_BATCH_SIZE
        self.progress = progress
        self.provenance = Provenance(
            backbone=NAME, weights_sha256=None, resize_mode=self.prep.name,
            preprocessing=f"{self.prep.describe()}; {self.model.wavelet} packets, level {self.model.level}",
            feature_layer=f"{self.model.wavelet}-level{self.model.level}", precision=None)

    @property
    def feature_dim(self) -> int:
        return 0

    def new_run(self, source, keep_features, keep_logits, on_error, timing) -> "PacketRun":
        return PacketRun(self, source, False, False, on_error, timing)

    @torch.inference_mode()
    def _launch(self, batch, logits: bool, host: bool = True, extra=(), extra_host: bool = False) -> _Packets:
        if isinstance(batch, (list, tuple)):  # images of different sizes: refused by the size check first
            batch = torch.stack(batch)
        return _Packets(self.model(batch.to(self.device)))

    def embed_outputs(self, images, *, logits: bool = False, extra=()) -> dict:
        raise ImgdistError("the wavelet space streams one Gaussian per packet and keeps no per-image features: "
                           "use imgdist.evaluate(..., metrics='fwd') for the Fréchet Wavelet Distance")


class PacketRun(ExtractionRun):
    """One set's packets into its :class:`PacketStats` (no cache: the transform costs less than a read)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.packets: PacketStats | None = None
        self.seen: list[int] = []

    def needs_host(self, cache) -> bool:
        return False

    def collect(self, indices, pending: _Packets, cache, keys) -> None:
        x = pending.packets
        if not bool(torch.isfinite(x).all()):
            raise ImgdistError(f"wavelet packets of {self.source.name_of(indices[0])} hold NaN or infinity")
        if self.packets is None:
            self.packets = PacketStats(x.shape[1], x.shape[2], self.ex.device)
        self.packets.update(x)
        self.seen += list(indices)

    def features(self) -> Features:
        skipped = Skipped([self.errors[i] for i in sorted(self.errors)])
        good = sorted(self.seen)
        if not good and self.n:
            raise ImgdistError(f"{self.source.label}: none of the {self.n} images could be read ({skipped.summary()})")
        extra = {PACKETS: self.packets} if self.packets is not None else {}
        return Features(names=[self.source.name_of(i) for i in good], stats=summary(self.packets, self.ex.provenance),
                        provenance=self.ex.provenance, skipped=skipped, indices=good, device=self.ex.device_label,
                        timing=self.timing, extra=extra)


def summary(packets: PacketStats | None, provenance: Provenance) -> GaussianStats:
    """The set's count and mean (all packets flattened), for what every set reports (its size)."""
    if packets is None or not packets.n:
        return GaussianStats(provenance=provenance)
    return GaussianStats.count_and_mean(packets.n, packets.mean.reshape(-1).cpu().numpy(), provenance)
