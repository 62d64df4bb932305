"""A study's vector sets as one model reads them. A set may be another set on each model (`per_model`:
`VectorSourceBase.model_sets()` answers which); the compiler, the executor and `validate` resolve such a set per
model here, so on model `m` it is exactly the set it names for `m` (its cell key, code fingerprint, shape
checks and built vectors), and nothing outside the kind's class names the kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def model_set(vectors: Mapping[str, Any], name: str, model: str) -> str | None:
    """The set that `name` is on model `model`: `name` itself for a set of its own, else the set its
    `model_sets()` names for the model, followed through chains; None when a per-model set on the way has no
    entry for the model (or the names loop: `validate` reports both)."""
    seen: set[str] = set()
    while name in vectors and name not in seen:
        seen.add(name)
        sets = vectors[name].model_sets()
        if sets is None:
            return name
        if model not in sets:
            return None
        name = sets[model]
    return None


def vectors_for_model(vectors: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The vector sets as model `model` reads them: each per-model set replaced, under its own name, by the
    spec of the set it is on this model (`model_set`), so a cell's key, code fingerprint and built vectors
    are exactly those of a study that named that set directly. A per-model set without an entry for the
    model stays as it is (its builder names the missing entry if a cell of the model reads it)."""
    out: dict[str, Any] = {}
    for name, spec in vectors.items():
        target = model_set(vectors, name, model) if spec.model_sets() is not None else name
        out[name] = vectors[target] if target is not None else spec
    return out


__all__ = ["model_set", "vectors_for_model"]
