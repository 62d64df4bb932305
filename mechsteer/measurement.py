"""What a measurement runner gets and returns.

A runner is `run(task: MeasurementTask) -> MeasurementResult`, named by its spec class's registration in
`mechsteer.spec.kinds.MEASUREMENT_KINDS` (readout kinds and `eval`). It runs inside the cell's steering scope,
reads its typed spec (`task.spec`: the readout's spec class or `EvalTaskSpec`, with limits resolved and data
folders absolute) and must call `task.ctx.begin()` before each generate / forward batch (the generation
helpers do). A readout whose spec class sets `steers_itself = True` (it compares the base model with the
condition, e.g. DiffSAE) runs with the model unsteered and `ctx=None`, and applies `task.interventions`
itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechsteer.interventions.base import SteeringContext
from mechsteer.models.loading import LoadedModel
from mechsteer.spec.kinds import MEASUREMENT_KINDS


@dataclass
class MeasurementTask:
    """What a measurement runner gets for one cell: the loaded model, the condition's steering context, its typed
    spec and seed, the cell's interventions and vector sets, work folders and a progress callback."""

    lm: LoadedModel
    ctx: SteeringContext | None
    """The condition's steering context (None for a readout that `steers_itself`: it runs unsteered)."""
    spec: Any
    """The typed measurement spec."""
    seed: int
    progress: Callable[[int, int | None], None] = lambda advance, total=None: None
    """progress(advance, total): advance the cell's progress bar; pass total once when known."""
    interventions: tuple = ()
    """The cell's bound intervention specs (for measurements that apply the condition themselves)."""
    vectors: dict = field(default_factory=dict)
    """The cell's built vector sets, by name."""
    work_dir: Path | None = None
    """A folder kept across runs of this cell, for resumable intermediate files (not part of the record).
    The engine keys it by the cell's code fingerprint and empties it on `--force`, so whatever is found
    there was written by this code for this cell."""
    shared_work_dir: Path | None = None
    """A folder for intermediates several cells share (e.g. `sequences/`); each file must be keyed by
    everything it depends on, the code that computes it included (`code_of`), and honour `run_id`."""
    code_of: Callable[[Iterable[str]], dict] | None = None
    """code_of(modules): the code fingerprint of those mechsteer modules' import closure and of the result
    packages (`engine.code_version`), for keying a shared intermediate by the code that computes it."""
    run_id: str | None = None
    """Set when the run recomputes cells regardless of their cache (`--force`): shared intermediates are then
    reused only when this same run wrote them."""
    reference_interventions: tuple | None = None
    """For comparison readouts (`reference:` names a condition): that condition's bound interventions."""


@dataclass
class MeasurementResult:
    """What a measurement runner returns for one cell: summary metrics, per-sample records and files, all written
    into the cell's record."""

    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    """Non-numeric facts recorded in cell.json (e.g. lm-eval configs, prompt examples)."""


def runner_for(kind: str) -> Callable[[MeasurementTask], MeasurementResult]:
    """The runner of a measurement kind (imported on first use)."""
    return MEASUREMENT_KINDS.impl(kind)
