"""Builder of the `trained` vector kind: read what `mechsteer train` wrote (final vectors or a checkpoint),
or stack the per-block single-layer runs `mechsteer train FILE --per-block LAYERS` wrote (`per_block`).

The built set's metadata names the run folder(s) and the optimizer step(s) actually read (`run`,
`checkpoint`; per block: `runs` = {block: {run, checkpoint}}), so every cell record says which checkpoint a
result used (`best` and the final vectors resolved to their step), the report shows it, and
`mechsteer select-checkpoints` maps a condition back to the run it evaluated.

It reads only the files the compiler located (`TrainedVectors.bind` -> `spec.run`): never the training file,
so a plan runs the same wherever it executes and a set's content is the one its cells were keyed by."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from mechsteer.builders.context import BuildContext, subset
from mechsteer.errors import VectorError
from mechsteer.train.layout import per_block_dir
from mechsteer.vectors.vector_set import VectorSet, load_vector_set


def build_trained(spec, ctx: BuildContext) -> VectorSet:
    """The run's final vectors or a checkpoint's (`per_block`: the stack of single-layer runs); a missing file
    is a VectorError naming the command that writes it."""
    if spec.per_block is not None:
        return _build_per_block(spec, ctx)
    run = spec.bound_run()
    if run.problem is not None:
        message, hint = run.problem
        raise VectorError(message, hint=hint)
    path = Path(run.file)
    if not path.is_file():
        what = f"checkpoint {spec.checkpoint}" if spec.checkpoint else "final vectors"
        raise VectorError(
            f"the training run's {what} are not there: {path}",
            hint=f"train them first: `{run.command}` (or set `output:` to where the run wrote them)",
        )
    vs = load_vector_set(path)
    out = Path(run.output)
    step = checkpoint_step(path, vs.meta)
    vs.meta.setdefault(
        "source",
        f"trained({Path(spec.train).name}{', ' + spec.profile if spec.profile else ''}"
        f"{', ' + path.parent.name if spec.checkpoint else ''})",
    )
    vs.meta.update(run=str(out), checkpoint=str(step), checkpoint_rule=_rule(spec.checkpoint))
    return subset(vs, spec.layers, ctx, f"trained vectors {path}")


def checkpoint_step(path: Path, meta: dict) -> int | None:
    """The optimizer step of a run's vector file: its checkpoint folder's step, else the `step` the trainer
    wrote into the final file's metadata (None when neither says)."""
    m = re.fullmatch(r"step-(\d+)", path.parent.name)
    if m:
        return int(m.group(1))
    try:
        return int(meta["step"])
    except (KeyError, ValueError):
        return None


def _blocks_command(run, blocks: list[int]) -> str:
    """The command that trains `blocks`' single-layer runs (as the compiler named it from the training file)."""
    head, tail = run.block_command or (f"{run.command} --per-block ", "")
    return f"{head}{','.join(str(k) for k in blocks)}{tail}"


def _rule(checkpoint) -> str:
    """How the checkpoint was chosen, for the report: `best` (best.json), `fixed` (a step) or `final`."""
    return "best" if checkpoint == "best" else ("final" if checkpoint is None else "fixed")


def _build_per_block(spec, ctx: BuildContext) -> VectorSet:
    """Row k of the result = row k of block k's own single-layer run; every missing run is named at once."""
    layers = list(range(ctx.n_layers)) if spec.per_block == "all" else sorted(set(spec.per_block))
    bad = [k for k in layers if not 0 <= k < ctx.n_layers]
    if bad:
        raise VectorError(f"per_block names blocks {bad} outside the model's 0..{ctx.n_layers - 1}")
    run = spec.bound_run()
    out, found = Path(run.output), run.blocks or {}
    files, missing = {}, []
    for k in layers:
        f = found.get(per_block_dir(out, k).name)
        if f is None:
            missing.append(k)
        else:
            files[k] = Path(f)
    if missing:
        raise VectorError(
            f"{len(missing)} of {len(layers)} per-block runs are not there under {out} (blocks {missing})",
            hint=f"train them first: `{_blocks_command(run, missing)}`",
        )
    rows = torch.zeros(ctx.n_layers, ctx.d_model)
    runs = {}
    for k, f in files.items():
        vs = load_vector_set(f)
        if k not in vs.layers:
            raise VectorError(f"{f} is not block {k}'s single-layer run: its rows are {vs.layers}")
        rows[k] = vs.vectors[k]
        runs[str(k)] = {"run": str(per_block_dir(out, k)), "checkpoint": checkpoint_step(f, vs.meta)}
    what = f", {spec.checkpoint}" if spec.checkpoint else ""
    meta = {
        "source": f"trained per block({Path(spec.train).name}{', ' + spec.profile if spec.profile else ''}{what})",
        "runs": json.dumps(runs, sort_keys=True),
        "checkpoint_rule": _rule(spec.checkpoint),
    }
    return subset(VectorSet(rows, layers, meta), spec.layers, ctx, f"per-block runs under {out}")
