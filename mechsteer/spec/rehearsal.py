"""Rehearsals (`mechsteer run FILE -p PROFILE --rehearse`, `mechsteer train ... --rehearse`): the study or
training file as a cheap double of itself, so that every cell of a paper profile runs end to end on a CPU in
minutes before any GPU time is spent. This module is the spec side (torch-free): it rewrites a validated spec,
asking each kind what it needs, and lists what has to be stood in; `mechsteer.engine.rehearsal` builds the
stand-ins (twins, files, training runs, data), compiles and runs.

What a rehearsal keeps: every model's architecture class, depth and head layout (a random-weight twin,
`mechsteer.models.twin`), every condition and sweep at full size, every readout and its settings, the
protocol and the report. What it shrinks (`RehearsalCaps`): problems per measurement, generated tokens,
samples per problem, seeds, and, when a study has many conditions, the evaluation's tasks and seeds (at most
`eval_cells` evaluation cells per model, never fewer than one task and one seed). What it stands in:

* hub models, local models and embedded models: twins (the study names the twin folder instead);
* benchmarks and prompt sets (`evaluation.tasks`, a readout's `task`): local files of the bundled `mini`
  task's problems written in each benchmark's format (`data_dir`), so the real loaders read them;
* files the kinds read (`VectorSourceBase.rehearsed`, `InterventionBase.rehearsed_raw`): random vectors or
  adapters of the twin's shape, and training runs (`trained`, a `lora1` with `train:`) as stand-in runs in the
  trainer's layout (final files, the checkpoints a study names, best.json), so the whole path from a study to
  a run's files is exercised.

Every rehearsal folder's plan.json and report say REHEARSAL; its cells carry a `rehearsal` entry in their keys,
so no real run ever reuses one (`mechsteer.engine.plan.compile_study`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REHEARSAL_FORMAT = "mechsteer.rehearsal/1"
"""Marks a rehearsal: in plan.json (`rehearsal.format`) and in every rehearsal cell's key."""

BANNER = (
    "REHEARSAL: random-weight twins, stand-in data and stand-in vectors; nothing here is a result "
    "(it checks that every cell runs and the report builds)."
)
"""The line a rehearsal's report, summary and listings lead with."""

SUFFIX = "-rehearsal"
"""A rehearsal's output folder is the run's folder name with this suffix."""


@dataclass(frozen=True)
class RehearsalCaps:
    """How much of each measurement a rehearsal keeps (sweeps and conditions are never cut)."""

    problems: int = 2
    """Problems (prompts) per measurement."""
    new_tokens: int = 4
    """Generated tokens per sample."""
    samples: int = 2
    """Samples per problem."""
    seeds: int = 2
    """Seeds of the study and of the evaluation."""
    eval_cells: int = 60
    """Evaluation cells per model: the evaluation's tasks, then its seeds, are cut (never below one task and one
    seed) until the conditions x tasks x seeds fit."""
    train_steps: int = 2
    """Optimizer steps of a rehearsed training run (a checkpoint at each, so a selection has candidates)."""
    train_prompts: int = 2
    """Prompts per step of a rehearsed training run."""
    train_group: int = 2
    """Samples per prompt of a rehearsed training run (the leave-one-out baseline needs 2)."""
    sae: dict = field(
        default_factory=lambda: {"width": 32, "k": 4, "tokens": 512, "batch_size": 64, "dead_tokens": 256}
    )
    """SAE settings of a `diffsae` readout."""

    def cap(self, value: int | None, limit: int) -> int:
        """`value` capped at `limit` (None: the limit)."""
        return limit if value is None else min(int(value), limit)


@dataclass(frozen=True)
class RunStandIn:
    """A training run a study reads, stood in by random parameters written in the trainer's layout."""

    train: str
    """The training file (absolute)."""
    profile: str | None
    """Its profile."""
    folder: str
    """Where the stand-in run is written (absolute); the study reads it through the kind's `output`."""
    file: Literal["vectors.safetensors", "lora1.safetensors"]
    """What the run writes."""
    single: bool = False
    """Whether the run itself is read (its final file, checkpoints, best.json)."""
    blocks: tuple[int, ...] | Literal["all"] | None = None
    """Per-block runs (`layer-KK/`) that are read (None: none)."""
    checkpoints: tuple = ()
    """Steps read (ints), `best` (a best.json) and None (the final file)."""


def _merge_blocks(a, b):
    """The union of two per-block references (`all` absorbs a list; None is no block)."""
    if a == "all" or b == "all":
        return "all"
    if a is None and b is None:
        return None
    return tuple(sorted(set(a or ()) | set(b or ())))


@dataclass(frozen=True)
class FileStandIn:
    """A file a kind reads, stood in by random values of the twin's shape."""

    path: str
    """Where it is written (absolute)."""
    file: Literal["vectors", "lora1"]
    """A vector set (`[n_layers, d_model]` rows) or a rank-1 adapter (`A`, `B`, `layers`)."""
    rows: tuple[int, ...] | Literal["all"] = "all"
    """Rows present."""
    setup: str | None = None
    """The `setup` metadata (how the rows were trained: `all_layers`, `single_layer stack`, `layers k`), so
    origin checks see what they would see in the real file."""
    model_id: str | None = None
    """The model whose twin fixes the shape (None: the study's model of the file's shape, else its first)."""
    shape: tuple[int, int] | None = None
    """The real file's [n_layers, d_model], when it could be read."""


class Rehearsal:
    """What a rehearsal keeps (`caps`), where its stand-ins go, and what kinds asked to be stood in."""

    def __init__(self, folder: Path, caps: RehearsalCaps, data_dir: Path, resolve: Callable[[str], Path]):
        """`folder`: the stand-ins' folder; `data_dir`: the stand-in benchmark files; `resolve`: paths of the
        spec file (relative to it)."""
        self.folder = Path(folder)
        self.caps = caps
        self.data_dir = Path(data_dir)
        self.resolve = resolve
        self.runs: dict[tuple[str, str | None, str], RunStandIn] = {}
        self.files: dict[str, FileStandIn] = {}
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Record what was stood in for what (shown in the rehearsal's report)."""
        if text not in self.notes:
            self.notes.append(text)

    def run(self, train: str, profile: str | None, *, file: str, blocks=None, checkpoint=None) -> Path:
        """The stand-in folder of a training run (one per training file, profile and file kind); the blocks
        (`blocks`: a list, `all`, or None for the run itself) and checkpoints it must hold grow with every
        reference."""
        train = str(self.resolve(train).resolve())
        key = (train, profile, file)
        name = Path(train).stem + (f"-{profile}" if profile else "") + ("-lora1" if file.startswith("lora1") else "")
        old = self.runs.get(key) or RunStandIn(train, profile, str(self.folder / "runs" / name), file)
        self.runs[key] = RunStandIn(
            train,
            profile,
            old.folder,
            file,
            single=old.single or blocks is None,
            blocks=_merge_blocks(old.blocks, blocks),
            checkpoints=tuple(dict.fromkeys((*old.checkpoints, checkpoint))),
        )
        self.note(
            f"training run `{Path(train).name}`"
            + (f" -p {profile}" if profile else "")
            + f" ({file}): a stand-in run of random parameters (stand-ins/runs/{name})"
        )
        return Path(old.folder)

    def file(self, name: str, **kw) -> Path:
        """A stand-in file named after the vector set or intervention it replaces."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = self.folder / "files" / f"{safe}.safetensors"
        n = 1
        while str(path) in self.files and self.files[str(path)] != FileStandIn(str(path), **kw):
            n += 1
            path = self.folder / "files" / f"{safe}-{n}.safetensors"
        self.files[str(path)] = FileStandIn(str(path), **kw)
        return path

    def summary(self) -> dict:
        """What plan.json records of the rehearsal."""
        return {
            "format": REHEARSAL_FORMAT,
            "banner": BANNER,
            "caps": {k: v for k, v in self.caps.__dict__.items()},
            "stand_ins": list(self.notes),
        }


def file_rows(path: Path) -> tuple[tuple[int, ...], tuple[int, int] | None, str | None] | None:
    """(rows present, [n_layers, d_model] of a vector set, `setup` metadata) of a mechsteer vector or adapter
    file, read without torch; None when it is not there or not one."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            rows = tuple(int(i) for i in f.get_tensor("layers"))
            shape = tuple(int(n) for n in f.get_slice("vectors").get_shape()) if "vectors" in f.keys() else None
            return rows, (shape[0], shape[1]) if shape else None, (f.metadata() or {}).get("setup")
    except Exception:  # noqa: BLE001 - a file that cannot be read is stood in with every row
        return None


# ----------------------------------------------------------------------------------------- a study


def evaluation_budget(n_conditions: int, tasks: list[str], seeds: list[int], caps: RehearsalCaps) -> tuple[list, list]:
    """The tasks and seeds a rehearsal keeps: all, unless conditions x tasks x seeds exceeds `caps.eval_cells`;
    then tasks are cut first, then seeds (never below one of each), and at most `caps.seeds` seeds."""
    n = max(1, n_conditions)
    keep_tasks = max(1, min(len(tasks), caps.eval_cells // n))
    keep_seeds = max(1, min(len(seeds), caps.seeds, caps.eval_cells // (n * keep_tasks)))
    return list(tasks[:keep_tasks]), list(seeds[:keep_seeds])


def rehearsed_evaluation(ev, n_conditions: int, r: Rehearsal) -> dict:
    """The `evaluation:` block of a rehearsal: local stand-in data, few problems and tokens, the budget's tasks
    and seeds, capped samples per problem (the protocol, template, reference and control stay)."""
    caps = r.caps
    tasks, seeds = evaluation_budget(n_conditions, list(ev.tasks), ev.resolved_seeds(), caps)
    if tasks != list(ev.tasks):
        r.note(
            f"evaluation: {n_conditions} conditions x {len(ev.tasks)} tasks would be "
            f"{n_conditions * len(ev.tasks)} evaluation cells per model; the rehearsal keeps the task(s) "
            f"{', '.join(tasks)} (every task's loader and protocol still run in smaller rehearsals)"
        )
    if seeds != ev.resolved_seeds():
        r.note(f"evaluation seeds {ev.resolved_seeds()} -> {seeds}")
    out = ev.model_dump(mode="json")
    out.update(
        tasks=tasks,
        seeds=seeds if ev.protocol == "paper" else None,
        limit=caps.cap(ev.limit, caps.problems),
        max_new_tokens=caps.cap(ev.max_new_tokens, caps.new_tokens),
        data_dir=str(r.data_dir),
    )
    if ev.protocol == "paper":
        out["samples"] = {t: min(ev.samples_for(t), caps.samples) for t in tasks}
    else:
        out["samples"] = None
    r.note(
        f"evaluation: benchmarks {', '.join(tasks)} read from stand-in files of the bundled `mini` task's problems "
        f"({caps.problems} problems, at most {caps.new_tokens} new tokens, at most {caps.samples} samples each)"
    )
    return out


def rehearsed_interventions(raws: list, r: Rehearsal) -> list:
    """A condition's interventions (raw dicts, possibly with sweep placeholders) as each kind rehearses them."""
    from mechsteer.spec.kinds import INTERVENTION_KINDS

    out = []
    for raw in raws:
        kind = raw.get("kind") if isinstance(raw, dict) else None
        cls = INTERVENTION_KINDS.spec(kind) if kind in INTERVENTION_KINDS else None
        out.append(cls.rehearsed_raw(dict(raw), r) if cls is not None else raw)
    return out


def rehearsed_study(ls, r: Rehearsal, twins: dict[str, str]) -> dict:
    """The document of a study's rehearsal (to validate and compile): `twins` maps each model key to its twin
    folder. Kinds are asked for their stand-ins (`rehearsed`, `rehearsed_raw`), which `r` collects."""
    from mechsteer.spec.models import known_shape
    from mechsteer.spec.study import expanded_conditions

    spec = ls.spec
    doc = spec.model_dump(mode="json")
    doc.pop("profiles", None)
    for key, ms in spec.models.items():
        m = doc["models"][key]
        m.update(id=str(twins[key]), revision=None, dtype="float32", device="cpu")
        if m.get("backend") == "vllm":
            m["backend"] = "hf"
            r.note(f"model {key}: backend vllm -> hf (a rehearsal runs on the CPU with transformers)")
        r.note(f"model {key}: {ms.id} -> a random-weight twin ({Path(twins[key]).name})")
    if doc.get("backend") == "vllm":
        doc["backend"] = "hf"
    doc["vectors"] = {name: v.rehearsed(r).model_dump(mode="json") for name, v in spec.vectors.items()}
    for name, cond in doc["conditions"].items():
        if isinstance(cond, list):
            doc["conditions"][name] = rehearsed_interventions(cond, r)
        else:
            cond["interventions"] = rehearsed_interventions(cond["interventions"], r)
    if spec.evaluation is not None:
        n_cond = max(len(expanded_conditions(spec, known_shape(ms.id, ls.base_dir))) for ms in spec.models.values())
        doc["evaluation"] = rehearsed_evaluation(spec.evaluation, n_cond, r)
    doc["readouts"] = {name: ro.rehearsed(r).model_dump(mode="json") for name, ro in spec.readouts.items()}
    if len(spec.seeds) > r.caps.seeds:
        r.note(f"study seeds {spec.seeds} -> {spec.seeds[: r.caps.seeds]}")
    doc["seeds"] = spec.seeds[: r.caps.seeds]
    return _drop_nones(doc)


def _drop_nones(obj: Any) -> Any:
    """A dumped spec without None values (what a study file leaves out; a kind's default then applies)."""
    if isinstance(obj, dict):
        return {k: _drop_nones(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_nones(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------- a training file


def rehearsed_training(lt, r: Rehearsal, twin: str, output: Path) -> dict:
    """The document of a training file's rehearsal: the twin, stand-in prompts, `caps.train_steps` steps of
    `caps.train_prompts` x `caps.train_group` rollouts of at most `caps.new_tokens` tokens, a checkpoint every
    step, the held-out evaluation shrunk (kept when it selects a checkpoint), into `output`."""
    spec, caps = lt.spec, r.caps
    doc = spec.model_dump(mode="json")
    doc.pop("profiles", None)
    doc["model"].update(id=str(twin), revision=None, dtype="float32", device="cpu")
    r.note(f"model: {spec.model.id} -> a random-weight twin ({Path(twin).name})")
    if doc.get("rollouts") == "vllm":
        doc["rollouts"] = "hf"
        r.note("rollouts vllm -> hf (a rehearsal runs on the CPU with transformers)")
    doc["rloo"].update(
        steps=caps.train_steps,
        prompts_per_step=caps.train_prompts,
        group_size=caps.train_group,
        max_new_tokens=caps.cap(spec.rloo.max_new_tokens, caps.new_tokens),
        loss_chunk_prompts=None,
    )
    data = doc["data"]
    if data["kind"] == "hub":
        doc["data"] = {
            k: data[k] for k in ("template", "prefix_token", "max_prompt_tokens") if data.get(k) is not None
        } | {"kind": "jsonl", "path": str(r.data_dir / "deepscaler" / "test.jsonl")}
        r.note(f"training prompts: {data['id']} -> stand-in file of the bundled `mini` task's problems")
    doc["data"]["limit"] = caps.train_steps * caps.train_prompts * 2
    if spec.eval is not None:
        ev = doc["eval"]
        ev.update(
            n=caps.problems,
            samples=min(ev["samples"], caps.samples),
            max_new_tokens=caps.new_tokens,
            every=1 if ev.get("select") else 0,
        )
    doc["checkpoint_every"] = 1
    doc["output"] = str(output)
    r.note(
        f"training: {caps.train_steps} steps of {caps.train_prompts} prompts x {caps.train_group} samples, at most "
        f"{caps.new_tokens} new tokens, a checkpoint every step"
    )
    return _drop_nones(doc)
