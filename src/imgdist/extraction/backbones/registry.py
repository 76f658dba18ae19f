"""Backbone specs by name: each backbone module registers its spec when it is imported."""

from __future__ import annotations

from .base import BackboneSpec

REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    REGISTRY[spec.name] = spec
    return spec
