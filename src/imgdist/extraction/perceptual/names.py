"""The perceptual distances' names and lpips-diversity's defaults, apart from the networks: the
metric registry reads them for ``--help``, and the CLI must start without importing torch."""

from __future__ import annotations

#: the distances by the name their results carry
KEYS = ("lpips", "dists")
#: LPIPS's networks (their layers: ``lpips.NETS``)
LPIPS_NETS = ("alex", "vgg", "squeeze")
DIVERSITY_PAIRS = 1000
DIVERSITY_BOOTSTRAP = 1000
