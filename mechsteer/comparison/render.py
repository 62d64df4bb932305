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


def paired_text(p: pd.DataFrame) -> pd.DataFrame:
    """The paired statistics as shown: rates in %, deltas in signed points."""
    if p.empty:
        return p
    cond = [c if c == cb else f"{c} -> {cb}" for c, cb in zip(p.condition, p.condition_b, strict=True)]
    return pd.DataFrame(
        {
            "model": p.model,
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
    cond = [c if c == cb else f"{c} -> {cb}" for c, cb in zip(m.condition, m.condition_b, strict=True)]
    return pd.DataFrame(
        {
            "model": m.model,
            "condition": cond,
            "measurement": m.measurement,
            "metric": m.metric,
            "A": [fmt_num(v) for v in m.a],
            "B": [fmt_num(v) for v in m.b],
            "delta": [fmt_num(v, "+") for v in m.delta],
        }
    )


def to_dict(d) -> dict:
    def records(df):
        return json.loads(df.to_json(orient="records"))

    return {
        "a": d.a,
        "b": d.b,
        "study": d.study,
        "seed": d.seed,
        "n_boot": d.n_boot,
        "matches": records(d.matches),
        "paired": records(d.paired),
        "metrics": records(d.metrics),
        "unmatched_a": d.unmatched_a,
        "unmatched_b": d.unmatched_b,
    }


def to_markdown(d) -> str:
    lines = [f"# diff of `{d.study}`: B - A", "", f"- A: `{d.a}`", f"- B: `{d.b}`", ""]
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
    for title, df in (
        (f"{d.study}: paired accuracy, B - A (pp; 95% bootstrap CI; exact McNemar)", paired),
        (f"{d.study}: readout metrics, mean over seeds", readouts),
    ):
        if not df.empty:
            out.append(rich_table(title, df))
    return out


__all__ = ["fmt_ci_pp", "fmt_num", "fmt_p", "fmt_pp", "metrics_text", "paired_text", "rich_table", "rich_tables"]
