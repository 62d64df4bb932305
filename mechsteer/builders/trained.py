"""Builder of the `trained` vector kind: read what `mechsteer train` wrote (final vectors or a checkpoint),
or stack the per-block single-layer runs `mechsteer train FILE --per-block LAYERS` wrote (`per_block`).

The built set's metadata names the run folder(s) and the optimizer step(s) actually read (`run`,
`checkpoint`; per block: `runs` = {block: {run, checkpoint}}), so every cell record says which checkpoint a
result used (`best` and the final vectors resolved to their step), the report shows it, and
`mechsteer select-checkpoints` maps a condition back to the run it evaluated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from mechsteer.engine.vectors import BuildContext, subset
from mechsteer.errors import VectorError
from mechsteer.spec.training import (
    finished_vectors_file,
    per_block_command,
    per_block_dir,
    trained_run_dir,
    trained_vectors_path,
)
from mechsteer.vectors.vector_set import VectorSet, load_vector_set


def build_trained(spec, ctx: BuildContext) -> VectorSet:
    if spec.per_block is not None:
        return _build_per_block(spec, ctx)
    path, command = trained_vectors_path(spec)
    if not path.is_file():
        what = f"checkpoint {spec.checkpoint}" if spec.checkpoint else "final vectors"
        raise VectorError(
            f"the training run's {what} are not there: {path}",
            hint=f"train them first: `{command}` (or set `output:` to where the run wrote them)",
        )
    vs = load_vector_set(path)
    out, _ = trained_run_dir(spec)
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


def _rule(checkpoint) -> str:
    """How the checkpoint was chosen, for the report: `best` (best.json), `fixed` (a step) or `final`."""
    return "best" if checkpoint == "best" else ("final" if checkpoint is None else "fixed")


def _build_per_block(spec, ctx: BuildContext) -> VectorSet:
    """Row k of the result = row k of block k's own single-layer run; every missing run is named at once."""
    layers = list(range(ctx.n_layers)) if spec.per_block == "all" else sorted(set(spec.per_block))
    bad = [k for k in layers if not 0 <= k < ctx.n_layers]
    if bad:
        raise VectorError(f"per_block names blocks {bad} outside the model's 0..{ctx.n_layers - 1}")
    out, _ = trained_run_dir(spec)
    files, missing = {}, []
    for k in layers:
        f = finished_vectors_file(per_block_dir(out, k), spec.checkpoint)
        if f is None:
            missing.append(k)
        else:
            files[k] = f
    if missing:
        raise VectorError(
            f"{len(missing)} of {len(layers)} per-block runs are not there under {out} (blocks {missing})",
            hint=f"train them first: `{per_block_command(spec, missing)}`",
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
