"""Composition of single-layer vectors (paper Appendix D, Figure 13), from recorded cells: the relative
improvement of every pair of layers over its better single layer, as a fraction of the way to the all-layer
result,

    RI(i, j) = (acc(i, j) - max(acc_i, acc_j)) / (acc_all - max(acc_i, acc_j)),

where acc_i is the accuracy of the single-layer vector of layer i (a one-variable `layers` sweep such as
`single_{layer}`, same model and measurement), acc_all that of the study's `evaluation.reference` condition
(the all-layer vector), and all accuracies are means over seeds. The diagonal i == j is the single vector
itself (RI 0 by definition), as in the paper. RI = 1: the pair reaches the all-layer result; RI < 0: it is
worse than its better part alone. Where the denominator is <= 0 (a single layer already at or above the
all-layer result) RI is undefined: NaN with a note, never a division by zero.

The heat-map is the paper's: a diverging map centred at 0, capped at 1 (values above 1 are drawn as 1), cells
with RI > 0.99 marked with an x. Without a reference condition or a single-layer sweep, the pair sweep is drawn
as the difference from the baseline condition instead, and the caption says why.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.safe_text import markdown_table

RI_CAP = 1.0
"""Heat-map colours stop here (the paper's cap); larger values are drawn as the cap."""
REACHES = 0.99
"""RI above this marks the pair as reaching the all-layer result (an x in the heat-map)."""
COLUMNS = [
    "i",
    "j",
    "condition",
    "acc",
    "acc_i",
    "acc_j",
    "best_single",
    "all_layer",
    "ri",
    "ri_plot",
    "reaches_all_layer",
    "note",
    "cells",
    "cells_i",
    "cells_j",
    "cells_all_layer",
]


def relative_improvement(acc_pair: float, acc_i: float, acc_j: float, steer: float) -> tuple[float, str]:
    """(RI, why it is NaN or ""): see the module docstring."""
    if any(isinstance(v, float) and math.isnan(v) for v in (acc_pair, acc_i, acc_j, steer)):
        return math.nan, "a number it needs is missing"
    best = max(acc_i, acc_j)
    denom = steer - best
    if denom <= 0:
        return (
            math.nan,
            f"undefined: the better single layer ({best:.1f}) is at or above the all-layer result ({steer:.1f})",
        )
    return (acc_pair - best) / denom, ""


def composition_grid(
    pairs: pd.DataFrame, numeric: list[str], singles: dict[int, tuple[float, str, str]], steer: tuple[float, str]
) -> pd.DataFrame:
    """The RI grid in long form (columns `COLUMNS`, accuracies in %), one row per recorded pair plus the
    diagonal. `pairs`: the sweep table (columns numeric[0], numeric[1], condition, mean, cells); `singles`:
    layer -> (mean, condition, cells) of the single-layer vectors; `steer`: (mean, cells) of the all-layer
    condition. A recorded pair (l, l) is the single vector alone; the single-layer sweep's result is used for
    the diagonal where there is one."""
    a, b = numeric
    singles = dict(singles)
    for r in pairs.itertuples(index=False):
        i, j = int(getattr(r, a)), int(getattr(r, b))
        if i == j and i not in singles:
            singles[i] = (r.mean, r.condition, r.cells)
    rows = []
    layers = sorted(set(pairs[a].astype(int)) | set(pairs[b].astype(int)))
    entries = [(layer, layer, *singles[layer]) for layer in layers if layer in singles]
    entries += [
        (int(getattr(r, a)), int(getattr(r, b)), r.mean, r.condition, r.cells)
        for r in pairs.itertuples(index=False)
        if getattr(r, a) != getattr(r, b)
    ]
    nan = (math.nan, "", "")
    for i, j, acc, cond, cells in entries:
        si, sj = singles.get(i, nan), singles.get(j, nan)
        ri, note = relative_improvement(acc, si[0], sj[0], steer[0])
        missing = [str(x) for x in dict.fromkeys((i, j)) if x not in singles]
        if missing:
            note = "no single-layer result for layer " + ", ".join(missing)
        rows.append(
            {
                "i": i,
                "j": j,
                "condition": cond,
                "acc": acc,
                "acc_i": si[0],
                "acc_j": sj[0],
                "best_single": max(si[0], sj[0]) if not missing else math.nan,
                "all_layer": steer[0],
                "ri": ri,
                "ri_plot": min(ri, RI_CAP) if not math.isnan(ri) else math.nan,
                "reaches_all_layer": bool(ri > REACHES),
                "note": note,
                "cells": cells,
                "cells_i": si[2],
                "cells_j": sj[2],
                "cells_all_layer": steer[1],
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["i", "j"]).reset_index(drop=True)


def grid_markdown(grid: pd.DataFrame, numeric: list[str]) -> str:
    """The RI grid as a Markdown matrix (rows numeric[0], columns numeric[1]): RI to 2 decimals (not clipped),
    `x` where RI > 0.99, `-` where undefined or not recorded."""
    shown = grid.assign(
        text=[
            "-" if math.isnan(v) else f"{v:.2f}" + (" x" if hit else "")
            for v, hit in zip(grid.ri, grid.reaches_all_layer, strict=True)
        ]
    )
    cols = sorted(set(grid.j))
    matrix = shown.pivot(index="i", columns="j", values="text").reindex(columns=cols).fillna("")
    matrix.index.name = f"{numeric[0]} \\ {numeric[1]}"
    return markdown_table(matrix.reset_index(), index=False, disable_numparse=True)


def _pick_singles(single_tables: list[tuple[str, pd.DataFrame, str]]) -> tuple[str, pd.DataFrame, str] | None:
    """The single-layer sweep to take acc_i from: the one named `single...` when there are several."""
    if not single_tables:
        return None
    return next((t for t in single_tables if t[0].startswith("single")), single_tables[0])


def pair_figure(
    table: pd.DataFrame,
    numeric: list[str],
    *,
    others: pd.DataFrame,
    baseline: str | None,
    reference: str | None,
    single_tables: list[tuple[str, pd.DataFrame, str]],
    out_dir: Path,
    stem: str,
    title: str,
) -> tuple[str, list[str]]:
    """Draw a pair sweep: the RI heat-map (plus `<stem>_ri.csv` and a Markdown matrix) when the study has a
    reference condition recorded here and a single-layer sweep, else the difference from the baseline.
    `others`: this model's and measurement's non-sweep rows of `Results.table()` (one metric);
    `single_tables`: (label, sweep table with columns layer variable/condition/mean/cells, the layer
    variable) of the single-layer sweeps. Returns (caption sentence, extra Markdown lines)."""
    from mechsteer.readouts import plots

    why = None
    ref_rows = others[others.condition == reference] if reference else others.iloc[0:0]
    chosen = _pick_singles(single_tables)
    diagonal = table[table[numeric[0]] == table[numeric[1]]]
    if not reference:
        why = "the study sets no `evaluation.reference` (the all-layer condition it needs)"
    elif ref_rows.empty:
        why = f"the reference condition `{reference}` has no recorded result for this model and measurement"
    elif chosen is None and diagonal.empty:
        why = "there is no single-layer sweep (e.g. `single_{layer}`) for this model and measurement"
    if why is not None:
        ref = others[others.condition == baseline].value.mean() * 100 if baseline in set(others.condition) else 0.0
        grid = table.assign(delta=table["mean"] - ref).pivot(index=numeric[0], columns=numeric[1], values="delta")
        plots.heatmap(
            grid,
            out_dir / f"{stem}.png",
            title=f"{title}: minus {baseline or 'nothing'} (pp)",
            markers=[(i, i) for i in grid.index if i in grid.columns],
        )
        return (
            f"colours: difference from the baseline `{baseline}`, centred at 0 (relative improvement not shown: {why})",
            [],
        )
    singles = {}
    if chosen is not None:
        _, stable, var = chosen
        singles = {int(r[var]): (r["mean"], r["condition"], r["cells"]) for _, r in stable.iterrows()}
    steer = (ref_rows.value.mean() * 100, " ".join(sorted(set(ref_rows.cell))))
    grid = composition_grid(table, numeric, singles, steer)
    atomic_write_text(out_dir / f"{stem}_ri.csv", grid.to_csv(index=False))
    matrix = grid.pivot(index="i", columns="j", values="ri_plot")
    matrix.index.name, matrix.columns.name = numeric
    low = grid.ri_plot.min()
    plots.heatmap(
        matrix,
        out_dir / f"{stem}.png",
        title=f"{title}: relative improvement",
        markers=[(i, i) for i in matrix.index if i in matrix.columns],
        crosses=[(r.i, r.j) for r in grid.itertuples() if r.reaches_all_layer],
        limits=(min(-RI_CAP, low) if not math.isnan(low) else -RI_CAP, RI_CAP),
    )
    source = f"`{chosen[0]}`" if chosen is not None else "the recorded pairs (l, l)"
    caption = (
        f"colours: relative improvement RI = (acc(i, j) - max(acc_i, acc_j)) / (acc(`{reference}`) - "
        f"max(acc_i, acc_j)), with acc_i from {source} and `{reference}` = {steer[0]:.1f} as the all-layer result; "
        f"centred at 0, values above {RI_CAP:g} drawn as {RI_CAP:g} (clipped); x: RI > {REACHES} (the pair reaches "
        "the all-layer result); outlined diagonal: the single vector (RI 0 by definition where defined)"
    )
    lines = [
        f"Relative improvement (rows {numeric[0]}, columns {numeric[1]}; not clipped; x: RI > {REACHES}; -: "
        f"undefined). Numbers and their cells: `{stem}_ri.csv`.",
        "",
        grid_markdown(grid, numeric),
        "",
    ]
    notes = grid[grid.note != ""]
    for note, g in notes.groupby("note", sort=False):
        pairs = ", ".join(f"({r.i}, {r.j})" for r in g.itertuples())
        lines += [f"- RI {pairs}: {note}"]
    return caption, lines + ([""] if len(notes) else [])
