"""Execute a Plan: load each model once, build its vector sets once, run every cell that is not cached
inside its condition's steering scope, and record it atomically.

Interrupting (Ctrl-C) or crashing loses at most the cell in progress; finished cells are complete on disk
and the next run skips them (`resume` is simply running again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mechsteer.engine.claims import claimed
from mechsteer.engine.plan import Cell, Plan
from mechsteer.engine.provenance import environment
from mechsteer.engine.store import CellStore


@dataclass
class RunSummary:
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0


class NullProgress:
    """Progress sink used when no display is wanted (tests, --quiet)."""

    def start_cell(self, cell: Cell, index: int, total: int) -> None: ...
    def advance(self, n: int, total: int | None = None) -> None: ...
    def end_cell(self, cell: Cell, seconds: float) -> None: ...
    def message(self, text: str) -> None: ...


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def bind_intervention(iv, model_spec, resolve_path):
    """Fill in what an intervention takes from its context: the model's default prefix token
    (`prefix_token` without `token`) and paths relative to the study file (`lora1.path`)."""
    if hasattr(iv, "with_model_default"):
        iv = iv.with_model_default(model_spec)
    if hasattr(iv, "with_base_dir"):
        iv = iv.with_base_dir(resolve_path)
    return iv


def execute_plan(plan: Plan, *, force: bool = False, progress=None) -> RunSummary:
    from mechsteer.measurement import MEASUREMENTS, MeasurementTask
    from mechsteer.interventions import steering
    from mechsteer.models.loading import load_model
    from mechsteer.vectors.sources import BuildContext

    progress = progress or NullProgress()
    store = CellStore(plan.cells_dir)
    store.clean_temp()
    ls = plan.loaded
    summary = RunSummary()
    t0 = time.perf_counter()
    todo: list[Cell] = []
    for c in plan.unique_cells():
        if store.is_done(c.hash) and not force:
            summary.cached.append(c.hash)
        else:
            todo.append(c)
    env = environment()
    for model_name in ls.spec.models:
        cells = [c for c in todo if c.model == model_name]
        lm = None
        # claimed: only cells no other run (sharing this output folder) computes; the model loads lazily
        for cell in claimed(store, cells, force, reused=summary.cached.append, notify=progress.message):
            if lm is None:
                progress.message(f"loading model {model_name} ({ls.spec.models[model_name].id})")
                lm = load_model(model_name, ls.spec.models[model_name], ls.base_dir)
                bctx = BuildContext(n_layers=lm.shape.n_layers, d_model=lm.shape.d_model, specs=ls.spec.vectors,
                                    resolve_path=lambda p: ls.resolve_path(p), model_id=lm.spec.id)
                bctx.lm = lm  # builders that need the model (e.g. mean_diff) read it here
            index = len(summary.executed) + 1
            progress.start_cell(cell, index, len(todo))
            interventions = [bind_intervention(iv, lm.spec, ls.resolve_path) for iv in ls.spec.conditions[cell.condition]]
            transfer_only = {r for iv in interventions if iv.kind == "transfer" for r in iv.vector_refs()}
            vectors = {n: bctx.get(n, check_shape=n not in transfer_only)
                       for n in sorted({r for iv in interventions for r in iv.vector_refs()})}
            started, t_cell = _now(), time.perf_counter()
            with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
                task = MeasurementTask(lm=lm, ctx=ctx, options=cell.measurement.options, seed=cell.seed, study=ls,
                                       progress=progress.advance)
                result = MEASUREMENTS.get(cell.measurement.kind)(task)
            seconds = time.perf_counter() - t_cell
            record = {
                "hash": cell.hash,
                "study": ls.spec.name,
                "profile": ls.profile,
                "model": cell.model,
                "conditions": plan.conditions_of(cell.hash),
                "measurement": cell.measurement.id,
                "seed": cell.seed,
                "key": cell.key,
                "spec_file": str(ls.file),
                "spec_hash": ls.spec_hash(),
                "resolved_spec": ls.spec.model_dump(mode="json"),
                "model_provenance": lm.provenance(),
                "vectors": {n: {"sha256": v.sha256(), "layers": v.layers, "norms": v.norms(), "meta": v.meta}
                            for n, v in vectors.items()},
                "environment": env,
                "timing": {"started": started, "finished": _now(), "seconds": round(seconds, 3)},
                "info": result.info,
            }
            store.write(cell.hash, record, result.metrics, result.samples, result.files)
            summary.executed.append(cell.hash)
            progress.end_cell(cell, seconds)
        del lm
    summary.seconds = time.perf_counter() - t0
    return summary
