"""Execute a Plan: load each model once, build its vector sets once, run every cell that is not cached
inside its condition's steering scope, and record it atomically.

The executor reads only the plan (never the study file): each cell carries its bound interventions and its
typed measurement spec; the measurement's runner comes from its kind's registration. Interrupting (Ctrl-C)
or crashing loses at most the cell in progress; finished cells are complete on disk and the next run skips
them (`resume` is simply running again). A cell recorded by other code is stale (`code_version`) and is
recomputed unless `reuse_stale` is set, in which case its record notes the reuse (under the cell's claim).

Intermediate files (`work/`) follow their cell: a cell's own work folder is `work/<cell hash>/<code digest>/`,
so a stale cell (other code or packages) never resumes from files the old code wrote, and `force` empties
`work/<cell hash>/` before the cell runs; files shared between cells (`work/sequences/`) are keyed by the
fingerprint of the code that computes them (`MeasurementTask.code_of`), and with `force` only those written by
this very run are reused.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mechsteer.engine.claims import Claim, claimed
from mechsteer.engine.code_version import code_digest, code_fingerprint, stale_reason
from mechsteer.engine.plan import BACKENDS, Cell, ModelEntry, Plan
from mechsteer.engine.provenance import environment
from mechsteer.engine.store import CellStore
from mechsteer.spec.model_sets import vectors_for_model

State = Literal["missing", "fresh", "stale", "damaged"]
"""A cell's cache state (see `CellState`)."""


@dataclass(frozen=True)
class CellState:
    """A cell's cache state: `missing` (never run), `fresh` (recorded by this code), `stale` (recorded by
    other code or package versions; `reason` says which), `damaged` (its folder is unreadable)."""

    state: State
    reason: str | None = None


@dataclass
class RunSummary:
    """What a run did: cells executed, found cached, reused although stale (hashes), and its wall time."""

    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    reused_stale: list[str] = field(default_factory=list)
    seconds: float = 0.0


class NullProgress:
    """Progress sink used when no display is wanted (tests, --quiet, the Python API by default)."""

    def start_cell(self, cell: Cell, index: int, total: int) -> None:
        """A cell starts (`index` of `total`)."""

    def advance(self, n: int, total: int | None = None) -> None:
        """The running cell did `n` more units of work (of `total`, when known)."""

    def end_cell(self, cell: Cell, seconds: float) -> None:
        """A cell is recorded."""

    def message(self, text: str) -> None:
        """A line for the user."""


def _now() -> str:
    """The current UTC time, ISO 8601 to the second (what records and timings store)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def cell_state(plan: Plan, store: CellStore, h: str) -> CellState:
    """The cache state of one cell hash (stale: recorded with another code fingerprint than the plan's for
    this cell)."""
    if not store.dir(h).exists():
        return CellState("missing")
    damage = store.damage(h)
    if damage is not None:
        return CellState("damaged", f"{store.dir(h)}: {damage}")
    try:
        record = store.read_record(h)
    except (OSError, ValueError) as e:  # removed or rewritten between the two reads
        return CellState("damaged", f"{store.dir(h)}: {type(e).__name__}: {e}")
    reason = stale_reason(record.get("code"), plan.cell(h).code)
    return CellState("stale", reason) if reason else CellState("fresh")


def cell_states(plan: Plan, store: CellStore | None = None) -> dict[str, CellState]:
    """The cache state of every unique cell of the plan, by hash."""
    store = store or CellStore(plan.cells_dir)
    return {c.hash: cell_state(plan, store, c.hash) for c in plan.unique_cells()}


def _reuse_stale(store: CellStore, h: str, plan: Plan) -> State:
    """Keep a stale cell and record in it that a run reused it under other code. cell.json is read and
    rewritten (atomically) only while holding the cell's claim, so a run recomputing the cell meanwhile is
    waited for and its result is never overwritten. Returns the state found under the claim: `stale` (noted
    and kept), `fresh` (another run recomputed it: cached, no note), or `missing`/`damaged` (to run)."""
    from mechsteer.atomic import atomic_write_text

    with Claim(store.root, h) as claim:
        claim.acquire(blocking=True)
        state = cell_state(plan, store, h).state
        if state == "stale":
            record = store.read_record(h)
            record.setdefault("reused_stale", []).append({"at": _now(), "code": plan.cell(h).code})
            atomic_write_text(store.dir(h) / "cell.json", json.dumps(record, indent=2, ensure_ascii=False))
        return state


def select_todo(
    plan: Plan, store: CellStore, *, force: bool, reuse_stale: bool, progress, summary: RunSummary
) -> list[Cell]:
    """The unique cells to run (missing, damaged, stale unless reused; all with `force`); cached ones are
    added to `summary`, reused stale ones get a note in their record. Shared by every executor."""
    todo: list[Cell] = []
    for c in plan.unique_cells():
        st = cell_state(plan, store, c.hash)
        if force or st.state in ("missing", "damaged"):
            if st.state == "damaged":
                progress.message(f"cell {c.short} is damaged ({st.reason}); running it again")
            todo.append(c)
        elif st.state == "stale" and not reuse_stale:
            progress.message(f"cell {c.short} is stale ({st.reason}); running it again")
            todo.append(c)
        elif st.state == "stale":
            now = _reuse_stale(store, c.hash, plan)
            if now in ("missing", "damaged"):
                todo.append(c)
                continue
            if now == "stale":
                summary.reused_stale.append(c.hash)
            summary.cached.append(c.hash)
        else:
            summary.cached.append(c.hash)
    return todo


def execute_plan(plan: Plan, *, force: bool = False, reuse_stale: bool = False, progress=None) -> RunSummary:
    """Run the plan's cells that are missing, damaged or stale (all of them with `force`), in this process."""
    progress = progress or NullProgress()
    store = CellStore(plan.cells_dir)
    store.clean_temp()
    summary = RunSummary()
    t0 = time.perf_counter()
    todo = select_todo(plan, store, force=force, reuse_stale=reuse_stale, progress=progress, summary=summary)
    plan.write_summary()
    env = environment()
    for model_name, entry in plan.models.items():
        cells = [c for c in todo if c.model == model_name]
        if cells:
            run_model_cells(
                plan, entry, cells, store, force=force, progress=progress, summary=summary, total=len(todo), env=env
            )
    summary.seconds = time.perf_counter() - t0
    return summary


def run_model_cells(
    plan: Plan,
    entry: ModelEntry,
    cells: list[Cell],
    store: CellStore,
    *,
    force: bool = False,
    progress=None,
    summary: RunSummary | None = None,
    total: int | None = None,
    env: dict | None = None,
) -> list[str]:
    """Load one model (once, and only if a cell needs it) and run the given cells of it, recording each
    atomically. Returns the hashes run. This is the unit of work of every executor (local, Ray).

    Cells are taken through per-cell claims (`claims.claimed`), so runs sharing the output folder never
    compute a cell twice: a cell another run finished meanwhile (fresh under this code) is counted as cached."""
    from mechsteer.builders.context import BuildContext
    from mechsteer.interventions import steering
    from mechsteer.measurement import MeasurementTask, runner_for
    from mechsteer.models.loading import load_model

    progress = progress or NullProgress()
    summary = summary or RunSummary()
    env = env or environment()
    lm = bctx = None
    done = []
    stale = lambda h: cell_state(plan, store, h).state == "stale"  # noqa: E731 - re-read under the claim
    for cell in claimed(store, cells, force, needs_run=stale, reused=summary.cached.append, notify=progress.message):
        if lm is None:
            progress.message(f"loading model {entry.name} ({entry.spec.id})")
            lm = load_model(entry.name, entry.load_spec(), entry.base_dir)
            bctx = BuildContext(
                n_layers=lm.shape.n_layers,
                d_model=lm.shape.d_model,
                specs=vectors_for_model(plan.vectors, entry.name),  # per-model sets: this model's own
                model_id=lm.spec.id,
                model_name=entry.name,
                lm=lm,
            )
        progress.start_cell(cell, len(summary.executed) + 1, total or len(cells))
        foreign = {r for iv in cell.interventions if not iv.checks_vector_shape for r in iv.vector_refs()}
        vectors = {n: bctx.get(n, check_shape=n not in foreign) for n in cell.vector_names()}
        started, t_cell = _now(), time.perf_counter()
        work_dir = prepare_work_dir(plan, cell, force)
        own = cell.measurement.spec.steers_itself  # the runner applies the condition itself
        with steering(
            lm.model, lm.adapter, [] if own else list(cell.interventions), vectors, tokenizer=lm.tokenizer
        ) as ctx:
            task = MeasurementTask(
                lm=lm,
                ctx=None if own else ctx,
                spec=cell.measurement.spec,
                seed=cell.seed,
                progress=progress.advance,
                interventions=cell.interventions,
                vectors=vectors,
                work_dir=work_dir,
                shared_work_dir=plan.output_dir / "work",
                code_of=_intermediate_code,
                run_id=plan.run_id if force else None,
                reference_interventions=cell.reference,
            )
            if cell.backend in BACKENDS:
                result = importlib.import_module(BACKENDS[cell.backend]).run_eval_vllm(task, list(cell.interventions))
            else:
                result = runner_for(cell.measurement.kind)(task)
        seconds = time.perf_counter() - t_cell
        record = {
            "hash": cell.hash,
            "study": plan.study,
            "profile": plan.profile,
            "model": cell.model,
            "conditions": plan.conditions_of(cell.hash),
            "measurement": cell.measurement.id,
            "seed": cell.seed,
            "key": cell.key,
            "code": cell.code,
            "interventions": [iv.model_dump(mode="json") for iv in cell.interventions],
            "measurement_spec": cell.measurement.spec.model_dump(mode="json"),
            "spec_file": plan.spec_file,
            "spec_hash": plan.spec_hash,
            "model_provenance": lm.provenance(),
            "vectors": {
                n: {"sha256": v.sha256(), "layers": v.layers, "norms": v.norms(), "meta": v.meta}
                for n, v in vectors.items()
            },
            "environment": env,
            "timing": {"started": started, "finished": _now(), "seconds": round(seconds, 3)},
            "info": result.info,
        }
        store.write(cell.hash, record, result.metrics, result.samples, result.files)
        summary.executed.append(cell.hash)
        done.append(cell.hash)
        progress.end_cell(cell, seconds)
    for backend in sorted({c.backend for c in cells} & set(BACKENDS)):
        importlib.import_module(BACKENDS[backend]).release_engine()
    del lm
    return done


def _intermediate_code(modules) -> dict:
    """The code fingerprint of an intermediate computed by `modules` (see `MeasurementTask.code_of`)."""
    return code_fingerprint(sorted(modules), engine=False)


def prepare_work_dir(plan: Plan, cell: Cell, force: bool) -> Path:
    """The cell's work folder `work/<cell hash>/<code digest>/` (created on demand by the readout that uses
    it). Called under the cell's claim: folders of other code fingerprints (a stale cell's intermediates)
    are removed, and with `force` every earlier intermediate of the cell is."""
    root = plan.output_dir / "work" / cell.hash
    keep = code_digest(cell.code)
    if root.is_dir():
        for p in root.iterdir():
            if not force and p.name == keep:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    return root / keep
