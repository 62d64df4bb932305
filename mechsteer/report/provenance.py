"""Report sections that say what a result is: whether it is a rehearsal (and what it stood in), the study's
declared deviations from the paper, and the vectors each cell read with the training checkpoint(s) behind them
(final, a fixed step, or the run's selected best; per block for stacks of single-layer runs), read from the
recorded cells' vector metadata."""

from __future__ import annotations

import json

import pandas as pd

from mechsteer.safe_text import markdown_table


def rehearsal_section(results) -> list[str]:
    """A rehearsal's banner and what it stood in for what (`mechsteer run --rehearse`); nothing for a run."""
    rehearsal = results.rehearsal
    if not rehearsal:
        return []
    lines = [f"**{rehearsal.get('banner', 'REHEARSAL')}**", "", "## What the rehearsal stood in", ""]
    lines += [f"- {note}" for note in rehearsal.get("stand_ins") or []]
    caps = rehearsal.get("caps") or {}
    if caps:
        lines += ["", "Caps: " + ", ".join(f"{k} {v}" for k, v in caps.items() if not isinstance(v, dict)), ""]
    return lines + [""]


def deviations_section(results) -> list[str]:
    """`## Deviations from the paper`: the study's (or profile's) `deviations:` list, when it has one."""
    items = results.summary.get("deviations") or []
    if not items:
        return []
    return ["## Deviations from the paper", "", *[f"- {d}" for d in items], ""]


def _steps_text(runs: dict) -> str:
    """`block: step` pairs, grouped by step when there are many blocks."""
    by_step: dict = {}
    for block, entry in sorted(runs.items(), key=lambda kv: int(kv[0])):
        by_step.setdefault(entry.get("checkpoint"), []).append(int(block))
    if len(runs) <= 4:
        return ", ".join(
            f"block {b}: step {entry.get('checkpoint')}" for b, entry in sorted(runs.items(), key=lambda kv: int(kv[0]))
        )
    return "; ".join(
        f"step {step}: blocks {', '.join(map(str, blocks))}" for step, blocks in sorted(by_step.items(), key=str)
    )


def checkpoint_rows(results) -> pd.DataFrame:
    """One row per (model, vector set) read by a recorded cell: its source, how the checkpoint was chosen and
    the step(s) read."""
    rows: dict[tuple[str, str], dict] = {}
    for c in results.recorded():
        record = results.store.read_record(c["hash"])
        for name, v in (record.get("vectors") or {}).items():
            meta = v.get("meta") or {}
            if (c["model"], name) in rows or not ("run" in meta or "runs" in meta):
                continue
            if "runs" in meta:
                steps = _steps_text(json.loads(meta["runs"]))
            else:
                steps = f"step {meta.get('checkpoint')}"
            rows[(c["model"], name)] = {
                "model": c["model"],
                "vectors": name,
                "source": meta.get("source", ""),
                "checkpoint": meta.get("checkpoint_rule", ""),
                "steps": steps,
            }
    return pd.DataFrame(list(rows.values()), columns=["model", "vectors", "source", "checkpoint", "steps"])


def checkpoints_section(results) -> list[str]:
    """`## Training checkpoints used`: which checkpoint every trained vector set of the results came from."""
    t = checkpoint_rows(results)
    if t.empty:
        return []
    return [
        "## Training checkpoints used",
        "",
        "`checkpoint`: `best` = the step the run's best.json selected (`mechsteer select-checkpoints`: the "
        "six-benchmark Average, as the paper; or the training file's `eval.select`), `fixed` = a step named in "
        "the study, `final` = the run's last step.",
        "",
        markdown_table(t, index=False),
        "",
    ]
