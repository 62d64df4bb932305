"""What `mechsteer run` and `mechsteer report` print at the end: a compact rich table of the effects (condition,
headline metric with its 95% interval, difference from the baseline and from the control with intervals and
McNemar p, cells), sized to the terminal, and the paths of report.md and report.html; or, with `--format json`,
the same facts as one JSON document for scripts. The full tables are in the report, never dumped here.

Width: columns are added in order of importance (condition, rate, vs baseline, p, vs control, p, cells, model)
while they fit the console; every cell stays on one line. Height: at most `max_rows` rows (a measurement's
rows are kept together; the rest is counted in a closing line). A study without per-problem records shows one
metric per measurement instead (mean over seeds), as many as fit.
"""

from __future__ import annotations

import json
import math

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from mechsteer.report.effects import delta_text, p_text, rate_text
from mechsteer.report.tables import HEADLINE, is_rate

PAD = 3
"""Characters a column takes beyond its text (padding and the separator)."""


def _paths(results) -> dict:
    out = results.output_dir / "report"
    return {"md": str(out / "report.md"), "html": str(out / "report.html")}


def _counts(results) -> dict:
    return {
        "recorded": len({c["hash"] for c in results.recorded()}),
        "total": len({c["hash"] for c in results.cells}),
    }


def summary_json(results, ran: dict | None = None) -> str:
    """The summary as JSON: study, profile, output folder, report paths, cell counts, what the run did
    (`ran`), the headline metric and every effects row (NaN as null)."""
    eff = results.effects()
    doc = {
        "study": results.study,
        "profile": results.profile,
        "output_dir": str(results.output_dir),
        "report": _paths(results),
        "cells": _counts(results),
        "ran": ran,
        "headline": results.headline(),
        "baseline": results.baseline,
        "effects": json.loads(eff.to_json(orient="records")) if not eff.empty else [],
    }
    if results.rehearsal is not None:
        doc = {"rehearsal": results.rehearsal, **doc}
    return json.dumps(doc, indent=1)


Column = tuple[str, list[str], str]
"""(header, one text per row, justify)."""


def _effect_columns(eff: pd.DataFrame, multi_model: bool) -> list[list[Column]]:
    """Candidate columns in order of importance, as units that are shown or left out together (a difference
    and its p)."""
    metric = eff.metric.iloc[0]
    rows = list(eff.itertuples())
    units = [
        [("condition", list(eff.condition), "left")],
        [(f"{metric} %", [rate_text(r) for r in rows], "right")],
        [
            ("vs baseline, pp", [_delta(r, "baseline") for r in rows], "right"),
            ("p", [p_text(r.p_baseline, r.vs_baseline, short=True) for r in rows], "right"),
        ],
    ]
    if eff.control.notna().any():
        units.append(
            [
                ("vs control, pp", [_delta(r, "control") for r in rows], "right"),
                ("p ", [p_text(r.p_control, r.vs_control, short=True) for r in rows], "right"),
            ]
        )
    units.append([("cells", list(eff.cells), "left")])
    if multi_model:
        units.insert(1, [("model", list(eff.model), "left")])
    return units


def _delta(row, which: str) -> str:
    return delta_text(getattr(row, f"vs_{which}"), getattr(row, f"vs_{which}_low"), getattr(row, f"vs_{which}_high"))


def _fit(units: list[list[Column]], width: int, keep: int = 2) -> list[Column]:
    """The columns of the leading units whose one-line widths fit `width` (the first `keep` units always)."""
    out: list[Column] = []
    used = 0
    for i, unit in enumerate(units):
        w = sum(max([len(head), *(len(c) for c in cells)]) + PAD for head, cells, _ in unit)
        if i >= keep and used + w > width:
            continue
        out += unit
        used += w
    return out


def _rows_within(groups: list[pd.DataFrame], max_rows: int) -> tuple[list[pd.DataFrame], int]:
    """Whole measurement groups while they fit `max_rows` (the first one cut if it alone is longer), and the
    number of rows left out."""
    shown, used = [], 0
    for g in groups:
        need = len(g) + 1  # its rows and its heading row
        if used + need > max_rows:
            if not shown:
                shown.append(g.iloc[: max(max_rows - 1, 1)])
                used = max_rows
            break
        shown.append(g)
        used += need
    total = sum(len(g) for g in groups)
    return shown, total - sum(len(g) for g in shown)


def _table(title: str, cols, groups: list[tuple[str, list[int]]]) -> Table:
    t = Table(title=escape(title), box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title_justify="left")
    for head, _, justify in cols:
        t.add_column(escape(head), justify=justify, no_wrap=True, overflow="ellipsis")
    for label, idx in groups:
        if label:
            t.add_row(f"[bold]{escape(label)}[/]", *[""] * (len(cols) - 1))
        for i in idx:  # every value is user text or a number: escaped, never markup
            t.add_row(*[escape(cells[i]) for _, cells, _ in cols])
    return t


def effects_summary(results, width: int, max_rows: int) -> tuple[Table | None, str | None]:
    """(the effects table, a closing note) for the terminal, or (None, None) without per-problem records."""
    eff = results.effects()
    if eff.empty:
        return None, None
    eff = eff.reset_index(drop=True)
    by_meas = [g for _, g in eff.groupby(["model", "measurement"], sort=False)]
    shown, left_out = _rows_within(by_meas, max_rows)
    rows = pd.concat(shown)
    multi_model = eff.model.nunique() > 1
    cols = _fit(_effect_columns(rows, multi_model), width)
    positions = {ix: k for k, ix in enumerate(rows.index)}
    groups = [
        (f"{g.measurement.iloc[0]}" + (f" ({g.model.iloc[0]})" if multi_model else ""), [positions[i] for i in g.index])
        for g in shown
    ]
    controls = sorted(set(rows.control.dropna()))
    named = ", ".join(controls) if len(controls) <= 3 else "each condition's own"
    title = (
        f"{results.study}: {eff.metric.iloc[0]} in % [95% CI]; difference from the baseline `{results.baseline}`"
        + (f" and the control ({named})" if controls else "")
        + " in points [95% CI], exact McNemar p"
    )
    note = f"{left_out} more rows in the report" if left_out else None
    return _table(title, cols, groups), note


def values_summary(results, width: int, max_rows: int) -> tuple[Table | None, str | None]:
    """Without per-problem records: one metric per measurement (mean over seeds), conditions as rows."""
    df = results.table()
    if df.empty:
        return None, None
    picks = []
    for (meas, kind), g in df.groupby(["measurement", "kind"], sort=False):
        preferred = HEADLINE.get(kind) or []
        recorded = [m for m in dict.fromkeys(g.metric) if m != "n"]
        metrics = [m for m in preferred if m in recorded] or [m for m in recorded if is_rate(m)] or recorded
        if metrics:
            picks.append((meas, metrics[0]))
    means = df.groupby(["model", "condition", "measurement", "metric"], sort=False).value.mean()
    keys = list(dict.fromkeys(zip(df.model, df.condition, strict=True)))
    order = {c: i for i, c in enumerate(results.conditions)}
    keys.sort(key=lambda k: order.get(k[1], len(order)))
    multi_model = len({m for m, _ in keys}) > 1
    cols = [[("condition", [c for _, c in keys], "left")]]
    if multi_model:
        cols.append([("model", [m for m, _ in keys], "left")])
    for meas, metric in picks:
        cells = []
        for model, cond in keys:
            v = means.get((model, cond, meas, metric), math.nan)
            cells.append("-" if pd.isna(v) else (f"{v * 100:.1f}" if is_rate(metric) else f"{v:.3g}"))
        cols.append([(f"{meas}/{metric}" + (" %" if is_rate(metric) else ""), cells, "right")])
    cols = _fit(cols, width)
    n = min(len(keys), max_rows)
    title = f"{results.study}: one metric per measurement, mean over seeds (no per-problem records to compare)"
    note = f"{len(keys) - n} more rows in the report" if len(keys) > n else None
    return _table(title, cols, [("", list(range(n)))]), note


def ls_table(df: pd.DataFrame, root, width: int) -> Table:
    """`mechsteer ls` as a table that fits `width`: folder (relative to `root`, a limited run marked), study,
    cells recorded / stale / damaged first; profile, last run, models and the report's path as they fit."""
    import os

    def text(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    rows = list(df.itertuples())
    folders = [
        os.path.relpath(r.folder, root) + (f" (limit {int(r.limit)})" if not pd.isna(r.limit) else "") for r in rows
    ]
    units = [
        [("folder", folders, "left")],
        [("study", [text(r.study) for r in rows], "left")],
        [
            ("cells", [text(r.cells) for r in rows], "right"),
            ("recorded", [text(r.recorded) for r in rows], "right"),
            ("stale", ["?" if pd.isna(r.stale) else str(int(r.stale)) for r in rows], "right"),
            ("damaged", [text(r.damaged) for r in rows], "right"),
        ],
        [
            (
                "last run",
                [r.last_run[:16].replace("T", " ") if isinstance(r.last_run, str) else "-" for r in rows],
                "left",
            )
        ],
        [("profile", [text(r.profile) for r in rows], "left")],
        [("models", [text(r.models) for r in rows], "left")],
        [("report", [os.path.relpath(r.report, root) if isinstance(r.report, str) else "-" for r in rows], "left")],
    ]
    cols = _fit(units, width, keep=3)
    return _table(f"output folders under {root} (paths relative to it)", cols, [("", list(range(len(rows))))])


def print_summary(results, console, *, ran: str | None = None) -> None:
    """The terminal summary: what ran, the cell count, the effects (or values) table, the report paths."""
    counts = _counts(results)
    banner = (results.rehearsal or {}).get("banner")
    if banner:
        console.print(f"[bold reverse] {escape(banner)} [/]", soft_wrap=True)
    if ran:
        console.print(escape(ran))
    console.print(f"{counts['recorded']} of {counts['total']} cells recorded")
    width, height = console.size
    max_rows = max(8, min(40, height - 10))
    table, note = effects_summary(results, width, max_rows)
    if table is None:
        table, note = values_summary(results, width, max_rows)
    if table is not None:
        console.print(table)
    if note:
        console.print(escape(note))
    paths = _paths(results)
    console.print(escape(f"report: {paths['md']}"), soft_wrap=True)
    console.print(escape(f"        {paths['html']}"), soft_wrap=True)
    if banner:
        console.print(f"[bold reverse] {escape(banner)} [/]", soft_wrap=True)


__all__ = ["effects_summary", "ls_table", "print_summary", "summary_json", "values_summary"]
