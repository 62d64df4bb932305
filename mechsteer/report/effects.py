"""The report's first section: the effects (`mechsteer.comparison.effects`) as one figure per model and headline
metric, then as a table, and the text both the Markdown table and the terminal summary show.

The figure has one panel per measurement with per-problem records: each condition's rate (%) as a point with
its 95% interval, the baseline as a dashed line with its interval shaded, controls drawn as diamonds, and
conditions whose difference from the baseline is significant (exact McNemar p < 0.05, or a paired bootstrap
interval that excludes 0 where no McNemar test applies) filled, the others hollow.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.readouts.plots import plain_labels
from mechsteer.safe_text import file_stem, markdown_table

ALPHA = 0.05
"""Significance level of the filled markers."""
PANELS_PER_ROW = 3
MAX_CONDITIONS = 80
"""At most this many conditions are drawn per panel (study order; the table lists all)."""


def significant(p: float, low: float, high: float) -> bool:
    """Whether a difference is significant at ALPHA: McNemar's p where it exists, else its interval."""
    if not pd.isna(p):
        return p < ALPHA
    return not pd.isna(low) and not pd.isna(high) and (low > 0 or high < 0)


def pct(v: float) -> str:
    return "-" if pd.isna(v) else f"{v * 100:.1f}"


def rate_text(row) -> str:
    """`82.8 [72.0, 90.2]`, with `± std (k seeds)` for a mean over seeds."""
    text = f"{pct(row.value)} [{pct(row.low)}, {pct(row.high)}]"
    if row.seeds > 1 and not pd.isna(row.seed_std):
        text += f" ± {row.seed_std * 100:.1f} ({row.seeds} seeds)"
    return text


def delta_text(delta: float, low: float, high: float) -> str:
    """`+46.9 [32.8, 60.9]` in percentage points, `-` when there is no comparison."""
    if pd.isna(delta):
        return "-"
    return f"{delta * 100:+.1f} [{low * 100:.1f}, {high * 100:.1f}]"


def p_text(p: float, delta: float = 0.0, *, short: bool = False) -> str:
    """McNemar's p (3 decimals; `short`: below 0.001 as `<0.001`, else 2 significant digits), `n/a` where the
    scores are averages, `-` without a comparison."""
    if pd.isna(delta):
        return "-"
    if pd.isna(p):
        return "n/a"
    if p < 0.001:
        return "<0.001" if short else f"{p:.2g}"
    return f"{p:.3f}"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on and text not in ("-", "n/a") else text


def effects_table(eff: pd.DataFrame) -> pd.DataFrame:
    """The effects of one model, measurement and metric as shown: rates in %, differences in points (bold:
    p < 0.05); a `control` column only where the conditions have different controls (one shared control is
    named above the table)."""
    metric = eff.metric.iloc[0]
    controls = set(eff.control.dropna())
    cols = {
        "model": eff.model,
        "condition": eff.condition,
        "role": eff.role.replace("", "-"),
        f"{metric} % [95% CI]": [rate_text(r) for r in eff.itertuples()],
        "vs baseline, pp [95% CI]": [
            _bold(delta_text(r.vs_baseline, r.vs_baseline_low, r.vs_baseline_high), _sig(r, "baseline"))
            for r in eff.itertuples()
        ],
        "p": [p_text(r.p_baseline, r.vs_baseline) for r in eff.itertuples()],
    }
    if controls:
        if len(controls) > 1:
            cols["control"] = eff.control.fillna("-")
        cols["vs control, pp [95% CI]"] = [
            _bold(delta_text(r.vs_control, r.vs_control_low, r.vs_control_high), _sig(r, "control"))
            for r in eff.itertuples()
        ]
        cols["p (control)"] = [p_text(r.p_control, r.vs_control) for r in eff.itertuples()]
    cols["n"] = eff.n
    return pd.DataFrame(cols)


def _sig(row, which: str) -> bool:
    return significant(getattr(row, f"p_{which}"), getattr(row, f"vs_{which}_low"), getattr(row, f"vs_{which}_high"))


@plain_labels
def effects_figure(eff: pd.DataFrame, *, title: str = ""):
    """A matplotlib Figure of one model's effects (see the module docstring); not registered with pyplot, so
    it can be returned to a notebook or saved without global state."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    measurements = list(dict.fromkeys(eff.measurement))
    conditions = list(dict.fromkeys(eff.condition))[:MAX_CONDITIONS]
    ncols = min(PANELS_PER_ROW, len(measurements))
    nrows = math.ceil(len(measurements) / ncols)
    height = min(1.4 + 0.27 * len(conditions), 30.0)
    fig = Figure(figsize=(3.6 * ncols + 1.6, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    ypos = {c: i for i, c in enumerate(conditions)}
    blue, orange, grey = "#1f77b4", "#d95f02", "#555555"
    for ax, meas in zip(axes.flat, measurements, strict=False):
        part = eff[(eff.measurement == meas) & eff.condition.isin(conditions)]
        for r in part.itertuples():
            y = ypos[r.condition]
            if r.role == "baseline":
                ax.axvline(r.value * 100, color=grey, linestyle="--", linewidth=1, zorder=1)
                ax.axvspan(r.low * 100, r.high * 100, color=grey, alpha=0.12, zorder=0)
                color, marker, filled = grey, "s", True
            else:
                color, marker = (orange, "D") if r.role == "control" else (blue, "o")
                filled = _sig(r, "baseline")
            ax.errorbar(
                r.value * 100,
                y,
                xerr=[[max(r.value - r.low, 0) * 100], [max(r.high - r.value, 0) * 100]],
                fmt=marker,
                color=color,
                markerfacecolor=color if filled else "white",
                markersize=6,
                capsize=2,
                zorder=3,
            )
        ax.set_title(meas, fontsize=10)
        ax.set_xlim(-2, 102)
        ax.set_xlabel(f"{eff.metric.iloc[0]} (%)")
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(measurements) :]:
        ax.set_visible(False)
    axes[0][0].set_yticks(range(len(conditions)), conditions, fontsize=9)
    axes[0][0].set_ylim(len(conditions) - 0.5, -0.5)
    handles = [
        Line2D([], [], color=grey, marker="s", linestyle="--", label="baseline (band: its 95% CI)"),
        Line2D([], [], color=orange, marker="D", linestyle="", label="control"),
        Line2D([], [], color=blue, marker="o", linestyle="", label=f"differs from baseline (p < {ALPHA})"),
        Line2D([], [], color=blue, marker="o", markerfacecolor="white", linestyle="", label="not significant"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def write_figure(eff: pd.DataFrame, path: Path, *, title: str = "") -> Path:
    """Save `effects_figure` as a PNG (written atomically)."""
    from mechsteer.atomic import atomic_path

    fig = effects_figure(eff, title=title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return Path(path)


def effects_section(results, out_dir: Path) -> list[str]:
    """Markdown lines of the effects section (figures first, then one table per model and metric) and
    `effects.csv`; empty when no measurement has per-problem records."""
    eff = results.effects()
    if eff.empty:
        return []
    atomic_write_text(out_dir / "effects.csv", eff.to_csv(index=False))
    controls = sorted({c for c in eff.control.dropna()})
    baseline = results.baseline
    lines = [
        "## Effects",
        "",
        f"Each condition against the unsteered baseline `{baseline}`"
        + (f" and its control ({', '.join(f'`{c}`' for c in controls)})" if controls else "")
        + ", on the problems both answered. Rates in % with a 95% interval (Wilson for one graded answer per "
        "problem; a bootstrap over problems for averages over samples or seeds; ± the std over seeds); "
        "differences in percentage points with a paired bootstrap 95% interval (10,000 resamples, seed 0) and "
        "the exact McNemar p (`n/a` where scores are averages); bold: p < 0.05. Figures: filled markers "
        "differ from the baseline at p < 0.05, hollow ones do not.",
        "",
    ]
    tables = []
    for (model, metric), part in eff.groupby(["model", "metric"], sort=False):
        stem = file_stem(f"effects_{model}_{metric}")
        write_figure(part, out_dir / f"{stem}.png", title=f"{results.study}: {model}, {metric} (95% CI)")
        n_cond = part.condition.nunique()
        more = f" (the first {MAX_CONDITIONS} of {n_cond} conditions)" if n_cond > MAX_CONDITIONS else ""
        lines += [f"![{model}: {metric} per condition{more}]({stem}.png)", ""]
        tables += [f"### {model}: {metric}", ""]
        for meas, rows in part.groupby("measurement", sort=False):  # one table per measurement, under its name
            shared = set(rows.control.dropna())
            note = [f"Control: `{shared.pop()}`.", ""] if len(shared) == 1 else []
            tables += [f"#### {meas}", "", *note, markdown_table(effects_table(rows), index=False), ""]
    return lines + tables + ["File: `effects.csv` (every number above, with the cells).", ""]


__all__ = ["effects_figure", "effects_section", "effects_table", "write_figure"]
