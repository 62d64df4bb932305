"""`Results`: the recorded cells of one study run, as pandas tables. Read from a Plan (right after a run) or
from an output folder alone (`Results.load("outputs/quickstart")`, via the plan.json every run writes), so a
finished run can be analysed without its study file.

Tables are views of the cell records, never the only copy:
* `table()`: long form, one row per model x condition x measurement x seed x metric;
* `wide()`: rows (model, condition), columns `measurement/metric`, mean over seeds (`wide(text=True)`: the
  formatted mean ± std the report shows);
* `delta()`: each condition's means minus the baseline condition's, per model;
* `samples(cell)`: a cell's per-sample records; `record(cell)`: its cell.json.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from mechsteer.engine.plan import PLAN_FILE, PLAN_FORMAT, Plan
from mechsteer.engine.store import CellStore
from mechsteer.errors import MechsteerError, Problem
from mechsteer.spec.sweeps import template_problem

COLUMNS = ["model", "condition", "measurement", "kind", "seed", "metric", "value", "cell"]
"""Columns of the long table (`Results.table()`)."""

READABLE_FORMATS = ("mechsteer.plan/1", PLAN_FORMAT)
"""plan.json formats this version reads: `/1` (sweep templates and readout settings only in the cell records'
copy of the study, `resolved_spec`) and the current one."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _CellRow(_Loose):
    hash: str = Field(pattern=r"^[0-9a-f]{12,64}$")
    """A folder name under cells/: hex only, so it can never point elsewhere."""
    model: str
    condition: str
    measurement: str = Field(pattern=r"^[a-z_]+:.+$")
    kind: str
    seed: StrictInt


class _Evaluation(_Loose):
    tasks: list[str]
    protocol: str = "greedy"
    seeds: list[StrictInt] = Field(default_factory=lambda: [0])
    reference: str | None = None


class PlanSummary(_Loose):
    """What results readers need from a plan.json (the fields `Plan.summary` writes); others are kept."""

    study: str
    profile: str | None = None
    description: str | None = None
    deviations: list[str] | None = None
    """The study's declared departures from the paper (absent in plans written before them)."""
    models: list[str]
    conditions: list[str]
    baseline: str | None = None
    evaluation: _Evaluation | None = None
    sweeps: dict[str, dict[str, str | list | dict]] | None = None
    """Sweep name template -> {variable: range} (format /2; absent in /1)."""
    controls: dict[str, str] | None = None
    """Condition -> its control condition (absent in plans written before controls)."""
    report: dict[str, Any] | None = None
    """The study's `report:` settings (absent in plans written before them)."""
    rehearsal: dict[str, Any] | None = None
    """A rehearsal's record (`mechsteer run --rehearse`): present only in a rehearsal's folder."""
    cells: list[_CellRow]


def _values_pattern(values) -> str:
    """A regex for the values a sweep variable takes (numbers for named ranges and steps, else the listed
    values), so a template matches only its own expansions."""
    import re

    if isinstance(values, list) and values:
        return "|".join(re.escape(str(v)) for v in values)
    return r"-?\d+" if isinstance(values, (str, dict)) else ".+?"


def check_summary(data, file: str | Path) -> dict:
    """A plan.json's content checked against `PlanSummary` (a MechsteerError naming each bad field), as a
    plain dict; a folder someone else wrote (downloaded, edited) is read only when it has that shape."""
    hint = "this plan.json was not written by `mechsteer run` (or was edited); run the study again to rewrite it"
    try:
        return PlanSummary.model_validate(data).model_dump(mode="json")
    except ValidationError as e:
        problems = [
            Problem(
                err["msg"],
                file=str(file),
                field=".".join(str(p) for p in err["loc"]) or None,
                hint=hint,
            )
            for err in e.errors(include_url=False)[:5]
        ]
        raise MechsteerError(problems) from None


class RehearsalWarning(UserWarning):
    """Results read from a rehearsal's folder (random-weight twins, stand-in data): not results of the study."""


class Results:
    """The recorded cells of one run (see the module docstring)."""

    def __init__(self, summary: dict, output_dir: str | Path):
        """`summary`: the plan's summary (plan.json); `output_dir`: the run's folder."""
        self.summary = summary
        self.output_dir = Path(output_dir)
        self.store = CellStore(self.output_dir / "cells")
        self.run_summary = None
        """The executor's RunSummary (executed, cached, reused stale, seconds) when these results come from
        a run in this process; None when read from disk."""

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_plan(cls, plan: Plan) -> Results:
        """The results of a plan compiled (and usually run) in this process."""
        return cls(plan.summary(), plan.output_dir)

    @classmethod
    def load(cls, path: str | Path) -> Results:
        """Results of the run whose output folder is `path` (the folder holding plan.json and cells/)."""
        path = Path(path)
        f = path / PLAN_FILE
        if not f.is_file():
            raise MechsteerError(
                f"{path}: no {PLAN_FILE} here, so this is not a mechsteer output folder",
                hint="give the folder `mechsteer run` printed (outputs/<study>[-<profile>])",
            )
        try:
            summary = json.loads(f.read_text(encoding="utf-8"))
            json.dumps(summary, ensure_ascii=False).encode("utf-8")  # lone surrogates (`\ud800`) cannot be written
        except (OSError, ValueError, RecursionError) as e:  # UnicodeError is a ValueError
            raise MechsteerError(f"{f}: unreadable ({e})", hint="run the study again to rewrite it") from None
        fmt = summary.get("format") if isinstance(summary, dict) else None
        if fmt not in READABLE_FORMATS:
            raise MechsteerError(
                f"{f}: plan format {fmt!r} is not one this mechsteer reads ({', '.join(READABLE_FORMATS)})",
                hint="read it with the mechsteer version that wrote it, or run the study again to rewrite it",
            )
        results = cls(check_summary(summary, f), path)
        if results.rehearsal is not None:
            import warnings

            warnings.warn(f"{path}: {results.rehearsal.get('banner', 'a rehearsal')}", RehearsalWarning, stacklevel=2)
        return results

    # ------------------------------------------------------------------ facts
    @property
    def study(self) -> str:
        """The study's name."""
        return self.summary["study"]

    @property
    def profile(self) -> str | None:
        """The profile the run used."""
        return self.summary.get("profile")

    @property
    def rehearsal(self) -> dict | None:
        """The rehearsal's record when these cells come from a rehearsal (random-weight twins, stand-in data: not
        results), else None."""
        return self.summary.get("rehearsal")

    @property
    def conditions(self) -> list[str]:
        """Condition names in study order."""
        return list(self.summary["conditions"])

    @property
    def models(self) -> list[str]:
        """Model keys in study order."""
        return list(self.summary["models"])

    @property
    def baseline(self) -> str | None:
        """The unsteered baseline condition, if the study has one."""
        return self.summary.get("baseline")

    @property
    def evaluation(self) -> dict | None:
        """The study's evaluation block (with its resolved seeds), or None."""
        return self.summary.get("evaluation")

    @property
    def cells(self) -> list[dict]:
        """Plan rows (hash, model, condition, measurement, kind, seed), one per model x condition x ..."""
        return list(self.summary["cells"])

    def sweeps(self) -> dict[str, dict]:
        """The study's sweep conditions: name template -> `{variable: range}` (plan.json's `sweeps`; a plan
        written before that field read them from the study copy in its first recorded cell, and so does this;
        empty when the study has no sweep)."""
        if self.summary.get("sweeps") is not None:
            return {
                name: sweep
                for name, sweep in self.summary["sweeps"].items()
                if template_problem(name) is None and all(isinstance(v, str) and v.isidentifier() for v in sweep)
            }
        for c in self.recorded():
            spec = self.store.read_record(c["hash"]).get("resolved_spec") or {}
            conditions = spec.get("conditions") if isinstance(spec, dict) else None
            return {
                name: body["sweep"]
                for name, body in (conditions if isinstance(conditions, dict) else {}).items()
                if isinstance(body, dict)
                and isinstance(body.get("sweep"), dict)
                and template_problem(name) is None  # a folder's cell.json is read, not trusted
                and all(isinstance(v, str) and v.isidentifier() for v in body["sweep"])
            }
        return {}

    def measurement_spec(self, cell: dict) -> dict:
        """The measurement spec a recorded cell ran (a plan row's `hash` and `measurement`), as JSON: its
        record's `measurement_spec`, or, in a cell recorded before that field, the readout's entry in the
        record's copy of the study. Empty when the cell is not readable."""
        try:
            record = self.store.read_record(cell["hash"])
        except (OSError, ValueError):
            return {}
        if "measurement_spec" in record:
            return dict(record["measurement_spec"] or {})
        readouts = (record.get("resolved_spec") or {}).get("readouts") or {}
        return dict(readouts.get(cell["measurement"].split(":", 1)[1]) or {})

    def recorded(self) -> list[dict]:
        """Plan rows of the cells that are recorded."""
        return [c for c in self.cells if self.store.is_done(c["hash"])]

    # ------------------------------------------------------------------ tables
    @cached_property
    def _long(self) -> pd.DataFrame:
        rows = []
        for c in self.recorded():
            metrics = self.store.read_metrics(c["hash"])
            for metric, value in metrics.items() if isinstance(metrics, dict) else ():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                rows.append(
                    {
                        "model": c["model"],
                        "condition": c["condition"],
                        "measurement": c["measurement"].split(":", 1)[1],
                        "kind": c["kind"],
                        "seed": c["seed"],
                        "metric": metric,
                        "value": float(value),
                        "cell": c["hash"][:12],
                    }
                )
        return pd.DataFrame(rows, columns=COLUMNS)

    def table(self) -> pd.DataFrame:
        """Long form: one row per model x condition x measurement x seed x metric."""
        return self._long.copy()

    def wide(self, text: bool = False) -> pd.DataFrame:
        """Rows (model, condition), columns `measurement/metric`: means over seeds, or formatted mean ± std."""
        from mechsteer.report.tables import wide_table

        means, formatted = wide_table(self._long, self.conditions)
        return formatted if text else means

    def delta(self) -> pd.DataFrame:
        """Each condition's means minus the baseline condition's, per model (empty without a baseline)."""
        from mechsteer.report.tables import delta_table

        return delta_table(self.wide(), self.baseline) if self.baseline else pd.DataFrame()

    # ------------------------------------------------------------------ cells
    def find(self, cell: str | None = None, **where) -> dict:
        """The one plan row matching a hash (or unique prefix) and/or fields (model=, condition=,
        measurement=, seed=); an error lists the candidates otherwise."""
        rows = self.cells
        if cell:
            rows = [c for c in rows if c["hash"].startswith(cell)]
        for k, v in where.items():
            rows = [c for c in rows if c[k] == v or (k == "measurement" and c[k].split(":", 1)[1] == v)]
        hashes = {c["hash"] for c in rows}
        if len(hashes) != 1:
            shown = ", ".join(sorted(h[:12] for h in hashes)[:8]) or "none"
            raise MechsteerError(
                f"{len(hashes)} cells match {cell or ''} {where or ''}: {shown}",
                hint="give a longer hash prefix or more fields (model, condition, measurement, seed)",
            )
        return rows[0]

    def record(self, cell: str | None = None, **where) -> dict:
        """A cell's cell.json (provenance, resolved spec, timings)."""
        return self.store.read_record(self.find(cell, **where)["hash"])

    def samples(self, cell: str | None = None, **where) -> pd.DataFrame:
        """A cell's per-sample records (samples.jsonl) as a DataFrame."""
        return pd.DataFrame(self.store.read_samples(self.find(cell, **where)["hash"]))

    # ------------------------------------------------------------------ effects
    def controls(self) -> dict[str, str]:
        """Condition -> the control condition the report compares it with (its `control:`, a sweep's control
        template filled per expansion, else `evaluation.control`; compiled into plan.json), for the conditions
        whose control is itself a condition of this run. A plan written before controls were compiled gives
        only `evaluation.control`."""
        names = set(self.conditions)
        recorded = self.summary.get("controls")
        if isinstance(recorded, dict):
            pairs = recorded.items()
        else:
            default = (self.evaluation or {}).get("control")
            pairs = [(c, default) for c in self.conditions] if isinstance(default, str) else []
        return {c: ctl for c, ctl in pairs if c in names and ctl in names and ctl != c}

    def headline(self) -> str:
        """The accuracy metric the effects, the first figures and the terminal summary show: the study's
        `report.headline`, else `acc_boxed` (the paper's metric) under the paper protocol, else `acc_lenient`."""
        report = self.summary.get("report")
        chosen = report.get("headline") if isinstance(report, dict) else None
        if chosen in ("acc_lenient", "acc_boxed"):
            return chosen
        return "acc_boxed" if (self.evaluation or {}).get("protocol") == "paper" else "acc_lenient"

    def effects(self, metric: str | None = None, *, seed: int = 0, n_boot: int = 10_000) -> pd.DataFrame:
        """Each condition against the baseline and its control, per measurement with per-problem records: rate
        with a Wilson (or bootstrap) 95% CI, differences with paired bootstrap 95% CIs and exact McNemar p
        (`mechsteer.comparison.effects`). `metric`: acc_lenient or acc_boxed (default: `headline()`)."""
        from mechsteer.comparison.effects import compute_effects

        key = (metric, seed, n_boot)
        cache = self.__dict__.setdefault("_effects", {})
        if key not in cache:
            cache[key] = compute_effects(self, metric=metric, seed=seed, n_boot=n_boot)
        return cache[key].copy()

    def plot(self, metric: str | None = None, *, model: str | None = None):
        """The report's headline figure as a matplotlib Figure: per measurement, each condition's rate with its
        95% CI, the baseline as a line and band, controls marked (`mechsteer.report.effects`). `model`: which
        model (default: the first); None when nothing has per-problem records."""
        from mechsteer.report.effects import effects_figure

        eff = self.effects(metric)
        if eff.empty:
            return None
        model = model if model is not None else eff.model.iloc[0]
        return effects_figure(eff[eff.model == model], title=f"{self.study}: {model}")

    # ------------------------------------------------------------------ readout files
    def recorded_cells(self, kind: str) -> list[dict]:
        """One plan row per recorded cell of a measurement kind (conditions sharing the cell joined by '/')."""
        from mechsteer.report.records import recorded_cells

        return recorded_cells(self, kind)

    def gather(self, kind: str, name: str) -> pd.DataFrame:
        """The CSV `<kind>/<name>` every recorded cell of `kind` keeps, concatenated, with model, condition,
        measurement, seed and cell columns in front (empty when none): what readouts' report sections read."""
        from mechsteer.report.records import gather

        return gather(self, kind, name)

    def __repr__(self) -> str:
        return (
            f"Results({self.study!r}, profile={self.profile!r}, {len(self.recorded())}/"
            f"{len({c['hash'] for c in self.cells})} cells recorded, {self.output_dir})"
        )
