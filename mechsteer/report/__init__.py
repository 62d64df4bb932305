"""The study report: tables (CSV + Markdown) and plots from recorded cells only, linked from `report.md`.

Sections, in order: the study's deviations from the paper (`deviations:`), the effects (`report/effects.py`:
per measurement with per-problem records, each condition against the baseline and its control, a figure per
model and headline metric, then a table), the models with the intervention sites each kind of the run uses on
each model's block layout and, for several models, their headline rates side by side (`report/models.py`),
the results per measurement (rows = conditions, mean ± std over
seeds, at most six metric columns per table, so every table fits the page), the difference from the unsteered
baseline, the paper-shaped benchmark table (when the study has an `evaluation:`), the sweep plots (accuracy per
layer / per head, relative improvement per pair of layers: `report/sweeps.py`, `report/composition.py`), the
transfer table (recipient x donor models, `report/transfer.py`), the training checkpoints behind every trained
vector set (`report/provenance.py`), then one section per readout kind present whose registration names a
report function (`@readout_kind(..., report="module:attr")`, called as `fn(results, out_dir) -> list of
Markdown lines`). The same lines are written as `report.md` and as the self-contained `report.html`
(`report/html.py`: images inlined, rows traced to their cells).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.report.effects import effects_section
from mechsteer.report.html import write_html
from mechsteer.report.models import models_section
from mechsteer.report.paper_table import paper_table_section
from mechsteer.report.provenance import checkpoints_section, deviations_section, rehearsal_section
from mechsteer.report.sweeps import sweep_section
from mechsteer.report.tables import column_chunks, delta_table, is_rate, per_measurement
from mechsteer.report.transfer import transfer_section
from mechsteer.results import Results
from mechsteer.safe_text import markdown_table
from mechsteer.spec.kinds import READOUT_KINDS


def write_report(results) -> Path:
    """Write `report/` for a Results (or a Plan, read through its recorded cells); returns report.md's path."""
    if not isinstance(results, Results):
        results = Results.from_plan(results)
    out = results.output_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = results.table()
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    means, text = results.wide(), results.wide(text=True)
    title = f"# {results.study}" + (f" (profile {results.profile})" if results.profile else "")
    lines = [("# REHEARSAL: " + title[2:]) if results.rehearsal else title, ""]
    lines += rehearsal_section(results)
    if results.summary.get("description"):
        lines += [results.summary["description"].strip(), ""]
    lines += deviations_section(results)
    n_done = len({c["hash"] for c in results.recorded()})  # cells without numeric metrics count too
    n_cells = len({c["hash"] for c in results.cells})
    lines += [f"{n_done} of {n_cells} cells recorded. Values are mean ± std over seeds; rates in %.", ""]
    lines += effects_section(results, out)
    lines += models_section(results)
    lines += ["## Results", ""]
    if not text.empty:
        atomic_write_text(out / "table.csv", means.to_csv())
        tables = per_measurement(df, results.conditions)
        lines += _measurement_tables([(meas, shown) for meas, _, shown in tables])
        delta = results.delta()
        if not delta.empty:
            atomic_write_text(out / "delta.csv", delta.to_csv())
            deltas = [(meas, delta_table(m, results.baseline)) for meas, m, _ in tables]
            lines += [
                f"## Difference from the baseline condition `{results.baseline}`",
                "",
                "(percentage points for rates)",
                "",
                *_measurement_tables([(meas, _format_delta(d)) for meas, d in deltas if not d.empty]),
            ]
    lines += paper_table_section(results, out)
    lines += sweep_section(results, out)
    lines += transfer_section(results, out)
    lines += checkpoints_section(results)
    for kind in sorted({c["kind"] for c in results.recorded()}):
        section = READOUT_KINDS.report(kind) if kind in READOUT_KINDS else None
        if section is not None:
            lines += section(results, out)
    lines += [
        "## Files",
        "",
        "- `results.csv`: one row per model x condition x measurement x seed x metric",
        "- `table.csv`, `delta.csv`: the tables above as numbers (one column per measurement/metric)",
        "- `effects.csv`: the effects (rates, differences, intervals, p-values, cells)",
        "- `report.html`: this report as one page (plots inlined, table rows name their cells)",
        f"- cells: `{results.store.root}`",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines))
    write_html(results, out, lines)
    atomic_write_text(out / "table.md", "\n".join(lines[: lines.index("## Files")]))
    return out / "report.md"


def _measurement_tables(tables: list[tuple[str, pd.DataFrame]]) -> list[str]:
    """One Markdown table per measurement (rows = model x condition, columns = its metrics, at most
    `MAX_METRIC_COLUMNS` per table)."""
    lines: list[str] = []
    for meas, text in tables:
        chunks = column_chunks(text)
        for i, chunk in enumerate(chunks):
            lines += [f"### {meas}" + (f" ({i + 1} of {len(chunks)})" if len(chunks) > 1 else ""), ""]
            lines += [markdown_table(chunk.reset_index(), index=False, disable_numparse=True), ""]
    return lines


def _format_delta(delta: pd.DataFrame) -> pd.DataFrame:
    shown = delta.copy().astype(object)
    for col in delta.columns:
        rate = is_rate(col)
        shown[col] = [("-" if pd.isna(v) else (f"{v * 100:+.1f}" if rate else f"{v:+.2f}")) for v in delta[col]]
    return shown


__all__ = ["write_report"]
