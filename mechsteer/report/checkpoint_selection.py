"""The paper's best-checkpoint selection from a study's results (`mechsteer select-checkpoints OUTPUT`).

The authors keep, per training run (each all-layer run, each block's single-layer run), the checkpoint of
{106, 159, 212, 265, 314} with the highest six-benchmark Average on the test benchmarks themselves (paper
digest section 3.5, `select_best_ckpt_per_name`). mechsteer does the same in two steps, so the expensive part
runs as ordinary study cells (cached, resumable, spread over GPUs by the Ray executor):

1. a study whose conditions each add one checkpoint of a run (`studies/checkpoints.yaml`: a vector set
   `{kind: trained, ..., checkpoint: N}` per step, a sweep over steps and, for per-block runs, over blocks);
2. this module reads its recorded cells, maps every such condition back to (run folder, step) through the
   vector metadata the `trained` builder records (`run` / `checkpoint`, per block `runs`), scores each
   condition by the six-benchmark Average of the boxed accuracy (per seed, then the mean over seeds; the mean
   of the tasks present when the study has not all six) and writes `best.json` into each run: the step, the
   metric, its value and every candidate's. A study then reads it with `checkpoint: best`, and the report names
   the step it used. Ties go to the earliest step (as the training-time `eval.select` does).

A condition is a candidate when its only intervention (besides a forced opening, `prefix_token`) adds one trained
vector set: the whole set of an all-layer (or single-layer) run, or one block of a per-block stack, which stands
for that block's own run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.errors import MechsteerError
from mechsteer.report.paper_table import per_seed, seed_average
from mechsteer.train.layout import BEST_FILE

METRIC = "acc_boxed"
"""The paper's metric (last \\boxed{} verified with math-verify); `acc_lenient` for models that never box."""
NEUTRAL_KINDS = ("prefix_token",)
"""Interventions a checkpoint condition may carry besides its one `add`: a vector trained with a forced opening
is evaluated with it (the paper's append_to runs)."""


@dataclass(frozen=True)
class Candidate:
    """One evaluated checkpoint: the condition that evaluated it and the run folder and step it read."""

    model: str
    condition: str
    run: str
    step: int


def candidate_of(record: dict) -> tuple[str, int] | None:
    """(run folder, step) a recorded cell's condition evaluates, or None when it is not one checkpoint of one
    run (see the module docstring)."""
    ivs = [iv for iv in record.get("interventions") or [] if iv.get("kind") not in NEUTRAL_KINDS]
    if len(ivs) != 1 or ivs[0].get("kind") != "add":
        return None
    add = ivs[0]
    if float(add.get("scale", 1.0)) != 1.0 or add.get("positions", "all") != "all":
        return None
    meta = (record.get("vectors") or {}).get(add.get("vector"), {}).get("meta") or {}
    if "runs" in meta:  # a per-block stack: one block of it stands for that block's run
        layer = add.get("layer")
        layer = layer[0] if isinstance(layer, list) and len(layer) == 1 else layer
        entry = json.loads(meta["runs"]).get(str(layer)) if isinstance(layer, int) else None
        if entry is None or entry.get("checkpoint") is None:
            return None
        return entry["run"], int(entry["checkpoint"])
    if "run" in meta and meta.get("checkpoint") not in (None, "None"):
        return meta["run"], int(meta["checkpoint"])
    return None


def candidates(results) -> list[Candidate]:
    """Every (model, condition) of the recorded evaluation cells that evaluates one checkpoint of one run."""
    seen: dict[tuple[str, str], Candidate] = {}
    for c in results.recorded():
        if c["kind"] != "eval" or (c["model"], c["condition"]) in seen:
            continue
        found = candidate_of(results.store.read_record(c["hash"]))
        if found is not None:
            seen[(c["model"], c["condition"])] = Candidate(c["model"], c["condition"], found[0], found[1])
    return list(seen.values())


def scores(results, metric: str = METRIC) -> tuple[pd.Series, str]:
    """Mean over seeds of each (model, condition)'s per-seed score, and what the score is."""
    wide = per_seed(results.table(), metric)
    if wide.empty:
        raise MechsteerError(
            f"{results.output_dir}: no recorded evaluation cells with {metric}",
            hint="run the checkpoint-selection study first (it needs an `evaluation:` block)",
        )
    per, what = seed_average(wide)
    return per.groupby(level=["model", "condition"]).mean(), what


def select(results, metric: str = METRIC) -> list[dict]:
    """best.json contents per run (not written); each with `run`: the folder it belongs in. `metric`: the
    evaluation metric averaged (`acc_boxed`, the paper's, or `acc_lenient`)."""
    cands = candidates(results)
    if not cands:
        raise MechsteerError(
            f"{results.output_dir}: no condition adds one checkpoint of a training run",
            hint="conditions like [{kind: add, vector: c265}] with c265: {kind: trained, ..., checkpoint: 265} "
            "(see studies/checkpoints.yaml)",
        )
    score, what = scores(results, metric)
    by_run: dict[str, dict[int, tuple[float, Candidate]]] = {}
    for c in cands:
        value = score.get((c.model, c.condition))
        if value is None or pd.isna(value):
            continue  # not every task recorded yet for this condition
        by_run.setdefault(c.run, {}).setdefault(c.step, (float(value), c))
    out = []
    for run, steps in sorted(by_run.items()):
        cand = [
            {"step": s, "value": v, "condition": c.condition, "model": c.model} for s, (v, c) in sorted(steps.items())
        ]
        best = max(cand, key=lambda x: (x["value"], -x["step"]))
        out.append(
            {
                "run": run,
                "step": best["step"],
                "metric": f"{metric}: {what}, mean over seeds",
                "value": best["value"],
                "candidates": cand,
                "selected_by": {
                    "study": results.study,
                    "profile": results.profile,
                    "output": str(Path(results.output_dir).resolve()),
                    "rule": "test-set selection as in the paper (the benchmarks that are also reported)",
                },
            }
        )
    return out


def write_best(selection: list[dict]) -> list[Path]:
    """Write each entry's best.json into its run folder (which must exist); returns the files written."""
    written = []
    for entry in selection:
        run = Path(entry["run"])
        if not run.is_dir():
            raise MechsteerError(f"run folder {run} does not exist", hint="was the run moved since the study ran?")
        body = {k: v for k, v in entry.items() if k != "run"}
        written.append(atomic_write_text(run / BEST_FILE, json.dumps(body, indent=1, sort_keys=True) + "\n"))
    return written
