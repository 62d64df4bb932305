"""The Python API (`import mechsteer as ms`): studies, runs and results from notebooks and scripts, and the
building blocks a researcher uses directly. Every CLI command is a few lines over this module.

    study = ms.load_study("studies/quickstart.yaml", profile=None)   # or ms.Study.from_dict({...})
    plan = study.plan(limit=16)        # cells, hashes, cache state; no model loaded
    results = study.run(limit=16)      # the same cells and cache as `mechsteer run`
    results.table(); results.wide(); results.delta(); results.samples(condition="steered", measurement="t1")
    results.effects(); results.plot()          # each condition vs baseline and control, with CIs; the figure
    ms.load_results("outputs/quickstart")     # a finished run, without its study file
    ms.diff(results_a, results_b)              # paired statistics of two runs (a DiffResult)
    ms.diff("outputs/quickstart-families", models=("smol", "gemma"))   # two models of one run
    ms.list_outputs("outputs")                 # the run folders: cells recorded / stale / damaged

Errors are raised as `mechsteer.errors.MechsteerError` subclasses carrying the same located problems the CLI
prints (`file:line:col: field: message (hint)`); nothing here prints or exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from mechsteer.engine.execute import CellState, cell_states, execute_plan
from mechsteer.engine.plan import Plan, compile_study
from mechsteer.errors import MechsteerError, Problem, SpecError
from mechsteer.results import Results
from mechsteer.spec.base import LIMIT_MAX
from mechsteer.spec.bounds import DEFAULT_MAX_CELLS
from mechsteer.spec.loader import LoadedStudy, load_study_dict
from mechsteer.spec.loader import load_study as _load_study_file


class Study:
    """A validated study (from a file or a dict), with a profile merged in."""

    def __init__(self, loaded: LoadedStudy):
        self.loaded = loaded

    @classmethod
    def from_dict(
        cls,
        doc: dict,
        *,
        profile: str | None = None,
        base_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        max_cells: int = DEFAULT_MAX_CELLS,
    ) -> Study:
        """A study built in memory: the same document a YAML study file holds. Relative paths are resolved
        against `base_dir` (default: the working directory). More than `max_cells` cells is an error."""
        return cls(load_study_dict(doc, profile, base_dir=base_dir, data_dir=data_dir, max_cells=max_cells))

    @property
    def spec(self):
        """The validated `StudySpec` (a frozen pydantic model)."""
        return self.loaded.spec

    @property
    def name(self) -> str:
        """The study's `name:` (its output folder is `<output_dir>/<name>[-<profile>]`)."""
        return self.loaded.spec.name

    @property
    def profile(self) -> str | None:
        """The merged profile, or None."""
        return self.loaded.profile

    def plan(self, limit: int | None = None, output_dir: str | Path = "outputs") -> Plan:
        """The compiled cells (model x condition x measurement x seed) with their hashes; loads no model.
        With `limit`, the plan's folder is `<output_dir>/<study>[-<profile>]/limit-<N>/`: a limited run never
        replaces the full run's plan.json and report. `Plan.notes` lists what the cell keys could not pin
        down (a hub commit that could not be resolved)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX):
            raise SpecError(f"limit={limit!r}: give a whole number from 1 to {LIMIT_MAX:,} (or None for no limit)")
        return compile_study(self.loaded, limit=limit, output_root=output_dir)

    def status(self, limit: int | None = None, output_dir: str | Path = "outputs") -> pd.DataFrame:
        """One row per cell of the plan with its cache state (missing, fresh, stale, damaged, shared) and the
        reason of a stale or damaged state: what `mechsteer plan` prints."""
        return plan_status(self.plan(limit, output_dir))

    def run(
        self,
        limit: int | None = None,
        output_dir: str | Path = "outputs",
        *,
        force: bool = False,
        reuse_stale: bool = False,
        progress: Any = False,
        threads: int | None = None,
        report: bool = True,
        executor: str = "local",
        address: str | None = None,
    ) -> Results:
        """Run the cells that are not cached (all with `force`), write the report (unless `report=False`) and
        return the results. `progress=True` shows a rich progress display (terminals and notebooks), or pass
        any object with the executor's progress methods. `threads` sets torch's CPU threads (per worker with
        Ray: its CPU share). `executor="ray"` runs the cells as Ray tasks (`address`: a cluster; default a
        local Ray instance)."""
        plan = self.plan(limit, output_dir)
        return run_plan(
            plan,
            force=force,
            reuse_stale=reuse_stale,
            progress=progress,
            threads=threads,
            report=report,
            executor=executor,
            address=address,
        )

    def __repr__(self) -> str:
        return f"Study({self.name!r}, profile={self.profile!r}, file={self.loaded.display_name!r})"


def load_study(
    path: str | Path,
    profile: str | None = None,
    *,
    data_dir: str | Path | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> Study:
    """Read, merge `profile` into and validate a study file (SpecError lists every problem; a study of more
    than `max_cells` cells is one)."""
    return Study(_load_study_file(path, profile, data_dir=data_dir, max_cells=max_cells))


def rehearsal_plan(
    path: str | Path,
    profile: str | None = None,
    *,
    limit: int | None = None,
    output_dir: str | Path = "outputs",
    max_cells: int = DEFAULT_MAX_CELLS,
    caps=None,
) -> Plan:
    """The plan of a study's rehearsal (`mechsteer run FILE -p PROFILE --rehearse`): every model replaced by a
    random-weight twin of its architecture and head layout, benchmarks by local stand-in files, vector files and
    training runs by random stand-ins, every condition and sweep at full size, measurements shrunk
    (`mechsteer.spec.rehearsal.RehearsalCaps`); its folder is `<output_dir>/<study>[-<profile>]-rehearsal`, and
    plan.json, the report and every cell key say it is a rehearsal. Builds the twins and stand-ins (torch)."""
    from mechsteer.engine.rehearsal import rehearsal_plan as _plan

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX):
        raise SpecError(f"limit={limit!r}: give a whole number from 1 to {LIMIT_MAX:,} (or None for no limit)")
    from mechsteer.errors import ProblemList
    from mechsteer.spec.checks import backend_problems, check_study

    # `data_dir` placeholders stay (stood in); a rehearsal runs on transformers, so `backend: vllm` need not be
    # runnable here: every other problem of the study is reported as `validate` reports it
    loaded = _load_study_file(path, profile, max_cells=max_cells, check_refs=False)
    skip = {p.format() for p in backend_problems(loaded)}
    problems = [p for p in check_study(loaded, max_cells=max_cells) if p.format() not in skip]
    ProblemList(problems).raise_if_any(SpecError)
    return _plan(loaded, limit=limit, output_root=output_dir, caps=caps, max_cells=max_cells)


def rehearse(path: str | Path, profile: str | None = None, **options) -> Results:
    """Run a study's rehearsal (see `rehearsal_plan`) and write its report; `options` are `rehearsal_plan`'s
    (limit, output_dir, max_cells, caps) and `run_plan`'s (force, threads, progress, ...)."""
    plan_keys = ("limit", "output_dir", "max_cells", "caps")
    plan = rehearsal_plan(path, profile, **{k: options.pop(k) for k in plan_keys if k in options})
    return run_plan(plan, **options)


def plan_status(plan: Plan) -> pd.DataFrame:
    """The cells of a plan with their cache states (see `Study.status`)."""
    states: dict[str, CellState] = cell_states(plan)
    rows, seen = [], set()
    for c in plan.cells:
        st = states[c.hash]
        state = "shared" if c.hash in seen and st.state != "fresh" else st.state
        seen.add(c.hash)
        rows.append({**c.row(), "cell": c.short, "state": state, "reason": st.reason, "backend_note": c.backend_note})
    return pd.DataFrame(
        rows,
        columns=[
            "cell",
            "model",
            "condition",
            "measurement",
            "kind",
            "seed",
            "state",
            "reason",
            "backend",
            "backend_note",
            "hash",
        ],
    )


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU threads (None leaves torch's choice)."""
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


def run_plan(
    plan: Plan,
    *,
    force: bool = False,
    reuse_stale: bool = False,
    progress: Any = False,
    threads: int | None = None,
    report: bool = True,
    executor: str = "local",
    address: str | None = None,
) -> Results:
    """Execute a compiled plan (see `Study.run`). torch is imported only when a cell has to run."""
    if executor not in ("local", "ray"):
        raise MechsteerError(f"unknown executor {executor!r}", hint="use local or ray")
    todo = sum(st.state != "fresh" for st in cell_states(plan).values()) if not force else len(plan.unique_cells())
    if executor == "ray":
        from mechsteer.engine.ray_executor import execute_plan_ray

        run = lambda prog: execute_plan_ray(
            plan,
            address=address,
            force=force,
            reuse_stale=reuse_stale,  # noqa: E731
            progress=prog,
            cpus_per_worker=threads,
        )
    else:
        if todo:
            set_threads(threads)
        run = lambda prog: execute_plan(plan, force=force, reuse_stale=reuse_stale, progress=prog)  # noqa: E731
    if progress is True and todo:
        from mechsteer.progress import RichProgress

        with RichProgress(todo) as prog:
            summary = run(prog)
    else:
        summary = run(progress or None)
    results = Results.from_plan(plan)
    results.run_summary = summary
    if report:
        from mechsteer.report import write_report

        write_report(results)
    return results


def load_results(path: str | Path) -> Results:
    """The results of a finished run from its output folder alone (outputs/<study>[-<profile>])."""
    return Results.load(path)


def list_outputs(root: str | Path = "outputs") -> pd.DataFrame:
    """The run folders under `root` (`mechsteer ls`): study, profile, limit, models, cells, how many are
    recorded, stale (other code than now; None when the study file cannot be compiled again) and damaged, the
    last run and the report's path (`mechsteer.report.folders`)."""
    from mechsteer.report.folders import list_outputs as _list

    return _list(root)


def diff(
    a: Results | str | Path,
    b: Results | str | Path | None = None,
    *,
    models: tuple[str, str] | list[str] | None = None,
    **options,
):
    """Compare two runs of the same study, B - A, or with `models=("smol", "gemma")` and one run, model B with
    model A inside it (a study that declares both): conditions matched by name (layer sweeps by relative
    depth), paired statistics on shared problems (exact McNemar, paired bootstrap 95% CI), readout metrics
    side by side. Returns a `mechsteer.comparison.DiffResult`; see `mechsteer.comparison.diff` for the
    options (`seed`, `n_boot`, `metrics`)."""
    from mechsteer.comparison import diff as _diff

    return _diff(a, b, models=models, **options)


def load_model(
    model: str | dict | Any,
    *,
    name: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    base_dir: str | Path | None = None,
):
    """Load a model as mechsteer does for a study: a hub id, a local directory, the embedded `smollm2-135m`,
    a model-entry dict or a `ModelSpec`. Returns a `LoadedModel` (.model, .tokenizer, .adapter, .shape)."""
    from mechsteer.models.loading import load_model as _load
    from mechsteer.spec.models import ModelSpec

    if isinstance(model, str):
        model = {"id": model}
    if isinstance(model, dict):
        model = {**model, **({"dtype": dtype} if dtype else {}), **({"device": device} if device else {})}
        model = _validate(ModelSpec, model, "model")
    return _load(name or model.id, model, Path(base_dir) if base_dir else Path.cwd())


def _validate(cls, value: Any, what: str):
    from pydantic import ValidationError

    try:
        return cls.model_validate(value) if hasattr(cls, "model_validate") else cls.validate_python(value)
    except ValidationError as e:
        raise SpecError(
            [
                Problem(err["msg"], field=f"{what}." + ".".join(map(str, err["loc"])))
                for err in e.errors(include_url=False)
            ]
        ) from None


@contextmanager
def steering(model: Any, interventions: list, vectors: dict | None = None, *, tokenizer=None) -> Iterator[Any]:
    """Apply interventions to any supported HF causal LM (or a LoadedModel) for the duration of the block:

        with ms.steering(model, [{"kind": "add", "vector": "v", "layer": 12}], {"v": vector_set}):
            model.generate(...)

    `interventions` are dicts (as in a study's condition) or spec objects; `vectors` maps names to VectorSets
    or `[n_layers, d_model]` tensors. Every hook is removed on exit, whatever happens inside. Yields the
    SteeringContext (`ctx.begin()` before each generate call keeps position selectors right)."""
    from pydantic import TypeAdapter

    from mechsteer.interventions import steering as _steering
    from mechsteer.models.adapters import adapter_for
    from mechsteer.spec.study import InterventionSpec
    from mechsteer.vectors.vector_set import VectorSet

    lm = model if hasattr(model, "adapter") and hasattr(model, "model") else None
    hf = lm.model if lm else model
    tokenizer = tokenizer or (lm.tokenizer if lm else None)
    adapter = lm.adapter if lm else adapter_for(hf)
    specs = [
        iv if not isinstance(iv, dict) else _validate(TypeAdapter(InterventionSpec), iv, f"interventions[{i}]")
        for i, iv in enumerate(interventions)
    ]
    sets = {k: (v if isinstance(v, VectorSet) else _as_vector_set(v)) for k, v in (vectors or {}).items()}
    with _steering(hf, adapter, specs, sets, tokenizer=tokenizer) as ctx:
        yield ctx


def _as_vector_set(v):
    """A `[n_layers, d_model]` tensor as a VectorSet; rows that are all zero count as absent."""
    from mechsteer.vectors.vector_set import VectorSet

    rows = v.detach().float().cpu()
    if rows.dim() != 2:
        raise MechsteerError(
            f"a steering vector stack must be [n_layers, d_model], got shape {tuple(rows.shape)}",
            hint="pass a VectorSet, or a 2-D tensor with one row per layer",
        )
    present = [i for i in range(rows.shape[0]) if bool(rows[i].any())]
    return VectorSet(rows, present)


__all__ = [
    "Study",
    "load_study",
    "load_results",
    "diff",
    "list_outputs",
    "load_model",
    "steering",
    "Results",
    "Plan",
    "plan_status",
    "rehearsal_plan",
    "rehearse",
    "run_plan",
    "set_threads",
]
