"""The output folders under a root (`mechsteer ls`): what each run folder holds and whether its cells are still
what the current code would compute.

A run folder is any folder with a plan.json (`outputs/<study>[-<profile>]/`, and a limited run's
`outputs/<study>[-<profile>]/limit-N/`, listed with its limit). For each: the study, profile, limit and models
from plan.json; the plan's unique cells, how many are recorded, damaged (a folder whose cell.json or
metrics.json is missing or unreadable) and stale (recorded, but computed by other mechsteer code or library
versions than the current ones: the study file named in plan.json is compiled again, with the folder's profile
and limit, and each recorded cell's code fingerprint compared with the one the current code gives it; "?" when
the study file is gone or no longer valid); the time the last cell finished; and the report's path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from mechsteer.engine.plan import PLAN_FILE
from mechsteer.engine.store import CellStore
from mechsteer.errors import MechsteerError

SKIP = {"cells", "work", "report", "stand-ins", ".git", "__pycache__"}
"""Folders inside a run that never hold another run."""
MAX_DEPTH = 4
"""How deep under the root run folders are looked for (outputs/studies_bench/<time>/<study>/limit-N)."""

COLUMNS = [
    "folder",
    "study",
    "profile",
    "limit",
    "models",
    "cells",
    "recorded",
    "stale",
    "damaged",
    "last_run",
    "report",
    "note",
]


def run_folders(root: str | Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every folder at or under `root` holding a plan.json, sorted by path."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if PLAN_FILE in filenames:
            out.append(here)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP and depth < max_depth)
    return sorted(out)


def _stale(summary: dict, store: CellStore, recorded: list[str]) -> tuple[int | None, str]:
    """(recorded cells computed by other code than the current one, a note); None when the study cannot be
    compiled again."""
    from mechsteer.engine.execute import cell_state
    from mechsteer.engine.plan import compile_study
    from mechsteer.spec.loader import load_study

    spec_file = summary.get("spec_file")
    if not isinstance(spec_file, str) or not Path(spec_file).is_file():
        return None, "study file not found: stale cells unknown"
    try:
        plan = compile_study(load_study(spec_file, summary.get("profile")), limit=summary.get("limit"))
    except MechsteerError as e:
        return None, f"study file no longer valid ({e.problems[0].message}): stale cells unknown"
    planned = {c.hash for c in plan.cells}
    stale = sum(1 for h in recorded if h in planned and cell_state(plan, store, h).state == "stale")
    gone = sum(1 for h in recorded if h not in planned)
    note = f"{gone} recorded cells are no longer in the study" if gone else ""
    return stale, note


def _last_run(store: CellStore, recorded: list[str]) -> str | None:
    times = []
    for h in recorded:
        finished = (store.read_record(h).get("timing") or {}).get("finished")
        if isinstance(finished, str):
            times.append(finished)
    return max(times) if times else None


def folder_status(path: str | Path) -> dict:
    """One row of `list_outputs` for a run folder (see the module docstring)."""
    from mechsteer.results import check_summary

    path = Path(path)
    row = dict.fromkeys(COLUMNS)
    row.update(folder=str(path), note="")
    try:
        summary = check_summary(json.loads((path / PLAN_FILE).read_text(encoding="utf-8")), path / PLAN_FILE)
    except (OSError, ValueError, RecursionError, MechsteerError) as e:
        row["note"] = f"unreadable {PLAN_FILE}: {e}"
        return row
    store = CellStore(path / "cells")
    hashes = list(dict.fromkeys(c["hash"] for c in summary["cells"]))
    recorded = [h for h in hashes if store.is_done(h)]
    if summary.get("rehearsal") is not None:  # compiled again, the study is the real one: no cell would match
        stale, note = None, "REHEARSAL (random-weight twins, stand-in data): not results"
    else:
        stale, note = _stale(summary, store, recorded)
    report = path / "report" / "report.html"
    row.update(
        study=summary["study"],
        profile=summary.get("profile"),
        limit=summary.get("limit"),
        models=", ".join(summary["models"]),
        cells=len(hashes),
        recorded=len(recorded),
        stale=stale,
        damaged=sum(1 for h in hashes if store.damage(h) is not None),
        last_run=_last_run(store, recorded),
        report=str(report) if report.is_file() else None,
        note=note,
    )
    return row


def list_outputs(root: str | Path = "outputs") -> pd.DataFrame:
    """One row per run folder under `root` (columns: `COLUMNS`); a root that does not exist is an error."""
    root = Path(root)
    if not root.is_dir():
        raise MechsteerError(
            f"{root}: no such folder", hint="give the folder `mechsteer run` writes to (default: outputs)"
        )
    return pd.DataFrame([folder_status(p) for p in run_folders(root)], columns=COLUMNS)


__all__ = ["COLUMNS", "folder_status", "list_outputs", "run_folders"]
