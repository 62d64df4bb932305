"""The effects of one run: for every measurement with per-problem records, each condition against the unsteered
baseline and against its declared control (`control:` on the condition, else `evaluation.control`), on the
problems both answered. What the report leads with, `Results.effects()` returns and the terminal summary shows.

One row per (model, measurement, condition) of the headline metric (`Results.headline()`, or `metric=`):

* `value`, `low`, `high`: the condition's rate with a 95% interval (`interval`: `wilson` when every problem has
  one 0/1 outcome, else `bootstrap` over problems of the per-problem means); `n` problems; `seeds` and
  `seed_std` (the standard deviation of the cells' metric over seeds, ddof 1; NaN for one seed): a mean over
  seeds keeps its spread;
* `vs_baseline`, `vs_baseline_low`, `vs_baseline_high`, `p_baseline`, `n_baseline`: condition - baseline on the
  shared problems, its paired bootstrap 95% interval and the exact McNemar p (NaN unless both sides are single
  0/1 outcomes), the number of shared problems; the same with `control` for `vs_control...`/`p_control`.

The statistics are `mechsteer.stats.paired` / `stats.rate`, the same functions `mechsteer diff` uses, with a
fixed seed (`seed`, default 0), so the report is reproducible bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mechsteer import stats
from mechsteer.comparison.scores import PAIRED_METRICS, PER_PROBLEM_KINDS, problem_scores, short

COLUMNS = [
    "model",
    "measurement",
    "kind",
    "metric",
    "condition",
    "role",
    "n",
    "seeds",
    "value",
    "low",
    "high",
    "interval",
    "seed_std",
    "baseline",
    "vs_baseline",
    "vs_baseline_low",
    "vs_baseline_high",
    "p_baseline",
    "n_baseline",
    "control",
    "vs_control",
    "vs_control_low",
    "vs_control_high",
    "p_control",
    "n_control",
    "cells",
]


def _versus(prefix: str, scores: tuple[pd.Series, bool], other: tuple[pd.Series, bool] | None, **boot) -> dict:
    """The `vs_<prefix>...` columns: condition - other on their shared problems (NaN without `other`)."""
    empty = {
        f"vs_{prefix}": math.nan,
        f"vs_{prefix}_low": math.nan,
        f"vs_{prefix}_high": math.nan,
        f"p_{prefix}": math.nan,
        f"n_{prefix}": 0,
    }
    if other is None:
        return empty
    (mine, binary_mine), (theirs, binary_theirs) = scores, other
    shared = [i for i in mine.index if i in theirs.index]
    if not shared:
        return empty
    p = stats.paired(
        theirs.loc[shared].to_numpy(), mine.loc[shared].to_numpy(), binary=binary_mine and binary_theirs, **boot
    )
    return {
        f"vs_{prefix}": p.delta,
        f"vs_{prefix}_low": p.ci_low,
        f"vs_{prefix}_high": p.ci_high,
        f"p_{prefix}": math.nan if p.p_mcnemar is None else p.p_mcnemar,
        f"n_{prefix}": p.n_shared,
    }


def compute_effects(results, *, metric: str | None = None, seed: int = 0, n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    """The effects table of a `Results` (see the module docstring); empty when no measurement has per-problem
    records."""
    wanted = metric or results.headline()
    order = [wanted] + [m for m in PAIRED_METRICS if m != wanted]
    controls = results.controls()
    baseline = results.baseline
    controls_of_any = set(controls.values())
    long = results.table()
    cells: dict[tuple, tuple[str, list[str]]] = {}
    for c in results.recorded():
        if c["kind"] in PER_PROBLEM_KINDS:
            key = (c["model"], c["measurement"].split(":", 1)[1], c["condition"])
            cells.setdefault(key, (c["kind"], []))[1].append(c["hash"])
    rows = []
    memo: dict[tuple, tuple[pd.Series, bool]] = {}

    def scores(key, name):
        if (key, name) not in memo:
            kind, hashes = cells[key]
            memo[(key, name)] = problem_scores(results, hashes, kind, name)
        return memo[(key, name)]

    boot = {"seed": seed, "n_boot": n_boot}
    measurements = list(dict.fromkeys((m, meas) for m, meas, _ in cells))
    for model, meas in measurements:
        conds = [c for c in results.conditions if (model, meas, c) in cells]
        name = next((m for m in order if any(not scores((model, meas, c), m)[0].empty for c in conds)), None)
        if name is None:
            continue
        for cond in conds:
            key = (model, meas, cond)
            mine = scores(key, name)
            if mine[0].empty:
                continue
            value, low, high, interval = stats.rate(mine[0].to_numpy(), binary=mine[1], **boot)
            per_seed = long[
                (long.model == model) & (long.measurement == meas) & (long.condition == cond) & (long.metric == name)
            ].value
            base_key = (model, meas, baseline)
            control = controls.get(cond) if cond != baseline else None
            ctl_key = (model, meas, control)
            rows.append(
                {
                    "model": model,
                    "measurement": meas,
                    "kind": cells[key][0],
                    "metric": name,
                    "condition": cond,
                    "role": "baseline" if cond == baseline else ("control" if cond in controls_of_any else ""),
                    "n": len(mine[0]),
                    "seeds": len(cells[key][1]),
                    "value": value,
                    "low": low,
                    "high": high,
                    "interval": interval,
                    "seed_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan,
                    "baseline": baseline if base_key in cells and cond != baseline else None,
                    **_versus(
                        "baseline",
                        mine,
                        scores(base_key, name) if base_key in cells and cond != baseline else None,
                        **boot,
                    ),
                    "control": control if ctl_key in cells else None,
                    **_versus("control", mine, scores(ctl_key, name) if ctl_key in cells else None, **boot),
                    "cells": short(cells[key][1]),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


__all__ = ["COLUMNS", "compute_effects"]
