"""What imgdist knows about device types, without importing torch: the statistics modules
(:mod:`.stats`, :mod:`.packet_stats`) read it and sit below the backbones, so it imports nothing."""

from __future__ import annotations

#: device types whose tensors cannot be float64 (Apple's MPS): the statistics of their features
#: accumulate in float64 on the host instead, each batch's features copied there once
NO_FLOAT64 = frozenset({"mps"})
