"""How a `DiffResult` is shown: Markdown (diff.md), CSV, JSON and rich tables for the terminal. Numbers only
formatted here; every name is user text (escaped for rich, `|`-escaped in Markdown by `markdown_table`)."""

from __future__ import annotations

import json

import pandas as pd

from mechsteer.safe_text import markdown_table


def fmt_num(v: float, sign: str = "") -> str:
    """A metric value with 4 significant digits, `-` for a missing one."""
    return "-" if pd.isna(v) else f"{v:{sign}.4g}"


def fmt_p(p) -> str:
    """A p-value with 3 significant digits, `-` where none was computed."""
    return "-" if p is None or pd.isna(p) else f"{p:.3g}"


def fmt_pp(v: float) -> str:
    """A difference of rates in signed percentage points."""
    return "-" if pd.isna(v) else f"{v * 100:+.1f}"


def fmt_ci_pp(lo: float, hi: float) -> str:
    """An interval of a difference of rates in signed percentage points."""
    return "-" if pd.isna(lo) or pd.isna(hi) else f"[{lo * 100:+.1f}, {hi * 100:+.1f}]"


def pair_names(a: pd.Series, b: pd.Series) -> list[str]:
    """`x` where A's and B's names agree, else `x -> y` (a model or condition matched across the two)."""
    return [x if x == y else f"{x} -> {y}" for x, y in zip(a, b, strict=True)]


def paired_text(p: pd.DataFrame) -> pd.DataFrame:
    """The paired statistics as shown: rates in %, deltas in signed points."""
    if p.empty:
        return p
    cond = pair_names(p.condition, p.condition_b)
    return pd.DataFrame(
        {
            "model": pair_names(p.model, p.model_b),
            "condition": cond,
            "measurement": p.measurement,
            "metric": p.metric,
            "n": p.n_shared,
            "A %": [f"{v * 100:.1f}" for v in p.acc_a],
            "B %": [f"{v * 100:.1f}" for v in p.acc_b],
            "delta pp": [fmt_pp(v) for v in p.delta],
            "95% CI": [fmt_ci_pp(lo, hi) for lo, hi in zip(p.ci_low, p.ci_high, strict=True)],
            "A only / B only": [
                f"{int(x)} / {int(y)}" if not pd.isna(x) else "-"
                for x, y in zip(p.right_only_a, p.right_only_b, strict=True)
            ],
            "McNemar p": [fmt_p(v) for v in p.p_mcnemar],
            "cells A / B": [f"{x} / {y}" for x, y in zip(p.cells_a, p.cells_b, strict=True)],
        }
    )


def metrics_text(m: pd.DataFrame) -> pd.DataFrame:
    """The metric deltas as shown."""
    if m.empty:
        return m
    cond = pair_names(m.condition, m.condition_b)
    return pd.DataFrame(
        {
            "model": pair_names(m.model, m.model_b),
            "condition": cond,
            "measurement": m.measurement,
            "metric": m.metric,
            "A": [fmt_num(v) for v in m.a],
            "B": [fmt_num(v) for v in m.b],
            "delta": [fmt_num(v, "+") for v in m.delta],
        }
    )


def to_dict(d) -> dict:
    """A DiffResult as JSON-able data (diff.json): the folders, the compared models, every table as records."""

    def records(df):
        return json.loads(df.to_json(orient="records"))

    return {
        "a": d.a,
        "b": d.b,
        "study": d.study,
        "models": list(d.models) if d.models else None,
        "model_ids": d.model_ids,
        "seed": d.seed,
        "n_boot": d.n_boot,
        "matches": records(d.matches),
        "paired": records(d.paired),
        "metrics": records(d.metrics),
        "unmatched_a": d.unmatched_a,
        "unmatched_b": d.unmatched_b,
    }


def compared(d) -> str:
    """What is subtracted from what: `B - A`, or `model B - model A` inside one folder."""
    return f"model {d.models[1]} - model {d.models[0]}" if d.models else "B - A"


def side_lines(d) -> list[str]:
    """One line per side: its folder (and model, inside one folder) with the models' ids and depths."""

    def models_text(ids: dict[str, str]) -> str:
        return "; ".join(f"`{m}` = {desc}" for m, desc in ids.items())

    out = []
    for side, folder in (("a", d.a), ("b", d.b)):
        ids = d.model_ids.get(side) or {}
        label = side.upper()
        if d.models:
            m = d.models[0 if side == "a" else 1]
            out.append(f"- {label}: model `{m}` ({ids.get(m, '?')}) of `{folder}`")
        else:
            out.append(f"- {label}: `{folder}`" + (f" (models: {models_text(ids)})" if ids else ""))
    return out


def to_markdown(d) -> str:
    """diff.md: what is compared, the paired statistics and the metric deltas as Markdown tables."""
    lines = [f"# diff of `{d.study}`: {compared(d)}", "", *side_lines(d), ""]
    if not d.paired.empty:
        lines += [
            "## Paired accuracy on shared problems",
            "",
            f"delta = B - A in percentage points; 95% paired bootstrap CI ({d.n_boot} resamples, "
            f"seed {d.seed}); exact McNemar p on the discordant problems.",
            "",
            markdown_table(paired_text(d.paired), index=False, disable_numparse=True),
            "",
        ]
    metrics = markdown_table(metrics_text(d.metrics), index=False, disable_numparse=True)
    lines += ["## Metrics (mean over seeds)", "", metrics, ""]
    if d.unmatched_a or d.unmatched_b:
        lines += [f"Unmatched conditions: A {d.unmatched_a or '-'}; B {d.unmatched_b or '-'}.", ""]
    return "\n".join(lines)


def rich_table(title: str, df: pd.DataFrame, left: tuple[str, ...] = ("model", "condition", "measurement", "metric")):
    """A rich Table of a text DataFrame; every title, header and value is escaped (names are user text, never
    rich markup)."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    for col in df.columns:
        t.add_column(escape(str(col)), justify="left" if col in left else "right")
    for row in df.itertuples(index=False):
        t.add_row(*[escape(str(v)) for v in row])
    return t


def rich_tables(d) -> list:
    """rich Tables for the terminal: the paired statistics, then the readout metrics side by side (the cells'
    hash prefixes and the evaluation metrics' full list are in the files `DiffResult.write` makes)."""
    out = []
    paired = paired_text(d.paired)
    paired = paired.drop(columns=["cells A / B"]) if not paired.empty else paired
    readouts = metrics_text(d.metrics[d.metrics.kind != "eval"])
    if d.models:  # two models of one folder: the title names them, every row would repeat them
        paired, readouts = (df.drop(columns=["model"]) if not df.empty else df for df in (paired, readouts))
    for name, df in (
        (f"{d.study}: paired accuracy, {compared(d)} (pp; 95% bootstrap CI; exact McNemar)", paired),
        (f"{d.study}: readout metrics, mean over seeds", readouts),
    ):
        if not df.empty:
            out.append(rich_table(name, df))
    return out


__all__ = [
    "compared",
    "fmt_ci_pp",
    "fmt_num",
    "fmt_p",
    "fmt_pp",
    "metrics_text",
    "pair_names",
    "paired_text",
    "rich_table",
    "rich_tables",
    "side_lines",
]
