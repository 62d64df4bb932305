"""Paper-shaped plots of swept conditions, from recorded cells: accuracy per layer for single-layer sweeps (the
paper's Figure 1), per head for head sweeps (Figure 5), and a diverging heat-map of the difference from the
baseline for pair sweeps (Figure 13).

A sweep is recognised from the study's condition templates in the cells' resolved spec (`single_{layer}` with
`sweep: {layer: layers}`; `q_head_{head}` with `query_heads` or `kv_heads`; two `layers` variables for pairs),
or, for output folders without them, from names alone (`single_<n>`, `<...>head_<n>`). Every other condition of
the same model and measurement (the baseline, an all-layer vector, a random control) is drawn as a horizontal
band (mean ± std over seeds) or line (one seed). Points are the mean over seeds with ± std shaded. Each plot's
numbers are written beside it as CSV with the cells (hash prefixes) they come from.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.comparison import template_regex

ACCURACY = ("acc_lenient", "acc_boxed")
FALLBACK = [
    ("single_{layer}", re.compile(r"^single_(?P<layer>\d+)$"), "layers", ["layer"]),
    ("{kind}head_{head}", re.compile(r"^(?P<kind>.*head)_(?P<head>\d+)$"), "heads", ["head"]),
]


def sweep_templates(results) -> list[tuple[str, re.Pattern, str, list[str]]]:
    """(template, regex, axis: layers | heads | pairs, swept numeric variables) of the study's sweeps."""
    out = []
    for name, sweep in results.sweeps().items():
        layers = [v for v, r in sweep.items() if r == "layers"]
        heads = [v for v, r in sweep.items() if r in ("query_heads", "kv_heads")]
        rx = template_regex(name, {v: r"-?\d+" for v, r in sweep.items() if isinstance(r, str)})
        if len(sweep) == 1 and layers:
            out.append((name, rx, "layers", layers))
        elif len(sweep) == 1 and heads:
            out.append((name, rx, "heads", heads))
        elif len(sweep) == 2 and len(layers) == 2:
            out.append((name, rx, "pairs", layers))
    return out or [(t, rx, axis, v) for t, rx, axis, v in FALLBACK]


def _label(template: str, groups: dict, numeric: list[str]) -> str:
    """The plot title of a sweep: the template with its non-numeric variables filled in (e.g. `q_head_{head}`)."""
    return template.format(**{k: (f"{{{k}}}" if k in numeric else v) for k, v in groups.items()})


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("{", "").replace("}", "")).strip("_")


def sweep_section(results, out_dir: Path) -> list[str]:
    """Report section (Markdown lines) with the sweep plots and their CSVs; empty without sweeps."""
    from mechsteer.readouts.plots import heatmap, line_plot

    df = results.table()
    if df.empty:
        return []
    df = df[df.metric.isin(ACCURACY)]
    templates = sweep_templates(results)
    lines: list[str] = []
    for (model, meas), block in df.groupby(["model", "measurement"], sort=False):
        metric = next((m for m in ACCURACY if (block.metric == m).any()), None)
        if metric is None:
            continue
        block = block[block.metric == metric]
        swept: dict[tuple, list] = {}
        in_sweep: set[str] = set()
        for cond in dict.fromkeys(block.condition):
            for template, rx, axis, numeric in templates:
                m = rx.match(cond)
                if m:
                    g = m.groupdict()
                    key = (_label(template, g, numeric), axis, tuple(numeric))
                    swept.setdefault(key, []).append((cond, tuple(int(g[v]) for v in numeric)))
                    in_sweep.add(cond)
                    break
        if not swept:
            continue
        others = block[~block.condition.isin(in_sweep)]
        bands: dict[str, tuple[float, float] | float] = {}
        for cond, g in others.groupby("condition", sort=False):
            mean, std = g.value.mean() * 100, g.value.std(ddof=1) * 100
            bands[f"{cond} ({mean:.1f})"] = (mean - std, mean + std) if len(g) > 1 and std > 0 else mean
        for (label, axis, numeric), members in swept.items():
            if len(members) < 2:
                continue
            rows = []
            for cond, xs in members:
                g = block[block.condition == cond]
                rows.append(
                    {
                        **dict(zip(numeric, xs, strict=True)),
                        "condition": cond,
                        "mean": g.value.mean() * 100,
                        "std": g.value.std(ddof=1) * 100 if len(g) > 1 else 0.0,
                        "seeds": len(g),
                        "cells": " ".join(sorted(set(g.cell))),
                    }
                )
            table = pd.DataFrame(rows).sort_values(list(numeric))
            stem = _safe(f"sweep_{label}_{model}_{meas}_{metric}")
            atomic_write_text(out_dir / f"{stem}.csv", table.to_csv(index=False))
            what = {"layers": "per layer", "heads": "per head", "pairs": "per pair of layers"}[axis]
            title = f"{model}: {meas} {metric} {what} ({label})"
            if axis == "pairs":
                base = results.baseline
                ref = others[others.condition == base].value.mean() * 100 if base in set(others.condition) else 0.0
                grid = table.assign(delta=table["mean"] - ref).pivot(
                    index=numeric[0], columns=numeric[1], values="delta"
                )
                heatmap(
                    grid,
                    out_dir / f"{stem}.png",
                    title=f"{title}: minus {base or 'nothing'} (pp)",
                    markers=[(i, i) for i in grid.index if i in grid.columns],
                )
            else:
                line_plot(
                    table.assign(sweep=label),
                    out_dir / f"{stem}.png",
                    x=numeric[0],
                    y="mean",
                    hue="sweep",
                    err="std",
                    title=title,
                    bands=bands,
                    ylabel=f"{metric} (%)",
                )
            shown = table.assign(
                **{
                    metric: [
                        f"{m:.1f}" + (f" ± {s:.1f}" if n > 1 else "")
                        for m, s, n in zip(table["mean"], table["std"], table.seeds, strict=True)
                    ]
                }
            )
            lines += [
                f"### {title}",
                "",
                f"![{title}]({stem}.png)",
                "",
                "Points: mean over seeds, ± std shaded; "
                + (
                    "horizontal lines/bands: " + ", ".join(bands)
                    if bands and axis != "pairs"
                    else "colours: difference from the baseline, centred at 0"
                )
                + ".",
                "",
                shown[[*numeric, "condition", metric, "seeds", "cells"]].to_markdown(index=False),
                "",
                f"File: `{stem}.csv`.",
                "",
            ]
    return (["## Sweeps (paper figures)", ""] + lines) if lines else []
