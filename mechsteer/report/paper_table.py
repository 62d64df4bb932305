"""The paper-shaped benchmark table: rows = conditions (per model), columns = benchmarks + Average.

Each cell is mean ± std over evaluation seeds (pandas std, ddof 1; a single seed shows the mean only), in
percent. `Average` is the paper's six-benchmark average (AIME24, AIME25, AMC23, MATH500, Minerva,
OlympiadBench), computed per seed and then averaged over seeds, and only for seeds where all six are present
(it is never an average of whatever subset happened to run). Benchmarks use the recorded per-task metric:
avg@k where the protocol samples k > 1 completions (AIME24/AIME25/AMC23 under `paper`), else single-sample
accuracy, exactly the numbers the paper's table uses.

With `evaluation.reference: <condition>` the table gains the paper's two normalised columns (its accuracy
table, section 4.1), computed per model on the row's `Average` (or, without the six benchmarks, on the mean of
the benchmark columns shown): `Relative (%)` = 100 x / x_ref and `Relative Improvement (%)` =
100 (x - x_base) / (x_ref - x_base), where ref is the reference condition (the paper: full fine-tuning) and base
the study's unsteered baseline condition.

Two tables: `acc_boxed` (the paper's metric: last \\boxed{} verified with math-verify, no box = wrong) and
`acc_lenient` (boxed, or else the last number), written as CSV and Markdown into the report folder and
returned as a section of report.md.
"""

from __future__ import annotations

import math

import pandas as pd

from mechsteer.safe_text import markdown_table
from mechsteer.spec.evaluation import KNOWN_TASKS, PAPER_AVERAGE_TASKS

LABELS = {
    "aime24": "AIME24",
    "aime25": "AIME25",
    "amc23": "AMC23",
    "math500": "MATH500",
    "minerva_math": "Minerva",
    "olympiadbench": "OlympiadBench",
    "gsm8k": "GSM8K",
    "mini": "mini",
}
AVERAGE = "Average"
TABLES = {
    "boxed": (
        "acc_boxed",
        "Boxed accuracy (the paper's metric: last \\boxed{} verified with math-verify; no box = wrong)",
    ),
    "lenient": ("acc_lenient", "Lenient accuracy (boxed, or else the last number in the completion)"),
}


def per_seed(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows (model, condition, seed), columns = tasks (+ Average when the six paper tasks are all present).

    `df` has the columns of `Results.table()` restricted to eval cells (`measurement` = task)."""
    d = df[(df.kind == "eval") & (df.metric == metric)]
    if d.empty:
        return pd.DataFrame()
    wide = d.pivot_table(index=["model", "condition", "seed"], columns="measurement", values="value", aggfunc="first")
    if all(t in wide.columns for t in PAPER_AVERAGE_TASKS):
        six = wide[list(PAPER_AVERAGE_TASKS)]
        wide[AVERAGE] = six.mean(axis=1).where(six.notna().all(axis=1))
    return wide


def seed_average(wide: pd.DataFrame) -> tuple[pd.Series, str]:
    """One number per (model, condition, seed) of a `per_seed` table, and what it is: the paper's six-benchmark
    `Average` when `per_seed` computed it, else the mean of the task columns present (only for seeds where every
    one of them is present, as for the Average). Used where a table shows one accuracy per row (Table 1)."""
    if AVERAGE in wide.columns:
        return wide[AVERAGE], "the six-benchmark Average"
    names = [LABELS.get(t, t) for t in wide.columns]
    what = names[0] if len(names) == 1 else "the mean of " + ", ".join(names)
    return wide.mean(axis=1).where(wide.notna().all(axis=1)), what


def summarise(
    wide: pd.DataFrame, task_order: list[str], condition_order: list[str], model_order: list[str] | None = None
) -> pd.DataFrame:
    """Mean, std and seed count per (model, condition) and column, in the study's model/task/condition order.

    Columns: a MultiIndex (column, stat) with stat in mean/std/seeds; NaN values (e.g. no Average for a
    seed) are left out of the statistics."""
    if wide.empty:
        return pd.DataFrame()
    g = wide.groupby(level=["model", "condition"], sort=False)
    stats = pd.concat({"mean": g.mean(), "std": g.std(ddof=1), "seeds": g.count()}, axis=1)
    stats = stats.swaplevel(0, 1, axis=1)
    cols = [t for t in task_order if t in wide.columns] + [c for c in wide.columns if c not in task_order]
    if AVERAGE in cols:
        cols = [c for c in cols if c != AVERAGE] + [AVERAGE]
    stats = stats[[(c, s) for c in cols for s in ("mean", "std", "seeds")]]
    rank = {c: i for i, c in enumerate(condition_order)}
    mrank = {m: i for i, m in enumerate(model_order or [])}
    order = sorted(
        range(len(stats)),
        key=lambda i: (
            mrank.get(stats.index[i][0], len(mrank)),
            stats.index[i][0],
            rank.get(stats.index[i][1], len(rank)),
        ),
    )
    return stats.iloc[order]


def format_cell(mean: float, std: float, seeds: float) -> str:
    """A table cell in percent, `mean ± std` when more than one seed was evaluated; `-` when there is no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean * 100:.1f}"
    if seeds and seeds > 1 and not math.isnan(std):
        text += f" ± {std * 100:.1f}"
    return text


RELATIVE, IMPROVEMENT = "Relative (%)", "Relative Improvement (%)"


def relative_columns(stats: pd.DataFrame, baseline: str | None, reference: str) -> pd.DataFrame:
    """Rows as `stats`, columns Relative (%) and Relative Improvement (%) (see the module docstring); NaN where
    the model has no reference (or baseline) row or a denominator is 0."""
    cols = list(dict.fromkeys(c for c, _ in stats.columns))
    if AVERAGE in cols:
        x = stats[(AVERAGE, "mean")].astype(float)
    else:
        x = stats[[(c, "mean") for c in cols]].astype(float).mean(axis=1)
    out = pd.DataFrame(index=stats.index, columns=[RELATIVE, IMPROVEMENT], dtype=float)
    for (model, condition), value in x.items():
        ref = x.get((model, reference), math.nan)
        base = x.get((model, baseline), math.nan) if baseline else math.nan
        out.loc[(model, condition), RELATIVE] = 100 * value / ref if ref else math.nan
        out.loc[(model, condition), IMPROVEMENT] = 100 * (value - base) / (ref - base) if ref != base else math.nan
    return out


def to_markdown(stats: pd.DataFrame, relative: pd.DataFrame | None = None) -> str:
    """The table (with the relative columns when given) as Markdown, one row per model and condition."""
    cols = list(dict.fromkeys(c for c, _ in stats.columns))
    rows = []
    for (model, condition), row in stats.iterrows():
        extra = (
            {}
            if relative is None
            else {k: ("-" if pd.isna(v) else f"{v:.1f}") for k, v in relative.loc[(model, condition)].items()}
        )
        rows.append(
            {
                "model": model,
                "condition": condition,
                **{LABELS.get(c, c): format_cell(row[(c, "mean")], row[(c, "std")], row[(c, "seeds")]) for c in cols},
                **extra,
            }
        )
    return markdown_table(pd.DataFrame(rows), index=False, disable_numparse=True)


def to_csv(stats: pd.DataFrame, relative: pd.DataFrame | None = None) -> str:
    """The table as CSV: each benchmark's mean, std and seed count as columns, plus the relative columns."""
    flat = stats.copy()
    flat.columns = [c if s == "mean" else f"{c}_{s}" for c, s in stats.columns]
    if relative is not None:
        flat = flat.join(relative)
    return flat.reset_index().to_csv(index=False)


def paper_table_section(results, out_dir) -> list[str]:
    """Report section (Markdown lines) + CSV/Markdown files; empty when the study has no evaluation."""
    from mechsteer.atomic import atomic_write_text

    ev = results.evaluation
    if ev is None:
        return []
    df = results.table()
    if df.empty:
        return []
    task_order = [t for t in ev["tasks"] if t in KNOWN_TASKS]
    lines = [
        "## Benchmark accuracy (paper layout)",
        "",
        f"Protocol `{ev['protocol']}`; % as mean ± std over seeds {ev['seeds']}. Multi-sample tasks show avg@k "
        "(the per-problem mean over its samples); `Average` is the six-benchmark average computed per seed, "
        "shown only where all six benchmarks ran.",
        "",
    ]
    reference = ev.get("reference")
    if reference:
        lines += [
            f"`{RELATIVE}` = 100 x / x(`{reference}`), `{IMPROVEMENT}` = 100 (x - x(`{results.baseline}`)) / "
            f"(x(`{reference}`) - x(`{results.baseline}`)), on "
            + (
                "the Average."
                if all(t in task_order for t in PAPER_AVERAGE_TASKS)
                else "the mean of the benchmark columns."
            ),
            "",
        ]
    markdown = []
    for key, (metric, title) in TABLES.items():
        stats = summarise(per_seed(df, metric), task_order, results.conditions, results.models)
        if stats.empty:
            continue
        relative = relative_columns(stats, results.baseline, reference) if reference else None
        atomic_write_text(out_dir / f"paper_table_{key}.csv", to_csv(stats, relative))
        markdown += [f"### {title}", "", to_markdown(stats, relative), ""]
    if not markdown:
        return []
    atomic_write_text(out_dir / "paper_table.md", "\n".join(lines + markdown))
    return lines + markdown + ["Files: `paper_table_boxed.csv`, `paper_table_lenient.csv`, `paper_table.md`.", ""]
