"""Every metric setting's value for one run, checked once, read by attribute (``options.pr_k``).

The settings themselves (default, range, help) are declared by the metrics that own them
(:mod:`imgdist.metrics.registry`); this object holds a run's values of all of them, so that the
Python keywords, the CLI flags and a metric added as a plugin share one set of names.
"""

from __future__ import annotations

from ..errors import ImgdistError
from ..metrics import registry


class MetricOptions:
    """The value of every registered setting: the given keywords, the defaults for the rest.

    Immutable; :meth:`replace` gives a changed copy. An unknown keyword is a one-line error that
    lists the settings."""

    __slots__ = ("_values",)

    def __init__(self, **keywords):
        known = {s.name: s for s in registry.settings()}
        unknown = sorted(set(keywords) - set(known))
        if unknown:
            raise ImgdistError(f"unknown metric setting(s) {', '.join(unknown)}; the settings are "
                               f"{', '.join(known)}")
        object.__setattr__(self, "_values", {name: s.check(keywords.get(name, s.default))
                                             for name, s in known.items()})

    @classmethod
    def from_keywords(cls, keywords: dict) -> "MetricOptions":
        return cls(**keywords)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no metric setting {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("MetricOptions are immutable; use .replace(...)")

    def replace(self, **changes) -> "MetricOptions":
        return MetricOptions(**{**self._values, **changes})

    def __eq__(self, other) -> bool:
        return isinstance(other, MetricOptions) and self._values == other._values

    def __hash__(self):
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return "MetricOptions(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"
