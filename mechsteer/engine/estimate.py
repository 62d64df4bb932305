"""`mechsteer plan FILE -p PROFILE --estimate`: the tokens each cell will prefill, generate and teacher-force, and
the GPU hours that takes on a stated GPU, before any GPU time (torch-free).

Each measurement kind says what a cell of it processes (`MeasurementBase.work`, a `mechsteer.spec.work.Work`)
from facts the estimator supplies (`CellContext`: the task's size, the expected prompt and completion lengths,
the model's length budget); a training run's work comes from its training file (steps x prompts x group x
length). Hours come from the throughput table (`mechsteer/data/throughput.yaml`, or a file given with
`--throughput`; `load_throughput`), whose every number names its source: most are uncalibrated assumptions
until a GPU run records throughput (`benchmarks/gpu_check.sh` writes calibrated rows in the same format).
Generated and teacher-forced tokens are given as expected (mean completion lengths from the table) and at the
cap (every sample runs to its `max_new_tokens`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mechsteer.errors import MechsteerError
from mechsteer.spec.base import StrictModel
from mechsteer.spec.work import Work

TABLE = Path(__file__).resolve().parent.parent / "data" / "throughput.yaml"
"""The package's throughput table."""
FORMAT = "mechsteer.throughput/1"

# ------------------------------------------------------------------------------------------- the table


class GpuSpec(StrictModel):
    """A GPU kind the table knows."""

    name: str
    factor: float = Field(gt=0)
    """Its rates against the reference GPU's rows (used where it has no rows of its own)."""
    source: str


class RateRow(StrictModel):
    """Tokens per second on one GPU for one model size class and engine."""

    gpu: str
    backend: Literal["hf", "vllm"]
    size: str
    decode_per_sequence: float = Field(gt=0)
    decode_max: float = Field(gt=0)
    prefill: float | None = Field(default=None, gt=0)
    score: float | None = Field(default=None, gt=0)
    train: float | None = Field(default=None, gt=0)
    source: str
    """Where the numbers come from (`uncalibrated assumption: ...`, or `calibrated: <benchmark record>`)."""


class Assumption(StrictModel):
    """Lengths by task (tokens), with their source."""

    default: int = Field(gt=0)
    source: str
    model_config = {"extra": "allow"}


class ThroughputFile(StrictModel):
    """A throughput table (the package's, or an override: every section optional)."""

    format: Literal["mechsteer.throughput/1"]
    gpu: str | None = None
    """The GPU estimates use unless `--gpu` names another."""
    gpus: dict[str, GpuSpec] = Field(default_factory=dict)
    size_classes: dict[str, float] = Field(default_factory=dict)
    rates: list[RateRow] = Field(default_factory=list)
    assumptions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    goal: dict[str, Any] | None = None


@dataclass
class Throughput:
    """The merged table the estimator reads."""

    gpu: str
    gpus: dict[str, GpuSpec]
    size_classes: dict[str, float]
    rates: list[RateRow]
    assumptions: dict[str, dict[str, Any]]
    goal: dict[str, Any]
    files: list[str] = field(default_factory=list)

    def size_class(self, params_b: float) -> str:
        """The nearest size class of a model of `params_b` billion parameters."""
        return min(self.size_classes, key=lambda c: abs(math.log(params_b / self.size_classes[c])))

    def rate(self, gpu: str, backend: str, params_b: float) -> tuple[dict[str, float], str]:
        """Tokens/s ({decode_per_sequence, decode_max, prefill, score, train}) for a model of `params_b` billion
        parameters, and where they come from: the row of its size class on this GPU, else on another GPU times the
        GPUs' factors, else the nearest class's row (rates scaled by parameter count from the row's class)."""
        if gpu not in self.gpus:
            raise MechsteerError(f"--gpu {gpu!r}: the throughput table knows {', '.join(sorted(self.gpus))}")
        cls = self.size_class(params_b)
        rows = [r for r in self.rates if r.backend == backend]
        if not rows:
            raise MechsteerError(f"the throughput table has no rows for backend {backend!r}")

        def distance(r: RateRow) -> tuple:  # the model's size class first (another GPU's row x factors), then the GPU
            size = abs(math.log(self.size_classes.get(r.size, params_b) / params_b))
            return (r.size != cls, r.gpu != gpu, size)

        row = min(rows, key=distance)
        scale = self.size_classes.get(row.size, params_b) / params_b
        if row.gpu != gpu:
            scale *= self.gpus[gpu].factor / self.gpus[row.gpu].factor if row.gpu in self.gpus else 1.0
        values = {}
        for name in ("decode_per_sequence", "decode_max", "prefill", "score", "train"):
            v = getattr(row, name)
            if v is None:  # a calibration that did not measure it: the package's row of the same kind
                v = getattr(min([r for r in rows if getattr(r, name) is not None], key=distance), name)
            values[name] = v * scale
        how = f"{row.gpu}/{row.backend}/{row.size} row"
        if row.size != cls or row.gpu != gpu:
            how += f" scaled to {params_b:.2f}B parameters" + (f" and {gpu}" if row.gpu != gpu else "")
        return values, f"{how} ({row.source})"

    def length(self, what: str, task: str | None) -> int:
        """An assumed length in tokens (`prompt_tokens` or `completion_tokens`) of a task's problems."""
        table = self.assumptions[what]
        return int(table.get(task or "default", table["default"]))


def _read(path: Path) -> ThroughputFile:
    from mechsteer.spec.loader import read_spec_file, validate_document

    raw, positions = read_spec_file(path, "throughput file", "format:, gpu:, rates:, ...", str(TABLE))
    return validate_document(ThroughputFile, raw, str(path), positions, None)


def load_throughput(override: str | Path | None = None) -> Throughput:
    """The package's table, with `override`'s rows, GPUs, assumptions and default GPU replacing its own (a
    malformed file is a SpecError located at the field)."""
    base = _read(TABLE)
    files = [str(TABLE)]
    rates = {(r.gpu, r.backend, r.size): r for r in base.rates}
    gpus, sizes, assumptions = dict(base.gpus), dict(base.size_classes), dict(base.assumptions)
    gpu, goal = base.gpu, dict(base.goal or {})
    if override is not None:
        extra = _read(Path(override))
        files.append(str(override))
        rates.update({(r.gpu, r.backend, r.size): r for r in extra.rates})
        gpus.update(extra.gpus)
        sizes.update(extra.size_classes)
        assumptions.update(extra.assumptions)
        gpu = extra.gpu or gpu
        goal = extra.goal or goal
        unknown = sorted({r.gpu for r in extra.rates} - set(gpus)) + sorted({r.size for r in extra.rates} - set(sizes))
        if unknown:
            from mechsteer.errors import Problem, SpecError

            raise SpecError(
                Problem(
                    f"rates name GPUs or size classes the table does not know: {', '.join(unknown)}",
                    file=str(override),
                    field="rates",
                    hint="add them under `gpus:` (name, factor, source) or `size_classes:` (billions of parameters)",
                )
            )
    return Throughput(gpu or "h100-80gb", gpus, sizes, list(rates.values()), assumptions, goal, files)


# ------------------------------------------------------------------------------------------- a cell's facts


@dataclass
class CellContext:
    """What a measurement kind's `work` may ask (`mechsteer.spec.work.WorkContext`), for one model and data
    folder."""

    n_layers: int
    max_length: int | None
    table: Throughput
    data_dir: str | None = None
    notes: set = field(default_factory=set)

    def problems(self, task: str | None, split: str, limit: int | None) -> int:
        """The task's size (the bundled `mini` pools, a benchmark's known size, a local file's rows), capped by
        `limit`."""
        n = _task_size(task, split, self.data_dir)
        if n is None:
            self.notes.add(f"task {task!r}: size unknown, {limit or 0} problems counted")
            return int(limit or 0)
        return min(n, limit) if limit else n

    def prompt_tokens(self, task: str | None) -> int:
        """Prompt length: measured on a local copy of the task (characters / 3.6, plus the template's ~40
        tokens), else the table's assumption."""
        measured = _local_prompt_tokens(task, self.data_dir)
        return measured if measured is not None else self.table.length("prompt_tokens", task)

    def budget(self, max_new_tokens: int | None, task: str | None) -> int:
        """`max_new_tokens`, else the model's max_length minus the prompt (4096 when neither is set)."""
        if max_new_tokens:
            return int(max_new_tokens)
        return max(1, int(self.max_length or 4096) - self.prompt_tokens(task))

    def completion_tokens(self, task: str | None, cap: int) -> int:
        """The table's mean completion length of the task, at most `cap`."""
        return min(cap, self.table.length("completion_tokens", task))

    def layers(self, selection) -> int:
        """Blocks a layer selection names (`all`: every block)."""
        from mechsteer.spec.layers import resolve_layers

        return self.n_layers if selection == "all" else len(resolve_layers(selection, self.n_layers))


def _task_size(task: str | None, split: str, data_dir: str | None) -> int | None:
    if task is None:
        return None
    if task == "mini":
        from mechsteer.eval.mini_task import mini_pool

        return len(mini_pool(split))
    f = Path(data_dir) / task / "test.jsonl" if data_dir else None
    if f is not None and f.is_file():
        return sum(1 for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
    from mechsteer.eval.datasets import BENCHMARKS, PROMPT_SETS

    bench = BENCHMARKS.get(task) or PROMPT_SETS.get(task)
    return bench.expected_size if bench else None


def _local_prompt_tokens(task: str | None, data_dir: str | None) -> int | None:
    f = Path(data_dir) / str(task) / "test.jsonl" if data_dir and task else None
    if f is None or not f.is_file():
        return None
    chars = []
    for line in f.read_text(encoding="utf-8").splitlines()[:200]:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        text = row.get("problem") or row.get("question") or row.get("Problem") or ""
        chars.append(len(str(text)))
    return int(40 + sum(chars) / len(chars) / 3.6) if chars else None


# ------------------------------------------------------------------------------------------- hours


def seconds(work: Work, rates: dict[str, float], backend: str, cap: bool = False) -> float:
    """GPU seconds of a work at these rates: decode (HF: `min(batch, sequences)` sequences at a time; vLLM:
    all queued sequences), prefill, teacher forcing and training."""
    together = work.sequences if backend == "vllm" else min(work.batch, max(work.sequences, 1))
    decode = min(rates["decode_per_sequence"] * max(together, 1), rates["decode_max"])
    gen = work.generated_cap if cap else work.generated
    scored = work.scored_cap if cap else work.scored
    trained = work.trained_cap if cap else work.trained
    return gen / decode + work.prompt_tokens / rates["prefill"] + scored / rates["score"] + trained / rates["train"]


def _params_b(entry) -> float:
    from mechsteer.spec.model_configs import model_config

    mc = model_config(entry.spec.id, entry.base_dir)
    if mc is None:
        raise MechsteerError(
            f"model {entry.spec.id!r}: its size is not known offline, so its hours cannot be estimated",
            hint="add its config.json keys to mechsteer/data/model_configs.yaml, or give a local folder with its config",
        )
    return mc.n_params() / 1e9


def estimate_plan(plan, table: Throughput, gpu: str | None = None):
    """One row per unique cell of a compiled plan: its work (tokens) and GPU hours as planned (its backend) and
    with vLLM where a bias-compiled checkpoint can run it; plus the sources of the rates used."""
    import pandas as pd

    from mechsteer.backends.expressible import vllm_expressible

    gpu = gpu or table.gpu
    rows, sources, notes = [], {}, set()
    for cell in plan.unique_cells():
        entry = plan.models[cell.model]
        params = _params_b(entry)
        n_layers = entry.shape.n_layers if entry.shape else 32
        spec = cell.measurement.spec
        ctx = CellContext(n_layers, entry.spec.max_length, table, getattr(spec, "data_dir", None), notes)
        work = spec.work(ctx)
        if work is None:
            notes.add(f"{cell.measurement.kind}: the kind gives no estimate")
            continue
        planned, src = table.rate(gpu, cell.backend, params)
        sources[f"{entry.spec.id} ({cell.backend})"] = src
        arch = entry.shape.architecture if entry.shape else None
        can_vllm = spec.vllm_unsupported() is None and vllm_expressible(cell.interventions, arch)[0]
        alt, src_v = table.rate(gpu, "vllm", params) if can_vllm else (planned, src)
        if can_vllm:
            sources[f"{entry.spec.id} (vllm)"] = src_v
        backend_alt = "vllm" if can_vllm else cell.backend
        rows.append(
            {
                "model": cell.model,
                "model_id": entry.spec.id,
                "condition": cell.condition,
                "measurement": cell.measurement.id,
                "seed": cell.seed,
                "backend": cell.backend,
                "sequences": work.sequences,
                "prompt_tokens": work.prompt_tokens,
                "generated": work.generated,
                "generated_cap": work.generated_cap,
                "scored": work.scored,
                "scored_cap": work.scored_cap,
                "gpu_hours": seconds(work, planned, cell.backend) / 3600,
                "gpu_hours_cap": seconds(work, planned, cell.backend, cap=True) / 3600,
                "gpu_hours_vllm": seconds(work, alt, backend_alt) / 3600,
            }
        )
    return pd.DataFrame(rows), sources, sorted(notes)


NUMBERS = [
    "sequences",
    "prompt_tokens",
    "generated",
    "generated_cap",
    "scored",
    "scored_cap",
    "gpu_hours",
    "gpu_hours_cap",
    "gpu_hours_vllm",
]
"""The summed columns of an estimate."""


def sources_by_text(sources: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(rate source, what it was used for) pairs: each source once, with every model and engine it served."""
    out: dict[str, list[str]] = {}
    for what, src in sorted(sources.items()):
        out.setdefault(src, []).append(what)
    return sorted(out.items(), key=lambda kv: kv[1][0])


def group_table(cells):
    """Cells grouped by model and measurement: counts, tokens and hours summed."""
    if cells.empty:
        return cells
    g = cells.groupby(["model", "measurement", "backend"], sort=False)
    out = g[NUMBERS].sum()
    out.insert(0, "cells", g.size())
    return out.reset_index()


# ------------------------------------------------------------------------------------------- training


def training_work(lt, table: Throughput) -> tuple[Work, int, str | None]:
    """(the work of one run of a training file, its steps, a note): steps x prompts x group rollouts of the
    expected length (prompts prefilled once per prompt, every rollout trained on), plus the held-out evaluation."""
    spec, r = lt.spec, lt.spec.rloo
    data = spec.data
    if data.kind == "hub":
        n = _task_size("deepscaler", "train", None) if "deep_scale" in data.id else None
    elif data.kind == "mini":
        n = data.n or _task_size("mini", "train", None)
    else:
        f = lt.resolve_path(data.path)
        n = sum(1 for line in f.read_text().splitlines() if line.strip()) if f.is_file() else None
    note = None
    if n is None:
        n, note = r.prompts_per_step * (r.steps or 1), "training prompts: size unknown, one epoch of steps assumed"
    n = min(n, data.limit) if data.limit else n
    steps = lt.total_steps(n)
    p = table.length("prompt_tokens", "deepscaler" if data.kind != "mini" else "mini")
    cap = r.max_new_tokens or max(1, (spec.model.max_length or 4096) - p)
    exp = min(cap, int(table.assumptions.get("train_completion_tokens", {}).get("value", 900)))
    seqs = steps * r.prompts_per_step * r.group_size
    work = Work(
        sequences=seqs,
        prompt_tokens=steps * r.prompts_per_step * p,
        generated=seqs * exp,
        generated_cap=seqs * cap,
        trained=seqs * (p + exp),
        trained_cap=seqs * (p + cap),
        batch=r.prompts_per_step * r.group_size,
    )
    if spec.eval is not None:
        ev = spec.eval
        evals = 2 + (steps // ev.every if ev.every else 0)
        per = ev.n * ((1 if ev.greedy else 0) + ev.samples)
        work = work + Work(
            sequences=evals * per,
            prompt_tokens=evals * per * table.length("prompt_tokens", "mini"),
            generated=evals * per * min(ev.max_new_tokens, table.length("completion_tokens", "mini")),
            generated_cap=evals * per * ev.max_new_tokens,
            batch=ev.batch_size,
        )
    return work, steps, note


def estimate_training(lt, table: Throughput, gpu: str | None = None, runs: int = 1) -> dict:
    """One training file (with its profile) run `runs` times (per-block runs): work, steps and GPU hours."""
    from mechsteer.spec.model_configs import model_config

    gpu = gpu or table.gpu
    mc = model_config(lt.spec.model.id, lt.base_dir)
    if mc is None:
        raise MechsteerError(f"model {lt.spec.model.id!r} of {lt.file}: its size is not known offline")
    params = mc.n_params() / 1e9
    work, steps, note = training_work(lt, table)
    backend = lt.spec.rollouts
    planned, src = table.rate(gpu, backend, params)
    can_vllm = lt.spec.setup not in ("full",) and not (
        hasattr(lt.spec.setup, "at_place") or hasattr(lt.spec.setup, "lora1")
    )
    alt, src_v = table.rate(gpu, "vllm", params) if can_vllm else (planned, src)
    total = work.times(runs)
    return {
        "file": str(lt.file),
        "profile": lt.profile,
        "model_id": lt.spec.model.id,
        "runs": runs,
        "steps": steps,
        "backend": backend,
        "sequences": total.sequences,
        "prompt_tokens": total.prompt_tokens,
        "generated": total.generated,
        "generated_cap": total.generated_cap,
        "trained": total.trained,
        "gpu_hours": runs * seconds(work, planned, backend) / 3600,
        "gpu_hours_cap": runs * seconds(work, planned, backend, cap=True) / 3600,
        "gpu_hours_vllm": runs * seconds(work, alt, "vllm" if can_vllm else backend) / 3600,
        "sources": {backend: src} | ({"vllm": src_v} if can_vllm else {}),
        "note": note,
    }


# ------------------------------------------------------------------------------------------- the whole paper


def paper_profiles(folder: Path) -> tuple[list[tuple[Path, str]], list[tuple[Path, str | None]]]:
    """(every `paper*` profile of every study in `folder`, every training file whose default model is not an
    embedded one with each of its profiles whose model is not embedded either: the runs the paper needs)."""
    import yaml

    from mechsteer.spec.models import EMBEDDED_MODELS
    from mechsteer.spec.training import is_training_file

    studies, trainings = [], []
    for f in sorted(Path(folder).glob("*.yaml")):
        raw = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        profiles = raw.get("profiles") or {}
        if not is_training_file(f):
            studies += [(f, p) for p in profiles if str(p).startswith("paper")]
            continue
        base_model = (raw.get("model") or {}).get("id")
        if base_model in EMBEDDED_MODELS:
            continue
        trainings.append((f, None))
        for p, body in profiles.items():
            model = ((body or {}).get("model") or {}).get("id", base_model)
            if model not in EMBEDDED_MODELS:
                trainings.append((f, p))
    return studies, trainings


def training_references(plan) -> dict[tuple[str, str | None], set]:
    """(training file, profile) -> the runs of it the plan's cells read: `single` (the run itself) and block
    indices (per-block runs), asked of the vector sets (closure of what cells read) and of the interventions."""
    used: set[str] = set()
    todo = [n for c in plan.cells for n in c.vector_names()]
    while todo:
        n = todo.pop()
        if n in used or n not in plan.vectors:
            continue
        used.add(n)
        todo += list(plan.vectors[n].depends_on().values())
    runs = [plan.vectors[n].training_run() for n in sorted(used)]
    runs += [iv.training_run() for c in plan.cells for iv in c.interventions]
    from mechsteer.spec.models import known_shape
    from mechsteer.spec.training import load_train_spec

    out: dict[tuple[str, str | None], set] = {}
    for run in filter(None, runs):
        train, profile, blocks = run
        key = (str(Path(train).resolve()), profile)
        lt = load_train_spec(train, profile)
        shape = known_shape(lt.spec.model.id, lt.base_dir)
        n_layers = shape.n_layers if shape else 0
        if blocks is None:
            out.setdefault(key, set()).add("single")
        else:
            out.setdefault(key, set()).update(range(n_layers) if blocks == "all" else blocks)
    return out


def estimate_paper(folder: str | Path, table: Throughput, gpu: str | None = None, max_cells: int = 10**6) -> dict:
    """Every paper profile of the studies in `folder` and the training runs they read (per-block runs counted
    per block; a training profile no study reads counts once), with totals and the goal's verdict."""
    from mechsteer.engine.plan import compile_study
    from mechsteer.spec.loader import load_study
    from mechsteer.spec.training import load_train_spec

    gpu = gpu or table.gpu
    studies, trainings = paper_profiles(Path(folder))
    items, refs, sources, notes = [], {}, {}, set()
    for f, profile in studies:
        plan = compile_study(load_study(f, profile, max_cells=max_cells))
        cells, src, n = estimate_plan(plan, table, gpu)
        sources.update(src)
        notes.update(n)
        for key, blocks in training_references(plan).items():
            refs.setdefault(key, set()).update(blocks)
        items.append(
            {
                "kind": "study",
                "file": str(f),
                "profile": profile,
                "models": sorted({plan.models[m].spec.id for m in plan.models}),
                "cells": len(cells),
                **{k: float(cells[k].sum()) if not cells.empty else 0.0 for k in NUMBERS},
            }
        )
    for f, profile in trainings:
        lt = load_train_spec(f, profile)
        blocks = refs.get((str(f.resolve()), profile), set())
        runs = max(1, len(blocks))
        row = estimate_training(lt, table, gpu, runs=runs)
        sources.update({f"{lt.spec.model.id} training ({k})": v for k, v in row.pop("sources").items()})
        row["note"] = row["note"] or ("not read by any paper study" if not blocks else None)
        items.append({"kind": "training", "models": [row.pop("model_id")], **row})
    goal = table.goal or {"gpus": 8, "hours": 24}
    budget = float(goal.get("gpus", 8)) * float(goal.get("hours", 24))
    total = {k: sum(float(i.get(k) or 0) for i in items) for k in ("gpu_hours", "gpu_hours_cap", "gpu_hours_vllm")}
    ranked = sorted(items, key=lambda i: -float(i["gpu_hours"]))
    return {
        "gpu": gpu,
        "gpu_name": table.gpus[gpu].name,
        "tables": table.files,
        "items": items,
        "total": total,
        "goal": {**goal, "gpu_hours": budget},
        "fits": {k: v <= budget for k, v in total.items()},
        "dominant": [{"file": i["file"], "profile": i["profile"], "gpu_hours": i["gpu_hours"]} for i in ranked[:5]],
        "sources": sources,
        "notes": sorted(notes),
    }
