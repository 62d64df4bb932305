"""The steering context and `steering()`, which applies a condition's interventions.

An intervention implementation is a function `attach(spec, ctx)` that registers hooks through
`ctx.scope` (never directly on the model) and may declare prompt changes (a forced prefix). It is named by
its spec class's registration (`mechsteer.spec.kinds.INTERVENTION_KINDS`), so there is no second registry
here. `steering()` opens one HookScope for a whole condition, so every hook of every intervention is
removed when the condition ends, whatever happens inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from mechsteer.errors import CompileError
from mechsteer.hooks import HookScope
from mechsteer.models.adapters import ArchitectureAdapter
from mechsteer.positions import PositionTracker
from mechsteer.spec.kinds import INTERVENTION_KINDS
from mechsteer.spec.layers import resolve_layers_or_raise
from mechsteer.spec.models import ModelShape
from mechsteer.vectors.vector_set import VectorSet


@dataclass
class SteeringContext:
    """Per-condition state shared by the interventions of that condition; dies with the condition."""

    model: nn.Module
    adapter: ArchitectureAdapter
    vectors: dict[str, VectorSet]
    scope: HookScope
    tokenizer: object | None = None
    prompt_suffix: str = ""
    """Text appended after the generation prompt (the forced assistant opening of `prefix_token`)."""
    extras: dict = field(default_factory=dict)
    """Values interventions expose to readouts (e.g. lora1 magnitudes)."""
    _tracker: PositionTracker | None = None
    _row_state: list = field(default_factory=list)
    """Objects holding per-row state across the steps of one generation (`keeps_rows`)."""

    @property
    def shape(self) -> ModelShape:
        """The steered model's shape."""
        return self.adapter.shape(self.model)

    @property
    def dtype(self) -> torch.dtype:
        """The model's parameter dtype (vectors are cast to it before they are added)."""
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The model's device (vectors are moved to it before they are added)."""
        return next(self.model.parameters()).device

    def layers(self, sel, what: str) -> list[int]:
        """Resolve a layer selection against the model; out of range is a CompileError naming `what`."""
        return resolve_layers_or_raise(sel, self.shape.n_layers, what, CompileError)

    def vector(self, name: str) -> VectorSet:
        """The built vector set `name`; an unknown name is a CompileError listing the built ones."""
        if name not in self.vectors:
            raise CompileError(f"unknown vector set {name!r}; built: {', '.join(sorted(self.vectors)) or 'none'}")
        return self.vectors[name]

    def positions(self) -> PositionTracker:
        """The position tracker, attached on first use (only conditions that select positions pay for it)."""
        if self._tracker is None:
            self._tracker = PositionTracker()
            self._tracker.attach(self.scope, self.adapter.base_model(self.model))
        return self._tracker

    def keeps_rows(self, holder) -> None:
        """Register an object that holds per-row state across decode steps (a spliced block's side caches):
        `select_rows` passes the rows a generation keeps on to its `select_rows(indices)`."""
        self._row_state.append(holder)

    def select_rows(self, indices: torch.Tensor) -> None:
        """A generation dropped ended rows from its batch and keeps `indices` (in the current batch's row
        order): every per-row state of this condition (position tracker, registered holders) does the same."""
        if self._tracker is not None:
            self._tracker.select_rows(indices)
        for holder in self._row_state:
            holder.select_rows(indices)

    def begin(self, prompt_lengths=None) -> None:
        """Tell position-selective interventions that new sequences start (see PositionTracker.begin)."""
        if self._tracker is not None:
            self._tracker.begin(prompt_lengths)


@contextmanager
def steering(
    model: nn.Module, adapter: ArchitectureAdapter, interventions: list, vectors: dict[str, VectorSet], tokenizer=None
) -> Iterator[SteeringContext]:
    """Apply a condition (a list of intervention specs) for the duration of the block."""
    with HookScope("condition") as scope:
        ctx = SteeringContext(model=model, adapter=adapter, vectors=vectors, scope=scope, tokenizer=tokenizer)
        for spec in interventions:
            INTERVENTION_KINDS.impl(spec.kind)(spec, ctx)
        yield ctx
