"""The registry of measurement runners, keyed by measurement kind ("eval", "generate", "first_token", ...).

A runner is `run(task: MeasurementTask) -> MeasurementResult`. It runs inside the cell's steering scope and
must call `task.ctx.begin()` before each generate / forward batch (the generation helper does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mechsteer.interventions.base import SteeringContext
from mechsteer.models.loading import LoadedModel
from mechsteer.registry import Registry
from mechsteer.spec.loader import LoadedStudy


@dataclass
class MeasurementTask:
    lm: LoadedModel
    ctx: SteeringContext
    options: dict
    seed: int
    study: LoadedStudy
    progress: Callable[[int, int | None], None] = lambda advance, total=None: None
    """progress(advance, total): advance the cell's progress bar; pass total once when known."""


@dataclass
class MeasurementResult:
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    """Non-numeric facts recorded in cell.json (e.g. lm-eval configs, prompt examples)."""


MEASUREMENTS: Registry[Callable[[MeasurementTask], MeasurementResult]] = Registry("measurement kind")
MEASUREMENTS.register("generate", "mechsteer.readouts.generate:run_generate")
MEASUREMENTS.register("first_token", "mechsteer.readouts.first_token:run_first_token")
MEASUREMENTS.register("eval", "mechsteer.eval.runner:run_eval")
