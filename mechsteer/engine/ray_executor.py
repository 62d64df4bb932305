"""Run a plan's cells as Ray tasks, on one machine or a Ray cluster (`mechsteer run --executor ray`).

Ray is the scheduler; mechsteer adds nothing of its own. The unit of work is the local executor's
`run_model_cells`: a task loads one model once and runs a share of that model's cells, writing each cell
atomically into the shared output folder as it finishes. So the cell hashes, metrics and report are the
local executor's, a killed worker loses only the cell in progress, and running the study again resumes
(a retried task skips the cells that are already recorded).

Paths: every path in a compiled plan is absolute (the output folder, vector and model files, a `trained`
set's run folder), so a worker whose working directory differs from the driver's, on this machine or
another one that shares the file system, writes and reads the same files.

Resources: each task asks for `gpus_per_model` GPUs (the model entry's `gpus`, default 1 when the cluster has
GPUs, else 0) and `cpus_per_worker` CPUs, and sets torch's threads to its CPU share, so workers x threads
never exceed the cores (two 2-thread runs on 2 cores take ~7x longer than one). A model's cells are split
across as many tasks as the cluster can run at once for it. Needs `pip install mechsteer[ray]`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

from mechsteer.engine.execute import NullProgress, RunSummary, cell_state, run_model_cells, select_todo
from mechsteer.engine.plan import Cell, Plan
from mechsteer.engine.provenance import environment
from mechsteer.engine.store import CellStore
from mechsteer.errors import MechsteerError


def _ray():
    try:
        import ray
    except ImportError:
        raise MechsteerError(
            "--executor ray needs Ray, which is not installed", hint="pip install 'mechsteer[ray]' (or pip install ray)"
        ) from None
    return ray


@dataclass(frozen=True)
class RayResources:
    """What each task asks Ray for."""

    cpus_per_worker: float = 1.0
    gpus_per_model: float = 0.0


def _run_share(plan: Plan, model: str, hashes: list[str], threads: int, force: bool) -> list[str]:
    """One Ray task: set torch threads, load the model once, run the cells of `hashes` (those not recorded
    yet, unless `force`: a retried task then skips nothing)."""
    import torch

    torch.set_num_threads(max(1, threads))
    store = CellStore(plan.cells_dir)
    by_hash = {c.hash: c for c in plan.unique_cells()}
    cells = [by_hash[h] for h in hashes if force or cell_state(plan, store, h).state != "fresh"]
    if not cells:
        return []
    return run_model_cells(plan, plan.models[model], cells, store, force=force, env=environment())


def shares(cells: list[Cell], workers: int) -> list[list[Cell]]:
    """Split one model's cells into at most `workers` contiguous, near-equal shares (each share loads the
    model once)."""
    n = max(1, min(workers, len(cells)))
    size = math.ceil(len(cells) / n)
    return [cells[i : i + size] for i in range(0, len(cells), size)]


def submit(
    plan: Plan, todo: list[Cell], resources: RayResources, workers: int | None = None, force: bool = False
) -> list:
    """Submit the cells as Ray tasks (Ray must be initialised); returns their object refs."""
    ray = _ray()
    if not plan.output_dir.is_absolute():  # a Plan built by hand: bind it here, not in each worker's directory
        plan = dataclasses.replace(plan, output_dir=plan.output_dir.resolve())
    total_cpus = ray.cluster_resources().get("CPU", 1)
    total_gpus = ray.cluster_resources().get("GPU", 0)
    by_cpu = int(total_cpus // max(resources.cpus_per_worker, 1e-9))
    by_gpu = int(total_gpus // resources.gpus_per_model) if resources.gpus_per_model else by_cpu
    workers = workers or max(1, min(by_cpu, by_gpu))
    task = ray.remote(_run_share).options(
        num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_model, max_retries=1, retry_exceptions=False
    )
    refs = []
    for model in plan.models:
        cells = [c for c in todo if c.model == model]
        for share in shares(cells, workers):
            refs.append(task.remote(plan, model, [c.hash for c in share], int(resources.cpus_per_worker), force))
    return refs


def execute_plan_ray(
    plan: Plan,
    *,
    address: str | None = None,
    force: bool = False,
    reuse_stale: bool = False,
    progress=None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_model: float | None = None,
) -> RunSummary:
    """Run the plan's uncached cells on Ray (a local instance unless `address` names a cluster)."""
    ray = _ray()
    progress = progress or NullProgress()
    store = CellStore(plan.cells_dir)
    summary = RunSummary()
    t0 = time.perf_counter()
    todo = select_todo(plan, store, force=force, reuse_stale=reuse_stale, progress=progress, summary=summary)
    plan.write_summary()
    if not todo:
        return summary
    started_here = not ray.is_initialized()
    if started_here:
        progress.message(f"starting Ray ({address or 'a local instance'})")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        res = RayResources(
            cpus_per_worker=cpus_per_worker or 1.0,
            gpus_per_model=gpus_per_model if gpus_per_model is not None else (1.0 if has_gpu else 0.0),
        )
        refs = submit(plan, todo, res, workers, force)
        pending, reported = list(refs), set()
        before = {c.hash: _finished_at(store, c.hash) for c in todo}
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            for c in todo:  # progress from the store: a cell counts once its record is (re)written
                if c.hash not in reported and _finished_at(store, c.hash) not in (None, before[c.hash]):
                    reported.add(c.hash)
                    progress.end_cell(c, store.read_record(c.hash).get("timing", {}).get("seconds", 0.0))
        for r in refs:
            summary.executed += ray.get(r)
    finally:
        if started_here:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    return summary


def _finished_at(store: CellStore, h: str) -> str | None:
    """When a cell's record was written (None if it has none): tells a new record from an old one."""
    try:
        return store.read_record(h).get("timing", {}).get("finished") if store.is_done(h) else None
    except (OSError, ValueError):
        return None
