"""Where a training run writes what: its checkpoint folders, final and best-checkpoint vector files,
per-block run folders, and the `mechsteer train` command that writes each (named in error hints).

One layout shared by the trainer that writes a run and the compiler that locates it: `trained` vector specs
and `lora1` interventions with `train:` resolve their files here when a study is compiled, so execution never
reads a training file. Torch-free: the spec layer imports it (the layer test places this module with `spec`).

    <output>/vectors.safetensors | lora1.safetensors     the final parameters
    <output>/best.json                                   the selected checkpoint (`checkpoint: best`)
    <output>/checkpoints/step-000053/                    a checkpoint (see `train.checkpoint`)
    <output>/layer-07/                                   block 7's run of a `--per-block` training
"""

from __future__ import annotations

import json
from pathlib import Path

from mechsteer.errors import MechsteerError, VectorError
from mechsteer.spec.training import load_train_spec


def checkpoint_dir(root: Path, step: int) -> Path:
    """The folder of a training run's checkpoint at optimizer step `step` (under `<output>/checkpoints`)."""
    return root / f"step-{step:06d}"


def trained_run_dir(spec) -> tuple[Path, str]:
    """(the output folder of the run a `trained` spec names, the command that writes it). `spec.train` is
    absolute (the compiler binds paths)."""
    ts = load_train_spec(spec.train, spec.profile)
    out = Path(spec.output) if spec.output else ts.output_dir()
    moved = out != ts.output_dir()  # the compiler binds `output`; name it only where the run would not go itself
    command = (
        f"mechsteer train {spec.train}"
        + (f" --profile {spec.profile}" if spec.profile else "")
        + (f" --output {out}" if moved else "")
    )
    return out, command


def run_vectors_file(out: Path, checkpoint, command: str, name: str = "vectors.safetensors") -> Path:
    """The file `name` (vectors, or `lora1.safetensors`) of the run in `out`: final (None), a checkpoint step,
    or `best` (from best.json; VectorError naming the fix when there is none)."""
    if checkpoint == "best":
        return best_checkpoint_dir(out, command) / name
    if checkpoint is not None:
        return checkpoint_dir(out / "checkpoints", checkpoint) / name
    return out / name


def per_block_files(spec) -> dict[str, Path]:
    """Every finished per-block run's vector file a `per_block` spec would read, by run folder name (the
    plan hashes them, so a newly finished block changes the cells that read the stack)."""
    out, _ = trained_run_dir(spec)
    found = {}
    for d in sorted(out.glob("layer-[0-9]*")) if out.is_dir() else []:
        f = finished_vectors_file(d, spec.checkpoint)
        if f is not None:
            found[d.name] = f
    return found


def finished_vectors_file(out: Path, checkpoint) -> Path | None:
    """The vector file of the run in `out` when it is there (None: not written yet, or no best.json)."""
    try:
        f = run_vectors_file(out, checkpoint, "")
    except MechsteerError:
        return None
    return f if f.is_file() else None


def per_block_dir(out: Path, layer: int) -> Path:
    """The folder of block `layer`'s single-layer run inside a per-block training output."""
    return out / f"layer-{layer:02d}"


def per_block_command(spec, layers: list[int]) -> str:
    """The exact command that trains the per-block runs a `trained` vector spec (or a `lora1` intervention)
    with `per_block` reads: `mechsteer train FILE --profile P --per-block K,... --lr-rule R`, with the lr
    rule the training file asks for (so the recorded lr is the one the study expects) and `--output` only
    where the study reads a folder the run would not choose itself."""
    head, tail = per_block_command_parts(spec)
    return f"{head}{','.join(str(k) for k in layers)}{tail}"


def per_block_command_parts(spec) -> tuple[str, str]:
    """`per_block_command` before and after its block list, read from the training file once (the compiler
    keeps them in the bound run, so naming missing blocks at execution reads no YAML)."""
    ts = load_train_spec(spec.train, spec.profile)
    out = Path(spec.output) if getattr(spec, "output", None) else ts.output_dir()
    head = f"mechsteer train {spec.train}" + (f" --profile {spec.profile}" if spec.profile else "") + " --per-block "
    tail = f" --lr-rule {ts.spec.per_block.lr_rule}" + (f" --output {out}" if out != ts.output_dir() else "")
    return head, tail


BEST_FILE = "best.json"
"""The selected checkpoint of a run: its step, the metric and every candidate's value. Written by a training
run with `eval.select` (held-out `mini` accuracy during training), or by `mechsteer select-checkpoints` from a
study that evaluated the run's checkpoints on the benchmarks (the paper's selection: the six-benchmark Average,
`studies/checkpoints.yaml`)."""


def best_checkpoint_dir(out: Path, command: str) -> Path:
    """The checkpoint folder a run's `best.json` selects (VectorError naming the fix when there is none)."""
    path = out / BEST_FILE
    if not path.is_file():
        raise VectorError(
            f"the training run in {out} has no {BEST_FILE}: a best checkpoint is picked by its training file's "
            "`eval.select` (held-out mini task), or by `mechsteer select-checkpoints <study output>` after a study "
            "evaluated its checkpoints (the paper's six-benchmark Average: studies/checkpoints.yaml)",
            hint=f"run the checkpoint-selection study and `mechsteer select-checkpoints` on its output, set "
            f"eval.select and run `{command}`, or name a checkpoint step",
        )
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError covers bad JSON and non-UTF-8 bytes
        best = e
    step = best.get("step") if isinstance(best, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        got = f"unreadable ({best})" if isinstance(best, Exception) else f"step {step!r}"
        raise VectorError(
            f"{path}: not a best-checkpoint record ({got}; expected a JSON object with a non-negative integer `step`)",
            hint=f"run `{command}` again to rewrite it, or name a checkpoint step instead of `best`",
        )
    return checkpoint_dir(out / "checkpoints", step)
