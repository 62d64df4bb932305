"""Transfer of steering vectors across models (paper section 9, Table 1), from recorded cells.

A transfer study has several models (the recipients, the keys of `models:`) and a one-variable sweep whose
values are model keys (the donors), e.g.

    conditions:
      base: []
      from_{donor}:
        sweep: {donor: [qwen, math, instruct]}
        interventions: [{kind: transfer, vector: "{donor}_vecs", donor: ...}]

The sweep is recognised from the recorded templates (`Results.sweeps()`: its values are all model keys); an
output folder with no recorded template falls back to condition names `<prefix><model key><suffix>` that
share prefix and suffix for two or more model keys. The table: rows = recipient models, columns = `Base` (the
recipient without vectors: the study's baseline condition) and one column per donor (donor == recipient is
native steering). A value is the evaluation accuracy (`acc_lenient` and `acc_boxed`, one table each) as the
paper's six-benchmark Average computed per seed when all six benchmarks ran, else the mean of the benchmarks
recorded (`paper_table.seed_average`), then mean ± std over seeds, in %.

The row-normalised table is (acc - base) / (native - base): 0 = no better than the recipient alone, 1 = as
good as the recipient's own vectors. It is NaN, with a note, where the native or base result is missing or
native == base (nothing to normalise by). Both are written as CSV (one row per recipient x column, with the
conditions and cells (hash prefixes) of every number) and Markdown.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.report.paper_table import TABLES, per_seed, seed_average
from mechsteer.report.sweeps import _safe
from mechsteer.safe_text import markdown_table

BASE = "Base"


def transfer_sweeps(results) -> list[tuple[str, dict[str, str], bool]]:
    """(name template, donor -> condition, from names only) of each transfer sweep (see the module docstring)."""
    models = results.models
    sweeps = results.sweeps()
    out = []
    for name, sweep in sweeps.items():
        if len(sweep) != 1:
            continue
        ((var, values),) = sweep.items()
        if isinstance(values, list) and values and all(isinstance(v, str) and v in models for v in values):
            out.append((name, {d: name.format(**{var: d}) for d in dict.fromkeys(values)}, False))
    if out or sweeps or len(models) < 2:
        return out
    keys = "|".join(re.escape(m) for m in sorted(models, key=len, reverse=True))
    rx = re.compile(rf"^(?P<pre>.*?)(?P<donor>{keys})(?P<post>.*)$")
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for cond in results.conditions:
        m = rx.match(cond)
        if m and cond != results.baseline:
            groups.setdefault((m["pre"], m["post"]), {}).setdefault(m["donor"], cond)
    for (pre, post), donors in groups.items():
        if len(donors) >= 2:
            order = sorted(donors, key=models.index)
            out.append((f"{pre}{{donor}}{post}", {d: donors[d] for d in order}, True))
    return out


def transfer_table(df: pd.DataFrame, metric: str, models: list[str], baseline: str | None, donors: dict[str, str]):
    """(long table, what a value is). One row per recipient x column (`Base`, then the donors) with columns
    recipient, column, donor, condition, acc (%), std, seeds, normalised, note, cells."""
    wide = per_seed(df, metric)
    if wide.empty:
        return pd.DataFrame(), ""
    score, what = seed_average(wide)
    d = df[(df.kind == "eval") & (df.metric == metric)]
    rows = []
    columns = ([(BASE, None, baseline)] if baseline else []) + [(d_, d_, c) for d_, c in donors.items()]
    for recipient in models:
        if recipient not in set(d.model):
            continue
        for column, donor, cond in columns:
            try:
                values = score.xs((recipient, cond), level=["model", "condition"]).dropna()
            except KeyError:
                values = pd.Series(dtype=float)
            cells = d[(d.model == recipient) & (d.condition == cond)].cell
            rows.append(
                {
                    "recipient": recipient,
                    "column": column,
                    "donor": donor or "",
                    "condition": cond,
                    "acc": values.mean() * 100 if len(values) else math.nan,
                    "std": values.std(ddof=1) * 100 if len(values) > 1 else math.nan,
                    "seeds": len(values),
                    "cells": " ".join(sorted(set(cells))),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table, what
    normalised, notes = [], []
    for r in table.itertuples(index=False):
        value, note = _normalise(table, r.recipient, r.acc, baseline, donors)
        normalised.append(value if r.column != BASE else math.nan)
        notes.append(note if r.column != BASE else "")
    return table.assign(normalised=normalised, note=notes), what


def _normalise(table: pd.DataFrame, recipient: str, acc: float, baseline: str | None, donors: dict[str, str]):
    """((acc - base) / (native - base), why it is NaN or "") for one value of `recipient`'s row."""
    row = table[table.recipient == recipient].set_index("column").acc
    base = row.get(BASE, math.nan)
    native = row.get(recipient, math.nan)
    if not baseline or math.isnan(base):
        return math.nan, "no base result (the recipient without vectors: the study's baseline condition)"
    if recipient not in donors:
        return math.nan, f"no native column: {recipient} is not among the donors"
    if math.isnan(native):
        return math.nan, f"no native result (`{donors[recipient]}` on {recipient})"
    if math.isnan(acc):
        return math.nan, "not recorded"
    if abs(native - base) < 1e-12:
        return math.nan, f"native equals base ({native:.1f}): nothing to normalise by"
    return (acc - base) / (native - base), ""


def _raw_markdown(table: pd.DataFrame) -> str:
    text = [
        "-" if math.isnan(m) else f"{m:.1f}" + (f" ± {s:.1f}" if n > 1 and not math.isnan(s) else "")
        for m, s, n in zip(table.acc, table["std"], table.seeds, strict=True)
    ]
    return _matrix(table.assign(text=text))


def _normalised_markdown(table: pd.DataFrame) -> str:
    part = table[table.column != BASE]
    return _matrix(part.assign(text=["-" if math.isnan(v) else f"{v:.2f}" for v in part.normalised]))


def _matrix(table: pd.DataFrame) -> str:
    columns = list(dict.fromkeys(table.column))
    recipients = list(dict.fromkeys(table.recipient))
    m = table.pivot(index="recipient", columns="column", values="text").reindex(index=recipients, columns=columns)
    return markdown_table(m.fillna("-").reset_index(), index=False, disable_numparse=True)


def transfer_section(results, out_dir: Path) -> list[str]:
    """Report section (Markdown lines) + CSV/Markdown files; empty without a transfer sweep or evaluation."""
    if results.evaluation is None:
        return []
    sweeps = transfer_sweeps(results)
    df = results.table()
    if not sweeps or df.empty:
        return []
    lines: list[str] = []
    files: list[str] = []
    for template, donors, by_name in sweeps:
        for key, (metric, title) in TABLES.items():
            table, what = transfer_table(df, metric, results.models, results.baseline, donors)
            if table.empty or table.acc.isna().all():
                continue
            stem = _safe(f"transfer_{template}_{key}")
            atomic_write_text(out_dir / f"{stem}.csv", table.to_csv(index=False))
            files.append(f"{stem}.csv")
            lines += [
                f"### `{template}`: {title}",
                "",
                f"Rows: the recipient model; columns: `{BASE}` = the recipient without vectors (`{results.baseline}`), "
                f"then the donor whose vectors were added (the recipient's own column is native steering). Values: "
                f"{what} in %, mean ± std over seeds."
                + (" Donor conditions recognised from their names (no sweep template recorded)." if by_name else ""),
                "",
                _raw_markdown(table),
                "",
                "Row-normalised: (acc - base) / (native - base); 1 = as good as the recipient's own vectors, "
                "0 = no better than no vectors, - = undefined (see the notes).",
                "",
                _normalised_markdown(table),
                "",
            ]
            notes = table[(table.column != BASE) & (table.note != "")]
            for (recipient, note), g in notes.groupby(["recipient", "note"], sort=False):
                lines.append(f"- {recipient} ({', '.join(g.column)}): {note}")
            lines += ([""] if len(notes) else []) + [f"Numbers and their cells: `{stem}.csv`.", ""]
    if not lines:
        return []
    head = ["## Transfer of vectors across models (paper Table 1)", ""]
    atomic_write_text(out_dir / "transfer.md", "\n".join(head + lines))
    return head + lines + ["Files: " + ", ".join(f"`{f}`" for f in files) + ", `transfer.md`.", ""]
