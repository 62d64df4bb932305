"""The generic study tables, computed from the long results table (`Results.table()`): a wide table (rows =
conditions, columns = measurement metrics, mean ± std over seeds) and the difference of every metric against
the unsteered baseline condition, with the formatting rules (rates in %)."""

from __future__ import annotations

import math

import pandas as pd

HEADLINE = {
    "generate": ["acc_lenient", "acc_boxed", "boxed_rate", "mean_len"],
    "first_token": None,  # all metrics except the count
    "eval": ["acc_boxed", "acc_lenient", "boxed_rate", "mean_len"],
}


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
    text = stats.assign(
        cell=[
            _fmt(m, s, n, is_rate(c))
            for m, s, n, c in zip(stats["mean"], stats["std"], stats["count"], stats["column"])
        ]
    )
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


MAX_METRIC_COLUMNS = 6
"""A table shows at most this many metric columns beside model and condition (more are split into further
tables), so every table fits a page."""


def per_measurement(df: pd.DataFrame, condition_order: list[str]) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(measurement, numeric means, formatted mean ± std) per measurement, in recorded order: rows (model,
    condition), columns = that measurement's metrics (the generic table cut by measurement, so it fits)."""
    out = []
    for meas in dict.fromkeys(df.measurement):
        means, text = wide_table(df[df.measurement == meas], condition_order)
        if means.empty:
            continue
        strip = {c: c[len(meas) + 1 :] for c in means.columns}
        out.append((meas, means.rename(columns=strip), text.rename(columns=strip)))
    return out


def column_chunks(table: pd.DataFrame, size: int = MAX_METRIC_COLUMNS) -> list[pd.DataFrame]:
    """The table's columns in groups of at most `size` (its index kept in each)."""
    cols = list(table.columns)
    return [table[cols[i : i + size]] for i in range(0, len(cols), size)] or [table]
