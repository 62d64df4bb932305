"""Compile a validated study into a Plan: a self-contained value that the executor runs without ever going
back to the study file.

A cell = one model x one condition x one measurement (an evaluation task or a readout) x one seed, and it
carries everything its execution needs, already bound for its model:

* `interventions`: typed intervention specs with layer references resolved to block indices (when the
  model's shape is known without loading it), paths made absolute and model defaults filled in
  (`InterventionBase.bind`);
* `measurement`: a typed measurement spec (`EvalTaskSpec` for a benchmark task, the readout's own spec for
  a readout) with limits resolved and data folders absolute, plus the data fingerprint.

The plan itself is a frozen value: the model entries, the bound vector specs (a `trained` set with its
training run's files located, so execution never reads a training file), the condition order and the few
study facts the report needs (description, evaluation settings, sweep templates), not a copy of the study. Its `hash` per cell covers what can change a result: the model entry (device excluded)
with its content (`models.identity`: file hashes of a local folder, the commit a hub id loads, the embedded
model's package and GGUF), the interventions, the content of every vector set they read (file sha256, or the
deterministic spec of generated sets: each vector kind's `content_key`), the measurement with its data
fingerprint (file hash, or the commit
of a hub dataset), and the seed. The code that computes a cell is fingerprinted separately, per cell
(`code_version`: the modules its kinds use): a cell computed by other code is stale, not silently reused.
What could not be identified (a hub commit offline and not cached) is keyed as `unresolved` and listed in
`Plan.notes`. The condition's *name* is not hashed, so conditions with the same interventions share one cell
(the baseline is computed once) and renaming a condition never re-runs anything. A `limit` run (fewer
problems) writes to its own folder, `<output>/limit-<N>/`, so it never replaces the full run's plan.json
and report. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mechsteer.backends.expressible import vllm_expressible
from mechsteer.engine.code_version import code_fingerprint, impl_module
from mechsteer.errors import CompileError
from mechsteer.file_hash import sha256_file
from mechsteer.hub import resolve_commit
from mechsteer.models.dtype import resolve_dtype
from mechsteer.models.identity import KEYED_AS, UNRESOLVED, model_identity, model_source
from mechsteer.models.twin import MARKER as TWIN_MARKER
from mechsteer.spec.evaluation import EvaluationSpec
from mechsteer.spec.kinds import INTERVENTION_KINDS, MEASUREMENT_KINDS, VECTOR_KINDS
from mechsteer.spec.kinds.eval_task import EvalTaskSpec
from mechsteer.spec.kinds.interventions import InterventionBase
from mechsteer.spec.kinds.measurements import MeasurementBase, resolved_limit
from mechsteer.spec.kinds.vectors import VectorSourceBase
from mechsteer.spec.loader import LoadedStudy, canonical_json
from mechsteer.spec.model_sets import vectors_for_model
from mechsteer.spec.models import ModelShape, ModelSpec, known_shape
from mechsteer.spec.paths import file_content_key
from mechsteer.spec.rehearsal import SUFFIX as REHEARSAL_SUFFIX
from mechsteer.spec.study import condition_controls, expanded_conditions
from mechsteer.spec.sweeps import SweepSpec

BACKENDS = {"vllm": "mechsteer.eval.vllm_backend"}
"""Evaluation engines other than HF: the module the executor calls (`run_eval_vllm(task, interventions)`,
`release_engine()`). Named, not imported, so that only the cells that run on a backend carry its module in
their code fingerprint."""

PLAN_FILE = "plan.json"
"""Written into the output folder by every run, so results can be read back without the study file."""

PLAN_FORMAT = "mechsteer.plan/2"
"""The format of plan.json (`/2`: the sweep templates are in the plan and no cell record copies the study;
`results.Results.load` also reads `/1`)."""


@dataclass(frozen=True)
class Measurement:
    """What a cell measures: `eval:<task>` or `readout:<name>`, with its typed, resolved spec."""

    id: str
    """`eval:<task>` or `readout:<name>` (the name in the study's `readouts:`)."""
    kind: str
    """The measurement kind (`spec.kind`): the key in MEASUREMENT_KINDS that names its runner."""
    spec: MeasurementBase = field(compare=False)
    """The typed spec (EvalTaskSpec, or the readout's spec class) the runner reads, bound (`bound`)."""
    data: dict = field(default_factory=dict, compare=False)
    """Fingerprint of the data it reads (hashed into the cell)."""

    @property
    def name(self) -> str:
        """The task or readout name (the part after `eval:` / `readout:`)."""
        return self.id.split(":", 1)[1]


@dataclass(frozen=True)
class ModelEntry:
    """A model as the executor loads it: the entry, the folder relative ids are resolved against, its shape
    when known without loading, and its content identity (`models.identity`)."""

    name: str
    spec: ModelSpec
    base_dir: Path
    shape: ModelShape | None = None
    source: str = "hub"
    """embedded | local | hub | missing (`models.identity.model_source`)."""
    identity: dict = field(default_factory=dict, compare=False)
    """Content identity hashed into every cell of the model."""
    commit: str | None = None
    """The hub commit the identity names; the executor loads exactly this one."""
    note: str | None = None
    """Why the identity is incomplete (e.g. a hub commit that could not be resolved), else None."""

    @classmethod
    def of(cls, name: str, spec: ModelSpec, base_dir: Path, shape: ModelShape | None = None) -> ModelEntry:
        """The entry of a study's model, with its source and content identity (reads file hashes or the hub)."""
        source, _ = model_source(spec.id, base_dir)
        identity, commit, note = model_identity(spec.id, spec.revision, base_dir)
        return cls(name, spec, base_dir, shape, source, identity, commit, note)

    def load_spec(self) -> ModelSpec:
        """The entry to load: a hub model pinned to the commit its cells are keyed by."""
        return self.spec.model_copy(update={"revision": self.commit}) if self.commit else self.spec


@dataclass(frozen=True)
class Cell:
    """One unit of work and of caching: a model x a condition x a measurement x a seed, with everything its
    execution needs bound (see the module docstring). Cells of different conditions with the same content
    share a `hash` (and one record)."""

    model: str
    """The model's key in the study's `models:`."""
    condition: str
    """The condition's name (not hashed)."""
    interventions: tuple[InterventionBase, ...] = field(compare=False)
    """The condition's intervention specs, bound for this model."""
    measurement: Measurement
    """What the cell measures."""
    seed: int
    """The seed of the measurement's sampling."""
    key: dict = field(hash=False, compare=False, repr=False)
    """Everything hashed into `hash` (model content, interventions, vector contents, measurement, seed)."""
    hash: str = ""
    """sha256 of `key`: the cell's folder name under `cells/`."""
    code: dict = field(default_factory=dict, hash=False, compare=False, repr=False)
    """The code fingerprint of what computes this cell (`code_version.code_fingerprint` of its kinds)."""
    backend: str = "hf"
    """`vllm` for an evaluation cell that runs on a bias-compiled checkpoint, else `hf`."""
    backend_note: str | None = None
    """Why a cell of a `backend: vllm` model stays on HF (None otherwise)."""
    reference: tuple[InterventionBase, ...] | None = field(default=None, compare=False)
    """The bound interventions of the condition a comparison readout (`reference:`) compares with (None when
    the measurement names no reference)."""

    @property
    def short(self) -> str:
        """The first 12 characters of the hash (how output names a cell)."""
        return self.hash[:12]

    def vector_names(self) -> list[str]:
        """Vector sets the cell reads: its condition's and its comparison reference's."""
        return sorted({ref for iv in (*self.interventions, *(self.reference or ())) for ref in iv.vector_refs()})

    def row(self) -> dict:
        """The plain record of this cell in plan.json (what results readers need)."""
        return {
            "hash": self.hash,
            "model": self.model,
            "condition": self.condition,
            "measurement": self.measurement.id,
            "kind": self.measurement.kind,
            "seed": self.seed,
            "backend": self.backend,
        }


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything a run needs; `execute_plan` and the report read only this and the cell store. A frozen value
    made by `compile_study`: nothing changes it afterwards (a changed study or training run is a new plan)."""

    study: str
    """The study's name."""
    profile: str | None
    """The profile it was compiled with."""
    output_dir: Path
    """The run's folder (absolute): `cells/`, `work/`, `report/` and plan.json live here."""
    models: dict[str, ModelEntry]
    """The model entries by key, in study order."""
    vectors: dict[str, VectorSourceBase]
    """Vector specs by name, bound (`VectorSourceBase.bind`: paths absolute, training runs' files located)."""
    conditions: tuple[str, ...]
    """Condition names in study order (sweeps expanded)."""
    baseline: str | None
    """The first condition without interventions (the shared unsteered baseline), if any."""
    cells: tuple[Cell, ...]
    """Every model x condition x measurement x seed, in study order."""
    description: str | None = None
    """The study's description (shown by the report)."""
    deviations: tuple[str, ...] = ()
    """Where the study (or its profile) departs from the paper's procedure (`deviations:`), for the report's
    "Deviations from the paper" section."""
    evaluation: EvaluationSpec | None = None
    """The study's evaluation block (tasks, protocol, seeds, reference) for the paper-shaped tables."""
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Sweep condition templates -> their variables' values as written (`{"single_{layer}": {"layer":
    "layers"}}`), which the report's per-layer, composition and transfer views group by."""
    spec_file: str | None = None
    """The study file (absolute), recorded in every cell."""
    spec_hash: str = ""
    """sha256 of the validated, profile-merged study (recorded in every cell)."""
    notes: tuple[str, ...] = ()
    """What the cell keys could not pin down (a hub commit not resolved), for `plan` and `run` to show."""
    controls: dict[str, str] = field(default_factory=dict)
    """Condition -> the condition the report compares it with besides the baseline (its `control:`, a sweep's
    control template filled per expansion, else `evaluation.control`), for controls that are conditions."""
    report: dict[str, Any] | None = None
    """The study's `report:` settings (headline metric)."""
    limit: int | None = None
    """The `--limit` the plan was compiled with (its cells then live in their own folder)."""
    run_id: str = field(default_factory=lambda: secrets.token_hex(8))
    """Names one execution of this plan (forced runs reuse only the shared intermediates they wrote)."""
    rehearsal: dict | None = None
    """A rehearsal's record (`mechsteer.spec.rehearsal`: what was stood in, the caps), None for a real run: a
    rehearsal's folder, plan.json, report and cell keys all say it is one."""

    @property
    def cells_dir(self) -> Path:
        """Where the cells are recorded (`<output_dir>/cells`)."""
        return self.output_dir / "cells"

    @cached_property
    def _by_hash(self) -> dict[str, Cell]:
        out: dict[str, Cell] = {}
        for c in self.cells:
            out.setdefault(c.hash, c)
        return out

    def cell(self, h: str) -> Cell:
        """The (first) cell with hash `h`."""
        try:
            return self._by_hash[h]
        except KeyError:
            raise KeyError(f"no cell {h} in the plan") from None

    def unique_cells(self) -> list[Cell]:
        """One cell per hash, in plan order (conditions with identical interventions share a cell)."""
        return list(self._by_hash.values())

    def conditions_of(self, h: str) -> list[str]:
        """The names of the conditions that share cell `h`."""
        return sorted({c.condition for c in self.cells if c.hash == h})

    def summary(self) -> dict:
        """The JSON-able facts results readers need (written to plan.json by every run)."""
        ev = self.evaluation
        return {
            "format": PLAN_FORMAT,
            "study": self.study,
            "profile": self.profile,
            "description": self.description,
            "deviations": list(self.deviations),
            "models": list(self.models),
            "conditions": list(self.conditions),
            "baseline": self.baseline,
            "evaluation": ev.model_dump(mode="json") | {"seeds": ev.resolved_seeds()} if ev is not None else None,
            "sweeps": self.sweeps,
            "controls": self.controls,
            "report": self.report,
            "spec_file": self.spec_file,
            "spec_hash": self.spec_hash,
            "limit": self.limit,
            "cells": [c.row() for c in self.cells],
        } | ({"rehearsal": self.rehearsal} if self.rehearsal is not None else {})

    def write_summary(self) -> Path:
        """Write `summary()` to `<output_dir>/plan.json` (atomically)."""
        from mechsteer.atomic import atomic_write_text

        return atomic_write_text(self.output_dir / PLAN_FILE, json.dumps(self.summary(), indent=1) + "\n")


# ------------------------------------------------------------------------------------------- fingerprints


def _hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def vector_fingerprint(vectors: dict[str, VectorSourceBase], name: str, _seen: tuple = ()) -> dict:
    """Content identity of a (bound) vector set: its kind's `content_key` (the spec, with the sha256 of every
    file it reads) and, under the field that names each, the identity of the sets it is built from."""
    spec = vectors[name]
    fp = spec.content_key()
    for dep_field, dep in spec.depends_on().items():
        if dep in vectors and dep not in _seen:
            fp[dep_field] = vector_fingerprint(vectors, dep, _seen + (name,))
    return fp


def model_fingerprint(entry: ModelEntry) -> dict:
    """The model part of a cell key: the entry (device and backend excluded, dtype as resolved) and its
    content identity (`mechsteer.models.identity`: file hashes of a local folder, the commit of a hub id, the
    embedded model's package and GGUF hash)."""
    ms = entry.spec
    # The device is recorded in provenance, not hashed: a rerun on another device reuses results. The dtype
    # is hashed as resolved (`auto` never reaches the hash); the backend only for cells that use it.
    fp = ms.model_dump(mode="json", exclude={"device", "backend"})
    fp["dtype"] = resolve_dtype(ms.dtype, ms.device)[0]
    fp["content"] = entry.identity
    if entry.source == "local":
        fp["id"] = "local folder"  # moving or renaming the folder changes nothing; its content does
    return fp


def data_fingerprint(task: str, data_dir: str | None) -> tuple[dict, str | None]:
    """Identity of a task's data and a note when it is incomplete: the generator for `mini` (its code is in
    the code fingerprint), the file's sha256 for local data, else the hub dataset with the commit it loads
    (`mechsteer.hub.resolve_commit`; `unresolved` with a note when it cannot be found)."""
    if task == "mini":
        return {"task": "mini", "generator": "mechsteer.eval.mini_task"}, None
    if data_dir:
        f = Path(data_dir) / task / "test.jsonl"
        return {"task": task, "data_sha256": sha256_file(f) if f.is_file() else f"missing:{f}"}, None
    from mechsteer.eval.datasets import BENCHMARKS

    bench = BENCHMARKS.get(task)
    if bench is None:
        return {"task": task, "source": "hub"}, None
    commit, how = resolve_commit(bench.hub_id, None, "dataset")
    fp = {
        "task": task,
        "source": "hub",
        "dataset": bench.hub_id,
        "configs": list(bench.configs),
        "split": bench.split,
        "commit": commit or UNRESOLVED,
    }
    return fp, None if commit else f"task {task} ({bench.hub_id}): dataset commit not resolved: {how}; {KEYED_AS}"


# ------------------------------------------------------------------------------------------- measurements


def _measurements(ls: LoadedStudy, limit: int | None, notes: list[str]) -> list[tuple[Measurement, list[int]]]:
    """Every measurement of the study, bound (`MeasurementBase.bound`), with the seeds it runs: one `eval` per
    task of the evaluation block (its seeds), then each readout (the study's seeds, as the kind takes them)."""
    spec = ls.spec
    resolve = lambda p: ls.resolve_path(p).resolve()  # noqa: E731
    out: list[tuple[Measurement, list[int]]] = []

    def data_of(m: MeasurementBase) -> dict:
        source = m.data_source()
        if source is None:
            return {}
        fp, note = data_fingerprint(*source)
        if note and note not in notes:
            notes.append(note)
        return fp

    ev = spec.evaluation
    if ev is not None:
        data_dir = str(resolve(ev.data_dir)) if ev.data_dir else None
        for task in ev.tasks:
            m = EvalTaskSpec(
                task=task,
                protocol=ev.protocol,
                samples=ev.samples_for(task),
                limit=resolved_limit(ev.limit, limit, task),
                max_new_tokens=ev.max_new_tokens,
                batch_size=ev.batch_size,
                template=ev.template,
                data_dir=data_dir,
            )
            out.append((Measurement(f"{m.kind}:{task}", m.kind, m, data_of(m)), m.seeds_to_run(ev.resolved_seeds())))
    for name, r in spec.readouts.items():
        m = r.bound(limit, resolve)
        out.append((Measurement(f"readout:{name}", m.kind, m, data_of(m)), m.seeds_to_run(list(spec.seeds))))
    return out


def _measurement_key(m: Measurement) -> dict:
    """The measurement part of a cell key (data folders excluded: their content is in `data`)."""
    body = m.spec.model_dump(mode="json", exclude={"data_dir"})
    return {"id": m.id.split(":")[0], **body, "kind": m.kind, "data": m.data}


# ------------------------------------------------------------------------------------------- compile


def _conditions_for(ls: LoadedStudy, model: str, entry: ModelEntry) -> dict[str, list]:
    """The study's conditions for one model, sweeps expanded against its shape."""
    try:
        return expanded_conditions(ls.spec, entry.shape)
    except ValueError as e:
        raise CompileError(ls.problem(("conditions",), f"{e} (model {model!r}: {entry.spec.id})")) from None


def bind_vectors(ls: LoadedStudy) -> dict[str, VectorSourceBase]:
    """The study's vector specs, each bound by its kind (`VectorSourceBase.bind`): every path absolute (the
    executor never resolves paths, and a Ray worker whose working directory differs reads what the driver
    planned with) and a `trained` set's training run located, so execution never reads a training file."""
    resolve = lambda p: ls.resolve_path(p).resolve()  # noqa: E731
    return {name: v.bind(resolve) for name, v in ls.spec.vectors.items()}


def _vector_closure(vectors: dict[str, VectorSourceBase], names) -> set[str]:
    """The vector sets `names` and those they are built from (`depends_on`)."""
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in out or n not in vectors:
            continue
        out.add(n)
        todo += list(vectors[n].depends_on().values())
    return out


def _kind_modules(registry, kind: str) -> tuple[str, str]:
    """The implementation module and the spec module of a registered kind."""
    k = registry.kind(kind)
    return impl_module(k.impl), k.spec.__module__


def cell_code(interventions, measurement: Measurement, vector_specs: list, backend: str) -> dict:
    """The code fingerprint of a cell: the engine plus the modules of its intervention, vector source and
    measurement kinds (and of its backend)."""
    modules = {m for iv in interventions for m in _kind_modules(INTERVENTION_KINDS, iv.kind)}
    modules |= {m for v in vector_specs for m in _kind_modules(VECTOR_KINDS, v.kind)}
    modules |= set(_kind_modules(MEASUREMENT_KINDS, measurement.kind))
    if backend in BACKENDS:
        modules.add(BACKENDS[backend])
    return code_fingerprint(sorted(modules), vllm=backend == "vllm")


def compile_study(
    ls: LoadedStudy, *, limit: int | None = None, output_root: str | Path = "outputs", rehearsal: dict | None = None
) -> Plan:
    """Compile a validated study into a Plan (see the module docstring): models identified by content,
    vectors bound, sweeps expanded per model, every cell's interventions bound and its key, hash and code
    fingerprint computed. `limit` caps every measurement's problems (its plan gets its own folder,
    `<output_root>/<study>[-<profile>]/limit-<N>/`). `rehearsal` (a rehearsed study's record, from
    `mechsteer.engine.rehearsal`) puts the plan in `<output_root>/<study>[-<profile>]-rehearsal/` and into
    every cell key, so no real run ever shares a cell with it; a model folder that is a rehearsal's twin is
    refused anywhere else. Reads no weights and imports no torch."""
    spec = ls.spec
    resolve = lambda p: ls.resolve_path(p).resolve()  # noqa: E731
    models = {
        name: ModelEntry.of(name, ms, ls.base_dir.resolve(), known_shape(ms.id, ls.base_dir))
        for name, ms in spec.models.items()
    }
    if rehearsal is None:
        twins = [name for name, e in models.items() if e.identity.get("files", {}).get(TWIN_MARKER)]
        if twins:
            raise CompileError(
                ls.problem(
                    ("models", twins[0], "id"),
                    f"{spec.models[twins[0]].id} is a rehearsal's random-weight twin, not a model: nothing computed "
                    "with it is a result",
                    hint="rehearse the study instead (`mechsteer run FILE -p PROFILE --rehearse`)",
                )
            )
    notes = [f"model {e.name}: {e.note}" for e in models.values() if e.note]
    vectors = bind_vectors(ls)
    measurements = _measurements(ls, limit, notes)
    for meas, _ in measurements:
        MEASUREMENT_KINDS.kind(meas.kind)  # every measurement has a registered runner
    cells: list[Cell] = []
    order: dict[str, None] = {}
    baseline = None
    controls: dict[str, str] = {}
    for mname, entry in models.items():
        mfp = model_fingerprint(entry)
        mvectors = vectors_for_model(vectors, mname)  # a per-model set is this model's own set here
        conditions = _conditions_for(ls, mname, entry)
        controls.update((c, ctl) for c, ctl in condition_controls(spec, entry.shape).items() if ctl in conditions)
        bound_all = {c: tuple(iv.bind(entry.spec, entry.shape, resolve) for iv in ivs) for c, ivs in conditions.items()}
        order.update(dict.fromkeys(conditions))
        baseline = baseline or next((c for c, ivs in conditions.items() if not ivs), None)
        for cond, bound in bound_all.items():
            ivs = [file_content_key(iv) for iv in bound]
            vec_names = sorted({ref for iv in bound for ref in iv.vector_refs()})
            missing = [n for n in vec_names if n in mvectors and mvectors[n].model_sets() is not None]
            if missing:
                raise CompileError(
                    ls.problem(
                        ("vectors", missing[0], "models"),
                        f"condition {cond!r} reads per-model vector set {missing[0]!r}, which names no set for "
                        f"model {mname!r}",
                        hint=f"add `{mname}: <vector set>` under its `models:`",
                    )
                )
            vfp = {n: vector_fingerprint(mvectors, n) for n in vec_names}
            wants_vllm = (entry.spec.backend or spec.backend or "hf") == "vllm"
            arch = entry.shape.architecture if entry.shape else None
            expressible, why = vllm_expressible(bound, arch) if wants_vllm else (False, None)
            for meas, seeds in measurements:
                if not meas.spec.applies_to(cond):
                    continue
                mkey = _measurement_key(meas)
                hf_only = meas.spec.vllm_unsupported()
                on_vllm = wants_vllm and hf_only is None and expressible
                note = None if on_vllm or not wants_vllm else (hf_only or why)
                ref_name = meas.spec.reference_condition()
                ref = bound_all.get(ref_name) if ref_name is not None else None
                for seed in seeds:
                    key = {"model": mfp, "interventions": ivs, "vectors": vfp, "measurement": mkey, "seed": seed}
                    if rehearsal is not None:  # never the key of a real run's cell
                        key["rehearsal"] = rehearsal["format"]
                    if ref is not None:  # the compared condition's content, not only its name
                        key["reference"] = {
                            "interventions": [file_content_key(iv) for iv in ref],
                            "vectors": {n: vector_fingerprint(mvectors, n) for iv in ref for n in iv.vector_refs()},
                        }
                    if on_vllm:
                        key["backend"] = "vllm"  # other kernels, other numbers: never shared with HF cells
                    backend = "vllm" if on_vllm else "hf"
                    used = _vector_closure(mvectors, {r for iv in (*bound, *(ref or ())) for r in iv.vector_refs()})
                    code = cell_code((*bound, *(ref or ())), meas, [mvectors[n] for n in sorted(used)], backend)
                    cells.append(
                        Cell(
                            mname,
                            cond,
                            bound,
                            meas,
                            seed,
                            key,
                            _hash(key),
                            code=code,
                            backend=backend,
                            backend_note=note,
                            reference=ref,
                        )
                    )
    name = spec.name + (f"-{ls.profile}" if ls.profile else "") + (REHEARSAL_SUFFIX if rehearsal is not None else "")
    output_dir = Path(output_root).resolve() / name  # absolute: Ray workers elsewhere write cells here
    if limit is not None:  # never the full run's folder: its plan.json and report stay the full run's
        output_dir = output_dir / f"limit-{limit}"
    sweeps = {
        c: body.model_dump(mode="json")["sweep"] for c, body in spec.conditions.items() if isinstance(body, SweepSpec)
    }
    return Plan(
        study=spec.name,
        profile=ls.profile,
        output_dir=output_dir,
        models=models,
        vectors=vectors,
        conditions=tuple(order),
        baseline=baseline,
        cells=tuple(cells),
        description=spec.description,
        deviations=tuple(spec.deviations),
        evaluation=spec.evaluation,
        sweeps=sweeps,
        controls=controls,
        report=spec.report.model_dump(mode="json") if spec.report is not None else None,
        spec_file=str(Path(ls.file).resolve()),
        spec_hash=ls.spec_hash(),
        notes=tuple(notes),
        limit=limit,
        rehearsal=rehearsal,
    )
