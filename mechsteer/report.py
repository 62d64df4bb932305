"""Study tables from recorded cells: a long results table (one row per model x condition x measurement x
seed x metric), a wide table (rows = conditions, columns = measurement metrics, mean +- std over seeds),
and the difference of every metric against the unsteered baseline condition, as CSV and Markdown, plus a
report.md that links them. Tables are views of the cell records, never the only copy."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mechsteer.engine.plan import Plan
from mechsteer.atomic import atomic_write_text
from mechsteer.engine.store import CellStore

HEADLINE = {
    "generate": ["acc_lenient", "acc_boxed", "boxed_rate", "mean_len"],
    "first_token": None,  # all metrics except the count
    "eval": ["acc_boxed", "acc_lenient", "boxed_rate", "mean_len"],
}


def long_table(plan: Plan) -> pd.DataFrame:
    store = CellStore(plan.cells_dir)
    rows = []
    for c in plan.cells:
        if not store.is_done(c.hash):
            continue
        for metric, value in store.read_metrics(c.hash).items():
            if not isinstance(value, (int, float)):
                continue
            rows.append({"model": c.model, "condition": c.condition, "measurement": c.measurement.id.split(":", 1)[1],
                         "kind": c.measurement.kind, "seed": c.seed, "metric": metric, "value": float(value),
                         "cell": c.short})
    return pd.DataFrame(rows, columns=["model", "condition", "measurement", "kind", "seed", "metric", "value", "cell"])


def baseline_condition(plan: Plan) -> str | None:
    """The first condition without interventions (the shared unsteered baseline)."""
    for name, ivs in plan.loaded.spec.conditions.items():
        if not ivs:
            return name
    return None


def is_rate(metric: str) -> bool:
    """Metrics in [0, 1] shown as percentages: accuracies, rates, probabilities, shares."""
    name = metric.split("/")[-1]
    return name.startswith(("acc", "p(", "top1==", "share")) or name.endswith("_rate") or name == "accuracy"


def _fmt(mean: float, std: float, n: int, rate: bool) -> str:
    if math.isnan(mean):
        return "-"
    scale, digits = (100.0, 1) if rate else (1.0, 2)
    s = f"{mean * scale:.{digits}f}"
    if n > 1 and not math.isnan(std):
        s += f" ± {std * scale:.{digits}f}"
    return s


def _headline(df: pd.DataFrame) -> pd.DataFrame:
    keep = []
    for kind, metrics in HEADLINE.items():
        part = df[df.kind == kind]
        keep.append(part if metrics is None else part[part.metric.isin(metrics)])
    other = df[~df.kind.isin(HEADLINE)]
    keep = [k[k.metric != "n"] for k in keep]
    return pd.concat(keep + [other]) if keep else df


def wide_table(df: pd.DataFrame, condition_order: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric means, formatted mean ± std) with rows (model, condition), columns `measurement/metric`."""
    d = _headline(df)
    if d.empty:
        return pd.DataFrame(), pd.DataFrame()
    d = d.assign(column=d.measurement + "/" + d.metric)
    g = d.groupby(["model", "condition", "column"], sort=False)["value"]
    stats = g.agg(["mean", "std", "count"]).reset_index()
    means = stats.pivot(index=["model", "condition"], columns="column", values="mean")
    text = stats.assign(cell=[_fmt(m, s, n, is_rate(c)) for m, s, n, c in
                              zip(stats["mean"], stats["std"], stats["count"], stats["column"])])
    text = text.pivot(index=["model", "condition"], columns="column", values="cell")
    order = {c: i for i, c in enumerate(condition_order)}
    key = lambda idx: idx.map(lambda v: order.get(v, len(order)) if isinstance(v, str) and v in order else v)  # noqa: E731
    cols = list(dict.fromkeys(d.column))
    return means.sort_index(key=key)[cols], text.sort_index(key=key)[cols]


def delta_table(means: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each condition's metric minus the baseline condition's, per model."""
    parts = []
    for model, block in means.groupby(level="model", sort=False):
        if (model, baseline) not in block.index:
            continue
        parts.append(block - block.loc[(model, baseline)])
    return pd.concat(parts) if parts else pd.DataFrame()


def write_report(plan: Plan) -> Path:
    out = plan.output_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = long_table(plan)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    means, text = wide_table(df, list(plan.loaded.spec.conditions))
    lines = [f"# {plan.study}" + (f" (profile {plan.profile})" if plan.profile else ""), ""]
    if plan.loaded.spec.description:
        lines += [plan.loaded.spec.description.strip(), ""]
    n_done = df.cell.nunique() if not df.empty else 0
    lines += [f"{n_done} of {len(plan.unique_cells())} cells recorded. Values are mean ± std over seeds; rates in %.",
              "", "## Results", ""]
    if not text.empty:
        atomic_write_text(out / "table.csv", means.to_csv())
        lines += [text.reset_index().to_markdown(index=False), ""]
        base = baseline_condition(plan)
        if base is not None:
            delta = delta_table(means, base)
            if not delta.empty:
                atomic_write_text(out / "delta.csv", delta.to_csv())
                shown = delta.copy().astype(object)
                for col in delta.columns:
                    rate = is_rate(col)
                    shown[col] = [("-" if pd.isna(v) else (f"{v * 100:+.1f}" if rate else f"{v:+.2f}")) for v in delta[col]]
                lines += [f"## Difference from the baseline condition `{base}`", "",
                          "(percentage points for rates)", "", shown.reset_index().to_markdown(index=False), ""]
    extra = _extra_sections(plan)
    lines += extra
    lines += ["## Files", "", "- `results.csv`: one row per model x condition x measurement x seed x metric",
              "- `table.csv`, `delta.csv`: the tables above as numbers", f"- cells: `{plan.cells_dir}`", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_text(out / "table.md", "\n".join(lines[: lines.index("## Files")]))
    return out / "report.md"


def _extra_sections(plan: Plan) -> list[str]:
    """Sections contributed by measurement kinds (e.g. the paper-shaped benchmark table)."""
    import mechsteer.eval.report_table  # noqa: F401 - registers the paper-shaped table even when all cells are cached

    out: list[str] = []
    for fn in REPORT_SECTIONS:
        out += fn(plan)
    return out


REPORT_SECTIONS: list = []
"""Functions `plan -> list[str]` of Markdown lines; measurement modules append theirs."""
