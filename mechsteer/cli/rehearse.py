"""`mechsteer train FILE -p PROFILE --rehearse`: a training file's rehearsal, before any GPU time.

The training file is rewritten as its rehearsal (`mechsteer.spec.rehearsal.rehearsed_training`: the model's
random-weight twin, stand-in prompts, `caps.train_steps` steps with a checkpoint at each) into
`<the run's folder>-rehearsal/train.yaml` and trained with the ordinary `mechsteer train` (with `--per-block`
when given); then, for vector setups, the paper's best-checkpoint selection runs on it as it does on a real
run: a study evaluates every checkpoint (`studies/checkpoints.yaml`'s layout, on stand-in benchmark files),
`mechsteer select-checkpoints`' selection writes each run's best.json, and `checkpoint: best` is read back.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from mechsteer.errors import MechsteerError
from mechsteer.spec.evaluation import PAPER_AVERAGE_TASKS
from mechsteer.spec.rehearsal import BANNER, SUFFIX, Rehearsal, RehearsalCaps, evaluation_budget, rehearsed_training

SELECTION = "checkpoint_selection"
"""The name of the checkpoint-evaluation study a training rehearsal runs (its folder: `selection/<name>-rehearsal`)."""


def selection_study(doc: dict, train_file: Path, run: Path, blocks: list[int] | None, caps: RehearsalCaps, data: Path):
    """The study that evaluates every checkpoint of the rehearsed run (of each per-block run), as
    studies/checkpoints.yaml does for the real runs: one `trained` set per step, one condition per step (and
    block), the forced opening the run trained with, the six benchmarks read from stand-in files."""
    steps = list(range(1, caps.train_steps + 1))
    model = doc["model"]
    vectors = {
        f"c{s}": {"kind": "trained", "train": str(train_file), "checkpoint": s, "output": str(run)}
        | ({"per_block": blocks} if blocks is not None else {})
        for s in steps
    }
    prefix = doc["data"].get("prefix_token")
    opening = [{"kind": "prefix_token", "token": prefix}] if prefix else []
    if blocks is None:
        sweep = {"sweep": {"step": steps}, "interventions": [*opening, {"kind": "add", "vector": "c{step}"}]}
        conditions = {"base": [], "ckpt_{step}": sweep}
        n = 1 + len(steps)
    else:
        add = {"kind": "add", "vector": "c{step}", "layer": "{layer}"}
        conditions = {
            "base": [],
            "block{layer}_ckpt_{step}": {"sweep": {"layer": blocks, "step": steps}, "interventions": [*opening, add]},
        }
        n = 1 + len(steps) * len(blocks)
    tasks, _ = evaluation_budget(n, list(PAPER_AVERAGE_TASKS), [0], caps)
    return {
        "name": SELECTION,
        "models": {"policy": {k: v for k, v in model.items() if k in ("id", "dtype", "device", "max_length", "stop")}},
        "vectors": vectors,
        "conditions": conditions,
        "evaluation": {
            "tasks": tasks,
            "protocol": "greedy",
            "limit": caps.problems,
            "max_new_tokens": caps.new_tokens,
            "data_dir": str(data),
            "template": doc["data"].get("template", "qwen_math"),
        },
    }


def rehearse_training(
    file: Path,
    profile: str | None,
    *,
    output: Path | None,
    per_block: str | None,
    lr_rule: str | None,
    threads: int | None,
    quiet: bool,
    console,
    train,
) -> None:
    """Rehearse a training file (see the module docstring); `train(file, per_block, lr_rule)` runs the ordinary
    `mechsteer train` on the rehearsed file."""
    import yaml

    from mechsteer.atomic import atomic_write_text
    from mechsteer.engine.rehearsal import twin_of, write_stand_in_data
    from mechsteer.spec.training import AtPlaceSetup, Lora1Setup, load_train_spec

    loaded = load_train_spec(file, profile)
    spec = loaded.spec
    folder = Path(str((output or loaded.output_dir()).resolve()) + SUFFIX)
    caps = RehearsalCaps()
    data = write_stand_in_data(folder / "stand-ins" / "data")
    r = Rehearsal(folder / "stand-ins", caps, data, loaded.resolve_path)
    twin = twin_of(spec.model.id, loaded.base_dir, str(file), "model.id")
    run = folder / "run"
    doc = rehearsed_training(loaded, r, str(twin), run)
    train_file = folder / "train.yaml"
    header = f"# {BANNER}\n# The rehearsal of {Path(file).resolve()}" + (f" (profile {profile})" if profile else "")
    atomic_write_text(train_file, header + "\n" + yaml.safe_dump(doc, sort_keys=False, width=120))
    console.print(f"[bold reverse] {escape(BANNER)} [/]", soft_wrap=True)
    for note in r.notes:
        console.print(escape(f"  {note}"), soft_wrap=True)
    train(train_file, per_block, lr_rule)
    record = {**r.summary(), "kind": "training", "of": str(Path(file).resolve()), "profile": profile, "run": str(run)}
    if spec.setup == "full" or isinstance(spec.setup, (AtPlaceSetup, Lora1Setup)):
        record["selection"] = "none: select-checkpoints picks among `add` conditions of vector runs only"
        console.print(escape(f"checkpoint selection: {record['selection']}"))
    else:
        record["selection"] = _select(doc, train_file, run, per_block, caps, data, threads, quiet, console)
    atomic_write_text(folder / "rehearsal.json", json.dumps(record, indent=1) + "\n")
    console.print(escape(f"rehearsal: {folder}"), soft_wrap=True)
    console.print(f"[bold reverse] {escape(BANNER)} [/]", soft_wrap=True)


def _select(doc, train_file: Path, run: Path, per_block, caps, data, threads, quiet, console) -> list[dict]:
    """Evaluate every checkpoint, write each run's best.json with select-checkpoints' selection, read it back."""
    import warnings

    from mechsteer.api import run_plan
    from mechsteer.engine.plan import compile_study
    from mechsteer.report.checkpoint_selection import select, write_best
    from mechsteer.results import RehearsalWarning
    from mechsteer.spec.document import LoadedStudy
    from mechsteer.spec.loader import load_study_dict
    from mechsteer.train.layout import run_vectors_file

    blocks = sorted(int(p.name.split("-")[1]) for p in run.glob("layer-[0-9]*")) if per_block else None
    study = selection_study(doc, train_file, run, blocks, caps, data)
    loaded = load_study_dict(study, base_dir=train_file.parent)
    loaded = LoadedStudy(spec=loaded.spec, file=train_file, profile=None, positions={})
    r = Rehearsal(train_file.parent / "stand-ins", caps, data, loaded.resolve_path)
    r.note("checkpoint selection: every checkpoint of the rehearsed run evaluated on stand-in benchmark files")
    plan = compile_study(loaded, output_root=train_file.parent / "selection", rehearsal=r.summary())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RehearsalWarning)
        results = run_plan(plan, threads=threads, progress=not quiet)
    selection = select(results)
    written = write_best(selection)
    for entry in selection:
        folder = Path(entry["run"])
        best = run_vectors_file(folder, "best", "")
        if not best.is_file():
            raise MechsteerError(f"rehearsal: best.json of {folder} names {best}, which is not there")
        console.print(escape(f"{folder.name}: best checkpoint step {entry['step']} -> {best}"), soft_wrap=True)
    if blocks is not None and len(written) != len(blocks):
        raise MechsteerError(f"rehearsal: {len(written)} best.json files written for {len(blocks)} per-block runs")
    console.print(
        escape(f"checkpoint selection: {len(written)} best.json written; report: {plan.output_dir / 'report'}")
    )
    return [{"run": e["run"], "step": e["step"]} for e in selection]
