"""`mechsteer diff A B`: compare two output folders of the same study, B - A, from recorded cells only (through
`mechsteer.results.Results`); `mechsteer diff FOLDER --models A B`: model B against model A inside one output
folder (a study that declares both), with the same matching, statistics and tables. Matching:
`comparison.matching`; per-problem scores: `comparison.scores`; the statistics: `mechsteer.stats` (the same
functions the report's effects use); rendering: `comparison.render`.

For every matched (model, condition, measurement) (`model`: A's model, `model_b`: B's, which differ when two
models of one folder, or two single-model runs with differently named models, are compared):
* `metrics`: each recorded metric's mean over seeds in A and B and `delta = B - A` (readout tables side by side);
* `paired`: for measurements with per-problem correctness, statistics on the problems both runs answered.
  `delta` is the mean paired difference, `ci_low`/`ci_high` a paired bootstrap 95% interval of it (problems
  resampled with replacement, numpy, seeded: the same seed gives the same interval), and `p_mcnemar` the exact
  McNemar test (two-sided binomial test on the discordant problems), computed when every score is one 0/1
  outcome (one sample per problem and one seed); with averaged scores (avg@k, several seeds) it is left empty
  and only the bootstrap interval is given.
A folder diffed with itself gives zero deltas, a [0, 0] interval and p = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mechsteer import stats
from mechsteer.comparison import render
from mechsteer.comparison.matching import layer_templates, match_conditions, match_models, n_layers
from mechsteer.comparison.scores import PER_PROBLEM_KINDS, cells_of, problem_scores, short
from mechsteer.errors import MechsteerError
from mechsteer.results import Results

METRIC_COLUMNS = [
    "model",
    "model_b",
    "condition",
    "condition_b",
    "measurement",
    "kind",
    "metric",
    "a",
    "b",
    "delta",
    "cells_a",
    "cells_b",
]
PAIRED_COLUMNS = [
    "model",
    "model_b",
    "condition",
    "condition_b",
    "measurement",
    "kind",
    "metric",
    "n_shared",
    "acc_a",
    "acc_b",
    "delta",
    "ci_low",
    "ci_high",
    "right_only_a",
    "right_only_b",
    "p_mcnemar",
    "cells_a",
    "cells_b",
]


@dataclass
class DiffResult:
    """What `diff` returns: the matching, the metric deltas and the paired statistics (DataFrames)."""

    a: str
    b: str
    study: str
    matches: pd.DataFrame
    """model_a, model_b, condition_a, condition_b, matched_by."""
    metrics: pd.DataFrame
    """model, model_b, condition, condition_b, measurement, kind, metric, a, b, delta, cells_a, cells_b."""
    paired: pd.DataFrame
    """model, model_b, condition, condition_b, measurement, kind, metric, n_shared, acc_a, acc_b, delta, ci_low,
    ci_high, right_only_a, right_only_b, p_mcnemar, cells_a, cells_b."""
    unmatched_a: list[str] = field(default_factory=list)
    unmatched_b: list[str] = field(default_factory=list)
    seed: int = 0
    n_boot: int = stats.N_BOOT
    models: tuple[str, str] | None = None
    """(model A, model B) of a diff inside one folder (`--models A B`); None for a diff of two folders."""
    model_ids: dict[str, dict[str, str]] = field(default_factory=dict)
    """`{"a": {model: description}, "b": {...}}`: each compared model's id, architecture and depth, from its
    cells' provenance (what the Markdown header and the terminal title name)."""

    def __getitem__(self, column: str) -> pd.Series:
        """A column of the metrics table (`diff(a, b)["delta"]`, as the earlier DataFrame result allowed)."""
        return self.metrics[column]

    def readouts(self) -> pd.DataFrame:
        """Readout metrics side by side: rows (model, condition, measurement, metric), columns A, B, delta."""
        r = self.metrics[self.metrics.kind != "eval"]
        return r.set_index(["model", "condition", "measurement", "metric"])[["a", "b", "delta"]]

    def to_dict(self) -> dict:
        """Everything as JSON-able records."""
        return render.to_dict(self)

    def to_json(self) -> str:
        """`to_dict()` as indented JSON (diff.json, `mechsteer diff --format json`)."""
        import json

        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self) -> str:
        """The paired statistics (or the metric deltas when no measurement has per-problem records) as CSV."""
        return (self.paired if not self.paired.empty else self.metrics).to_csv(index=False)

    def to_markdown(self) -> str:
        """diff.md: the paired statistics and the metric deltas as Markdown tables."""
        return render.to_markdown(self)

    def write(self, out_dir: str | Path) -> list[Path]:
        """diff.md, paired.csv, metrics.csv, matches.csv, diff.json into `out_dir`; returns the paths."""
        from mechsteer.atomic import atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "diff.md": self.to_markdown(),
            "paired.csv": self.paired.to_csv(index=False),
            "metrics.csv": self.metrics.to_csv(index=False),
            "matches.csv": self.matches.to_csv(index=False),
            "diff.json": self.to_json(),
        }
        return [atomic_write_text(out / name, text) for name, text in files.items()]

    def rich_tables(self) -> list:
        """rich Tables for the terminal (`comparison.render.rich_tables`)."""
        return render.rich_tables(self)


def _load(x) -> Results:
    return x if isinstance(x, Results) else Results.load(x)


def _metric_means(table: pd.DataFrame, model: str, condition: str, measurement: str) -> pd.Series:
    rows = table[(table.model == model) & (table.condition == condition) & (table.measurement == measurement)]
    return rows.groupby("metric")["value"].mean()


def _model_pair(r: Results, models) -> tuple[str, str]:
    """The two model names of a diff inside one folder, checked against the folder's recorded models."""
    if isinstance(models, str) or len(tuple(models)) != 2:
        raise MechsteerError(
            f"models={models!r}: give two model names, A and B (B - A is shown)",
            hint="e.g. --models smol gemma (model names as the study names them)",
        )
    a, b = (str(m) for m in models)
    recorded = list(dict.fromkeys(c["model"] for c in r.recorded()))
    declared = list(r.summary.get("models") or recorded)
    for m in (a, b):
        if m not in recorded:
            where = "declares no model" if m not in declared else "has no recorded cell of model"
            raise MechsteerError(
                f"{r.output_dir} {where} {m!r} (models with recorded cells: {', '.join(recorded) or 'none'})",
                hint="name two models of the folder as its study names them (`mechsteer ls` lists them)",
            )
    if a == b:
        raise MechsteerError(
            f"--models {a} {b}: a model compared with itself", hint="name two different models of the folder"
        )
    return a, b


def _model_ids(r: Results, models: list[str]) -> dict[str, str]:
    """model -> `id, architecture, N blocks` from the first recorded cell of each model."""
    out: dict[str, str] = {}
    for c in r.recorded():
        if c["model"] in models and c["model"] not in out:
            prov = r.store.read_record(c["hash"]).get("model_provenance") or {}
            blocks = f"{prov['n_layers']} blocks" if "n_layers" in prov else None
            out[c["model"]] = ", ".join(str(x) for x in (prov.get("id", "?"), prov.get("architecture"), blocks) if x)
    return out


def diff(
    a: Results | str | Path,
    b: Results | str | Path | None = None,
    *,
    models: tuple[str, str] | list[str] | None = None,
    seed: int = 0,
    n_boot: int = stats.N_BOOT,
    metrics: tuple[str, ...] = ("acc_lenient", "acc_boxed"),
) -> DiffResult:
    """Compare two output folders (or Results) of the same study, B - A; or, with `models=(A, B)` and one
    folder, model B with model A inside it (see the module docstring). Errors name what is wrong: two
    folders and `models` together, one folder without `models`, a model the folder does not have."""
    if models is not None and b is not None:
        raise MechsteerError(
            f"models={tuple(models)!r} compares two models inside one folder, but two folders were given ({a} and {b})",
            hint="give one folder with --models A B, or two folders without --models",
        )
    ra = _load(a)
    if models is not None:
        model_a, model_b = _model_pair(ra, models)
        return _compare(ra, ra, [(model_a, model_b)], seed, n_boot, metrics, models=(model_a, model_b))
    if b is None:
        raise MechsteerError(
            f"one folder ({a}) and no models to compare inside it",
            hint="give a second output folder (diff A B), or two models of this folder (--models A B)",
        )
    rb = _load(b)
    if (ra.rehearsal is None) != (rb.rehearsal is None):
        rehearsal, real = (ra, rb) if ra.rehearsal is not None else (rb, ra)
        raise MechsteerError(
            f"{rehearsal.output_dir} is a rehearsal (random-weight twins, stand-in data): it is not a result and "
            f"cannot be compared with the run in {real.output_dir}",
            hint="diff two runs, or two rehearsals",
        )
    if ra.study != rb.study:
        raise MechsteerError(
            f"cannot diff runs of different studies: {ra.study!r} ({ra.output_dir}) vs {rb.study!r} ({rb.output_dir})",
            hint="diff two output folders of the same study",
        )
    return _compare(ra, rb, match_models(ra, rb), seed, n_boot, metrics)


def _compare(
    ra: Results,
    rb: Results,
    model_pairs: list[tuple[str, str]],
    seed: int,
    n_boot: int,
    metrics: tuple[str, ...],
    models: tuple[str, str] | None = None,
) -> DiffResult:
    """The diff of the given (model in A, model in B) pairs: matching, metric deltas and paired statistics."""
    depth_a, depth_b = n_layers(ra), n_layers(rb)
    templates = layer_templates(ra) or layer_templates(rb)
    la, lb = ra.table(), rb.table()
    match_rows, metric_rows, paired_rows = [], [], []
    unmatched_a: list[str] = []
    matched_b: set[str] = set()
    all_b: list[str] = []
    per_problem_pairs = 0
    for model_a, model_b in model_pairs:
        conds_a = list(dict.fromkeys(c["condition"] for c in ra.recorded() if c["model"] == model_a))
        conds_b = list(dict.fromkeys(c["condition"] for c in rb.recorded() if c["model"] == model_b))
        all_b += conds_b
        pairs = match_conditions(conds_a, conds_b, depth_a.get(model_a), depth_b.get(model_b), templates)
        unmatched_a += [c for c in conds_a if c not in {p[0] for p in pairs}]
        for ca, cb, how in pairs:
            matched_b.add(cb)
            match_rows.append(
                {"model_a": model_a, "model_b": model_b, "condition_a": ca, "condition_b": cb, "matched_by": how}
            )
            cells_a, cells_b = cells_of(ra, model_a, ca), cells_of(rb, model_b, cb)
            for meas in [m for m in cells_a if m in cells_b]:
                kind, ha = cells_a[meas]
                hb = cells_b[meas][1]
                means = pd.concat(
                    [
                        _metric_means(la, model_a, ca, meas).rename("a"),
                        _metric_means(lb, model_b, cb, meas).rename("b"),
                    ],
                    axis=1,
                    join="inner",
                )
                where = {
                    "model": model_a,
                    "model_b": model_b,
                    "condition": ca,
                    "condition_b": cb,
                    "measurement": meas,
                    "kind": kind,
                }
                cells = {"cells_a": short(ha), "cells_b": short(hb)}
                for metric, row in means.iterrows():
                    metric_rows.append(
                        {**where, "metric": metric, "a": row.a, "b": row.b, "delta": row.b - row.a, **cells}
                    )
                if kind not in PER_PROBLEM_KINDS:
                    continue
                for metric in metrics:
                    sa, single_a = problem_scores(ra, ha, kind, metric)
                    sb, single_b = problem_scores(rb, hb, kind, metric)
                    if sa.empty or sb.empty:
                        continue
                    per_problem_pairs += 1
                    shared = [i for i in sa.index if i in sb.index]
                    if not shared:
                        continue
                    xa, xb = sa.loc[shared].to_numpy(), sb.loc[shared].to_numpy()
                    p = stats.paired(xa, xb, binary=single_a and single_b, n_boot=n_boot, seed=seed)
                    paired_rows.append({**where, "metric": metric, **p.as_dict(), **cells})
    what = (
        f"models {models[0]!r} and {models[1]!r} of {ra.output_dir}"
        if models
        else f"{ra.output_dir} and {rb.output_dir}"
    )
    metrics_df = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
    if metrics_df.empty:
        raise MechsteerError(
            f"{what} share no recorded (condition, measurement)"
            if models
            else f"{what} share no recorded (model, condition, measurement)",
            hint="run both with the same conditions and measurements",
        )
    if per_problem_pairs and not paired_rows:
        raise MechsteerError(
            f"{what} share no problems: their per-problem records name different problems, so no paired "
            "statistic exists",
            hint="run both on the same benchmark slice (same task, limit and data)",
        )
    return DiffResult(
        a=str(ra.output_dir),
        b=str(rb.output_dir),
        study=ra.study,
        matches=pd.DataFrame(match_rows, columns=["model_a", "model_b", "condition_a", "condition_b", "matched_by"]),
        metrics=metrics_df,
        paired=pd.DataFrame(paired_rows, columns=PAIRED_COLUMNS),
        unmatched_a=unmatched_a,
        unmatched_b=[c for c in dict.fromkeys(all_b) if c not in matched_b],
        seed=seed,
        n_boot=n_boot,
        models=models,
        model_ids={
            "a": _model_ids(ra, [p[0] for p in model_pairs]),
            "b": _model_ids(rb, [p[1] for p in model_pairs]),
        },
    )


__all__ = ["DiffResult", "diff"]
