"""Building vector sets. `BuildContext` is what a vector builder gets: the target model's shape, the vector
specs by name, the loaded model (for builders that compute vectors with it), and memoised dependencies
(`norm_like`, `of`). The executor makes one per loaded model.

A builder is a function `build(spec, ctx) -> VectorSet`, named by its spec class's registration in
`mechsteer.spec.kinds.VECTOR_KINDS` (specs are bound: paths absolute, a training run's files located by the
compiler). This module calls the builders, so it lives in their layer (README, "Design": a registration's
target is never above the module that calls it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mechsteer.errors import VectorError
from mechsteer.spec.kinds import VECTOR_KINDS
from mechsteer.spec.layers import resolve_layers_or_raise
from mechsteer.vectors.vector_set import VectorSet


@dataclass
class BuildContext:
    """What a builder may use: the target model's shape, the vector specs by name, the loaded model."""

    n_layers: int
    """Blocks of the target model."""
    d_model: int
    """Width of the target model."""
    specs: dict
    """Vector specs by name, bound (paths absolute)."""
    model_id: str = ""
    """The target model's id (named by shape errors)."""
    model_name: str = ""
    """The target model's name in the study (`models:` key): the entry a `per_model` set reads."""
    lm: Any = None
    """The loaded model (`mechsteer.models.loading.LoadedModel`: model, tokenizer, adapter), or a zero-argument
    callable returning it; only builders that compute vectors with the model (`mean_diff`) read it."""
    built: dict[str, VectorSet] = field(default_factory=dict)
    """Sets built so far, by name (each is built once per context)."""
    _building: list[str] = field(default_factory=list)

    def get(self, name: str, *, check_shape: bool = True) -> VectorSet:
        """Build (once) the named set. `check_shape=False` is for sets applied through `transfer`, which
        checks donor/recipient shapes itself and may map layers by relative depth."""
        if name in self.built:
            return self.built[name]
        if name not in self.specs:
            raise VectorError(f"unknown vector set {name!r}")
        if name in self._building:
            raise VectorError(f"vector sets refer to each other in a cycle: {' -> '.join(self._building + [name])}")
        self._building.append(name)
        try:
            spec = self.specs[name]
            vs = VECTOR_KINDS.impl(spec.kind)(spec, self)
            if check_shape:
                vs.check_fits(self.n_layers, self.d_model, f"model {self.model_id or '?'}")
            vs.meta.setdefault("name", name)
            self.built[name] = vs
            return vs
        finally:
            self._building.pop()

    def layers(self, sel, what: str) -> list[int]:
        """A layer selection resolved against the target model (VectorError naming `what` otherwise)."""
        return resolve_layers_or_raise(sel, self.n_layers, what, VectorError)


def subset(vs: VectorSet, sel, ctx: BuildContext, what: str) -> VectorSet:
    """`vs` restricted to the rows of a layer selection (None keeps every row)."""
    return vs if sel is None else vs.select(ctx.layers(sel, what))
