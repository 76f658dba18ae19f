"""What produced a set of features or statistics, so that numbers are only compared with their kind."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .. import __version__
from ..errors import ProvenanceError

#: the backbone name of features the user computed elsewhere (an N x d array): every feature metric
#: runs on them, and they print as ``FD[user-features]``, never as FID
USER_FEATURES = "user-features"

#: fields that change the numbers; the imgdist version alone does not
_KEY_FIELDS = ("backbone", "weights_sha256", "resize_mode", "feature_layer", "precision")


@dataclass(frozen=True)
class Provenance:
    backbone: str | None = None
    weights_sha256: str | None = None
    resize_mode: str | None = None
    preprocessing: str | None = None
    feature_layer: str | None = None
    imgdist_version: str | None = __version__
    #: the network's arithmetic: strict fp32, or tf32/bf16/fp16 (whose numbers never pass for fp32 ones).
    #: Files written before imgdist recorded it were computed in fp32.
    precision: str | None = "fp32"

    @property
    def known(self) -> bool:
        """False for statistics made by another tool (pytorch-fid / clean-fid files carry none)."""
        return self.backbone is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Provenance":
        names = {f.name for f in fields(cls)}
        return cls(**{k: (str(v) if v is not None else None) for k, v in data.items() if k in names})

    def differences(self, other: "Provenance") -> list[str]:
        out = []
        for key in _KEY_FIELDS:
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                if key == "weights_sha256" and mine and theirs:
                    mine, theirs = mine[:12], theirs[:12]
                out.append(f"{key} {mine} vs {theirs}")
        return out

    def check_compatible(self, other: "Provenance", what: str = "", force: bool = False) -> list[str]:
        """Raise unless both were produced the same way; returns warnings (unknown provenance)."""
        if not (self.known and other.known):
            return ["statistics without provenance (made by another tool?) are assumed to match "
                    f"{(self if self.known else other).summary()}"] if (self.known or other.known) else []
        diff = self.differences(other)
        if diff and not force:
            raise ProvenanceError(f"{what + ': ' if what else ''}statistics were produced differently "
                                  f"({'; '.join(diff)}); recompute them, or pass --force to compare anyway")
        return [f"forced comparison despite: {'; '.join(diff)}"] if diff else []

    @property
    def reduced_precision(self) -> bool:
        """Features from a tf32/bf16/fp16 network (only known provenance can say so)."""
        return self.known and self.precision not in (None, "fp32")

    def summary(self) -> str:
        sha = (self.weights_sha256 or "none")[:12]
        extra = f", {self.precision}" if self.reduced_precision else ""
        return f"{self.backbone} ({self.feature_layer}), weights {sha}, resize {self.resize_mode}{extra}"
