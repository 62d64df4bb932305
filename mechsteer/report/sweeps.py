"""Paper-shaped plots of swept conditions, from recorded cells: accuracy per layer for single-layer sweeps (the
paper's Figure 1), per head for head sweeps (Figure 5), and for pair sweeps (Figure 13) the relative improvement
of each pair over its better single layer, on the way to the all-layer result (`report/composition.py`; it
needs a single-layer sweep and `evaluation.reference`, else the difference from the baseline is drawn).

A sweep is recognised from the study's condition templates in the cells' resolved spec (`single_{layer}` with
`sweep: {layer: layers}`; `q_head_{head}` with `query_heads` or `kv_heads`; two `layers` variables for pairs),
or, for output folders without them, from names alone (`single_<n>`, `<...>head_<n>`, `pair_<i>_<j>`). Every
other condition of the same model and measurement (the baseline, an all-layer vector, a random control) is
drawn as a horizontal band (its 95% interval where per-problem records exist, else mean ± std over seeds) or
line (one seed, no records). Points are the mean over seeds with 95% interval bars (Wilson for one graded answer
per problem, else a bootstrap over problems; `Results.effects`) and ± std over seeds shaded. Each plot's numbers
are written beside it as CSV with the intervals and the cells (hash prefixes) they come from.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.comparison import template_regex
from mechsteer.comparison.matching import explicit_layers
from mechsteer.report.composition import pair_figure
from mechsteer.safe_text import file_stem, markdown_table
from mechsteer.spec.sweeps import fill

ACCURACY = ("acc_lenient", "acc_boxed")
FALLBACK = [
    ("single_{layer}", re.compile(r"^single_(?P<layer>\d+)$"), "layers", ["layer"]),
    ("{kind}head_{head}", re.compile(r"^(?P<kind>.*head)_(?P<head>\d+)$"), "heads", ["head"]),
    ("pair_{i}_{j}", re.compile(r"^pair_(?P<i>\d+)_(?P<j>\d+)$"), "pairs", ["i", "j"]),
]


def sweep_templates(results) -> list[tuple[str, re.Pattern, str, list[str]]]:
    """(template, regex, axis: layers | heads | pairs, swept numeric variables) of the study's sweeps."""
    out = []
    for name, sweep in results.sweeps().items():
        layers = [v for v, r in sweep.items() if r == "layers" or explicit_layers(v, r)]
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
    return fill(template, {k: v for k, v in groups.items() if k not in numeric})


def _safe(text: str) -> str:
    """A file stem from plot labels (braces of templates dropped; long ones end in a hash)."""
    return file_stem(text.replace("{", "").replace("}", ""))


def _intervals(results, model: str, measurement: str, metric: str) -> dict[str, tuple[float, float]]:
    """condition -> the 95% interval (in %) of its rate from the per-problem records (`Results.effects`);
    empty for a measurement without them."""
    eff = results.effects(metric)
    eff = eff[(eff.model == model) & (eff.measurement == measurement) & (eff.metric == metric)]
    return {r.condition: (r.low * 100, r.high * 100) for r in eff.itertuples()}


def sweep_section(results, out_dir: Path) -> list[str]:
    """Report section (Markdown lines) with the sweep plots and their CSVs; empty without sweeps."""
    from mechsteer.readouts.plots import line_plot

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
                    label = _label(template, g, numeric)
                    # every per-layer sweep of one model and measurement shares a plot (e.g. s_k and random_k)
                    key = ("per layer", axis, tuple(numeric)) if axis == "layers" else (label, axis, tuple(numeric))
                    swept.setdefault(key, []).append((cond, tuple(int(g[v]) for v in numeric), label))
                    in_sweep.add(cond)
                    break
        if not swept:
            continue
        others = block[~block.condition.isin(in_sweep)]
        ci = _intervals(results, model, meas, metric)
        bands: dict[str, tuple[float, float] | float] = {}
        for cond, g in others.groupby("condition", sort=False):
            mean, std = g.value.mean() * 100, g.value.std(ddof=1) * 100
            if cond in ci:
                bands[f"{cond} ({mean:.1f}, 95% CI)"] = ci[cond]
            else:
                bands[f"{cond} ({mean:.1f})"] = (mean - std, mean + std) if len(g) > 1 and std > 0 else mean
        tables: dict[tuple, pd.DataFrame] = {}
        for (label, axis, numeric), members in swept.items():
            if axis == "layers" and len({m[2] for m in members}) == 1:
                label = members[0][2]  # one per-layer sweep: named after its template
            rows = []
            for cond, xs, sweep_label in members:
                g = block[block.condition == cond]
                rows.append(
                    {
                        **dict(zip(numeric, xs, strict=True)),
                        "condition": cond,
                        "sweep": sweep_label,
                        "mean": g.value.mean() * 100,
                        "std": g.value.std(ddof=1) * 100 if len(g) > 1 else 0.0,
                        "seeds": len(g),
                        "ci_low": ci.get(cond, (math.nan, math.nan))[0],
                        "ci_high": ci.get(cond, (math.nan, math.nan))[1],
                        "cells": " ".join(sorted(set(g.cell))),
                    }
                )
            tables[(label, axis, numeric)] = pd.DataFrame(rows).sort_values(list(numeric))
        singles = [(label, t, numeric[0]) for (label, axis, numeric), t in tables.items() if axis == "layers"]
        for (label, axis, numeric), table in tables.items():
            if len(table) < 2:
                continue
            stem = _safe(f"sweep_{label}_{model}_{meas}_{metric}")
            atomic_write_text(out_dir / f"{stem}.csv", table.to_csv(index=False))
            what = {"layers": "per layer", "heads": "per head", "pairs": "per pair of layers"}[axis]
            title = f"{model}: {meas} {metric} {what} ({label})"
            extra: list[str] = []
            if axis == "pairs":
                caption, extra = pair_figure(
                    table,
                    list(numeric),
                    others=others,
                    baseline=results.baseline,
                    reference=(results.evaluation or {}).get("reference"),
                    single_tables=singles,
                    out_dir=out_dir,
                    stem=stem,
                    title=title,
                )
            else:
                line_plot(
                    table,
                    out_dir / f"{stem}.png",
                    x=numeric[0],
                    y="mean",
                    hue="sweep",
                    err="std",
                    ci=("ci_low", "ci_high"),
                    title=title,
                    bands=bands,
                    ylabel=f"{metric} (%)",
                )
                caption = "horizontal lines/bands: " + ", ".join(bands) if bands else ""
            shown = table.assign(
                **{
                    metric: [
                        f"{m:.1f}" + (f" ± {s:.1f}" if n > 1 else "")
                        for m, s, n in zip(table["mean"], table["std"], table.seeds, strict=True)
                    ],
                    "95% CI": [
                        "-" if pd.isna(lo) else f"[{lo:.1f}, {hi:.1f}]"
                        for lo, hi in zip(table.ci_low, table.ci_high, strict=True)
                    ],
                }
            )
            lines += [
                f"### {title}",
                "",
                f"![{title}]({stem}.png)",
                "",
                (
                    "Points: mean over seeds with 95% CI bars (Wilson, or a bootstrap over problems for averages), "
                    "± std over seeds shaded"
                    if axis != "pairs"
                    else "Cells: mean over seeds"
                )
                + (f"; {caption}." if caption else "."),
                "",
                *extra,
                markdown_table(shown[[*numeric, "condition", metric, "95% CI", "seeds", "cells"]], index=False),
                "",
                f"File: `{stem}.csv`.",
                "",
            ]
    return (["## Sweeps (paper figures)", ""] + lines) if lines else []
