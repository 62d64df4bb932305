"""`mechsteer diff A B`: compare two output folders of the same study with paired statistics.

Reads recorded cells only (through `mechsteer.results.Results`). Models are matched by name (or paired when each
run has exactly one model, e.g. a Qwen run and a Llama run of one study under two profiles); conditions are
matched by name, and conditions expanded from a sweep over `layers` (e.g. `single_{layer}` giving single_27 on
a 28-layer model and single_31 on a 32-layer one) are matched by relative depth when the models' depths differ
(layer l of A <-> round(l * (n_B - 1) / (n_A - 1)) of B; depths from the cells' `model_provenance`).

For every matched (model, condition, measurement):
* `metrics`: each recorded metric's mean over seeds in A and B and `delta = B - A` (readout tables side by side);
* `paired`: for measurements with per-problem correctness (evaluation cells: lm-eval's per-problem
  `acc_lenient`/`acc_boxed`; `generate` readouts: `lenient_correct`/`boxed_correct` per problem id), statistics
  on the problems both runs answered. A problem's score is its mean over seeds and samples. `delta` is the mean
  paired difference, `ci_low`/`ci_high` a paired bootstrap 95% interval of it (problems resampled with
  replacement, numpy, seeded: the same seed gives the same interval), and `p_mcnemar` the exact McNemar test
  (two-sided binomial test on the discordant problems, `scipy.stats.binomtest`), computed when every score is
  one 0/1 outcome (one sample per problem and one seed); with averaged scores (avg@k, several seeds) it is left empty
  and only the bootstrap interval is given.
A folder diffed with itself gives zero deltas, a [0, 0] interval and p = 1.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mechsteer.errors import MechsteerError
from mechsteer.results import Results
from mechsteer.safe_text import markdown_table

PAIRED_METRICS = {"acc_lenient": "lenient_correct", "acc_boxed": "boxed_correct"}
"""Accuracy metric -> the per-sample field of a `generate` readout that holds it (eval samples use the metric's
own name)."""
PER_PROBLEM_KINDS = ("eval", "generate")


# ------------------------------------------------------------------------------------------- statistics


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(problems right only in A, problems right only in B, exact two-sided McNemar p). `a`, `b`: 0/1 arrays of
    the same problems. No discordant problem -> p = 1."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_b, n, 0.5, alternative="two-sided").pvalue)
    return only_a, only_b, p


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b - a): problems resampled with replacement (the pairing kept)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // d.size)  # bounded memory for large benchmarks
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        means[start : start + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------------- per-problem scores


def _problem_id(sample: dict, kind: str):
    if kind == "eval":
        doc = sample.get("doc")
        if isinstance(doc, dict) and doc.get("id") is not None:
            return str(doc["id"])
        return str(sample.get("doc_id"))
    return str(sample.get("id"))


def problem_scores(results: Results, hashes: list[str], kind: str, metric: str) -> tuple[pd.Series, bool]:
    """(per-problem score: the mean over the given cells' seeds and samples of one accuracy metric, whether every
    problem has exactly one 0/1 outcome). The series is empty when the cells hold no per-problem record."""
    field_name = metric if kind == "eval" else PAIRED_METRICS[metric]
    ids, values = [], []
    for h in hashes:
        for s in results.store.read_samples(h):
            v = s.get(field_name)
            if v is None or isinstance(v, (list, dict, str)):
                continue
            ids.append(_problem_id(s, kind))
            values.append(float(v))
    if not ids:
        return pd.Series(dtype=float), False
    g = pd.Series(values, index=ids, dtype=float).groupby(level=0, sort=False)
    means = g.mean()
    single = bool((g.size() == 1).all() and means.isin((0.0, 1.0)).all())
    return means, single


# ------------------------------------------------------------------------------------------- matching


def _n_layers(results: Results) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in results.recorded():
        if c["model"] in out:
            continue
        n = (results.store.read_record(c["hash"]).get("model_provenance") or {}).get("n_layers")
        if isinstance(n, int):
            out[c["model"]] = n
    return out


def _layer_templates(results: Results) -> list[tuple[str, re.Pattern, list[str]]]:
    """(template, regex, layer variables) of the study's sweep conditions that sweep over `layers`."""
    out = []
    for name, sweep in results.sweeps().items():
        layer_vars = [v for v, r in sweep.items() if r == "layers"]
        if layer_vars:
            out.append((name, template_regex(name, {v: r"-?\d+" for v in sweep}), layer_vars))
    return out


def template_regex(template: str, patterns: dict[str, str]) -> re.Pattern:
    """A regex matching the names a sweep template `single_{layer}` expands to, one named group per variable."""
    parts, seen, pos = [], set(), 0
    for m in re.finditer(r"\{([A-Za-z_]\w*)\}", template):  # plain `{var}` only (spec.sweeps' rule)
        var = m.group(1)
        parts.append(re.escape(template[pos : m.start()]))
        parts.append(f"(?P={var})" if var in seen else f"(?P<{var}>{patterns.get(var, '.+?')})")
        seen.add(var)
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(parts) + "$")


def relative_layer(layer: int, n_from: int, n_to: int) -> int:
    """The layer of an n_to-layer model at the relative depth of `layer` in an n_from-layer model."""
    if n_from == n_to or n_from <= 1:
        return layer
    return int(round(layer * (n_to - 1) / (n_from - 1)))


def match_conditions(
    conds_a: list[str],
    conds_b: list[str],
    n_a: int | None,
    n_b: int | None,
    templates: list[tuple[str, re.Pattern, list[str]]],
) -> list[tuple[str, str, str]]:
    """(condition in A, condition in B, how) pairs: by name, or for layer-sweep conditions by relative depth when
    the depths differ."""
    in_b = set(conds_b)
    out = []
    for ca in conds_a:
        if n_a and n_b and n_a != n_b:
            mapped = None
            for template, rx, layer_vars in templates:
                m = rx.match(ca)
                if m:
                    values = {
                        k: (str(relative_layer(int(v), n_a, n_b)) if k in layer_vars else v)
                        for k, v in m.groupdict().items()
                    }
                    mapped = template.format(**values)
                    break
            if mapped is not None:
                if mapped in in_b:
                    out.append((ca, mapped, f"relative depth ({n_a} -> {n_b} layers)"))
                continue
        if ca in in_b:
            out.append((ca, ca, "name"))
    return out


# ------------------------------------------------------------------------------------------- the result


@dataclass
class DiffResult:
    """What `diff` returns: the matching, the metric deltas and the paired statistics (DataFrames)."""

    a: str
    b: str
    study: str
    matches: pd.DataFrame
    """model_a, model_b, condition_a, condition_b, matched_by."""
    metrics: pd.DataFrame
    """model, condition, condition_b, measurement, kind, metric, a, b, delta, cells_a, cells_b."""
    paired: pd.DataFrame
    """model, condition, condition_b, measurement, kind, metric, n_shared, acc_a, acc_b, delta, ci_low, ci_high,
    right_only_a, right_only_b, p_mcnemar, cells_a, cells_b."""
    unmatched_a: list[str] = field(default_factory=list)
    unmatched_b: list[str] = field(default_factory=list)
    seed: int = 0
    n_boot: int = 10_000

    def __getitem__(self, column: str) -> pd.Series:
        """A column of the metrics table (`diff(a, b)["delta"]`, as the earlier DataFrame result allowed)."""
        return self.metrics[column]

    def readouts(self) -> pd.DataFrame:
        """Readout metrics side by side: rows (model, condition, measurement, metric), columns A, B, delta."""
        r = self.metrics[self.metrics.kind != "eval"]
        return r.set_index(["model", "condition", "measurement", "metric"])[["a", "b", "delta"]]

    # -------------------------------------------------------------- renderings
    def to_dict(self) -> dict:
        def records(df):
            return json.loads(df.to_json(orient="records"))

        return {
            "a": self.a,
            "b": self.b,
            "study": self.study,
            "seed": self.seed,
            "n_boot": self.n_boot,
            "matches": records(self.matches),
            "paired": records(self.paired),
            "metrics": records(self.metrics),
            "unmatched_a": self.unmatched_a,
            "unmatched_b": self.unmatched_b,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self) -> str:
        """The paired statistics (or the metric deltas when no measurement has per-problem records) as CSV."""
        return (self.paired if not self.paired.empty else self.metrics).to_csv(index=False)

    def to_markdown(self) -> str:
        lines = [f"# diff of `{self.study}`: B - A", "", f"- A: `{self.a}`", f"- B: `{self.b}`", ""]
        if not self.paired.empty:
            lines += [
                "## Paired accuracy on shared problems",
                "",
                f"delta = B - A in percentage points; 95% paired bootstrap CI ({self.n_boot} resamples, "
                f"seed {self.seed}); exact McNemar p on the discordant problems.",
                "",
                markdown_table(_paired_text(self.paired), index=False, disable_numparse=True),
                "",
            ]
        metrics = markdown_table(_metrics_text(self.metrics), index=False, disable_numparse=True)
        lines += ["## Metrics (mean over seeds)", "", metrics, ""]
        if self.unmatched_a or self.unmatched_b:
            lines += [f"Unmatched conditions: A {self.unmatched_a or '-'}; B {self.unmatched_b or '-'}.", ""]
        return "\n".join(lines)

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
        """rich Tables for the terminal: the paired statistics, then the readout metrics side by side (the
        cells' hash prefixes and the evaluation metrics' full list are in the files `write` makes)."""
        from rich.markup import escape
        from rich.table import Table

        out = []
        paired = _paired_text(self.paired)
        paired = paired.drop(columns=["cells A / B"]) if not paired.empty else paired
        readouts = _metrics_text(self.metrics[self.metrics.kind != "eval"])
        for title, df in (
            (f"{self.study}: paired accuracy, B - A (pp; 95% bootstrap CI; exact McNemar)", paired),
            (f"{self.study}: readout metrics, mean over seeds", readouts),
        ):
            if df.empty:
                continue
            t = Table(title=escape(title))
            for col in df.columns:
                t.add_column(
                    escape(str(col)),
                    justify="left" if col in ("model", "condition", "measurement", "metric") else "right",
                )
            for row in df.itertuples(index=False):  # names are user text, never rich markup
                t.add_row(*[escape(str(v)) for v in row])
            out.append(t)
        return out


def _paired_text(p: pd.DataFrame) -> pd.DataFrame:
    if p.empty:
        return p
    cond = [c if c == cb else f"{c} -> {cb}" for c, cb in zip(p.condition, p.condition_b, strict=True)]
    return pd.DataFrame(
        {
            "model": p.model,
            "condition": cond,
            "measurement": p.measurement,
            "metric": p.metric,
            "n": p.n_shared,
            "A %": [f"{v * 100:.1f}" for v in p.acc_a],
            "B %": [f"{v * 100:.1f}" for v in p.acc_b],
            "delta pp": [f"{v * 100:+.1f}" for v in p.delta],
            "95% CI": [f"[{lo * 100:+.1f}, {hi * 100:+.1f}]" for lo, hi in zip(p.ci_low, p.ci_high, strict=True)],
            "A only / B only": [
                f"{int(x)} / {int(y)}" if not pd.isna(x) else "-"
                for x, y in zip(p.right_only_a, p.right_only_b, strict=True)
            ],
            "McNemar p": ["-" if pd.isna(v) else f"{v:.3g}" for v in p.p_mcnemar],
            "cells A / B": [f"{x} / {y}" for x, y in zip(p.cells_a, p.cells_b, strict=True)],
        }
    )


def _metrics_text(m: pd.DataFrame) -> pd.DataFrame:
    if m.empty:
        return m
    cond = [c if c == cb else f"{c} -> {cb}" for c, cb in zip(m.condition, m.condition_b, strict=True)]
    return pd.DataFrame(
        {
            "model": m.model,
            "condition": cond,
            "measurement": m.measurement,
            "metric": m.metric,
            "A": [_num(v, "") for v in m.a],
            "B": [_num(v, "") for v in m.b],
            "delta": [_num(v, "+") for v in m.delta],
        }
    )


def _num(v: float, sign: str) -> str:
    return "-" if pd.isna(v) else f"{v:{sign}.4g}"


# ------------------------------------------------------------------------------------------- diff


def _load(x) -> Results:
    return x if isinstance(x, Results) else Results.load(x)


def _match_models(a: Results, b: Results) -> list[tuple[str, str]]:
    ma = list(dict.fromkeys(c["model"] for c in a.recorded()))
    mb = list(dict.fromkeys(c["model"] for c in b.recorded()))
    shared = [m for m in ma if m in mb]
    if shared:
        return [(m, m) for m in shared]
    if len(ma) == 1 and len(mb) == 1:
        return [(ma[0], mb[0])]
    raise MechsteerError(
        f"{a.output_dir} (models {ma}) and {b.output_dir} (models {mb}) share no model name",
        hint="diff runs whose models have the same names, or runs of one model each",
    )


def _cells(results: Results, model: str, condition: str) -> dict[str, tuple[str, list[str]]]:
    """measurement -> (kind, cell hashes over seeds) of one model and condition."""
    out: dict[str, tuple[str, list[str]]] = {}
    for c in results.recorded():
        if c["model"] == model and c["condition"] == condition:
            m = c["measurement"].split(":", 1)[1]
            out.setdefault(m, (c["kind"], []))[1].append(c["hash"])
    return out


def diff(
    a: Results | str | Path,
    b: Results | str | Path,
    *,
    seed: int = 0,
    n_boot: int = 10_000,
    metrics: tuple[str, ...] = ("acc_lenient", "acc_boxed"),
) -> DiffResult:
    """Compare two output folders (or Results) of the same study: B - A (see the module docstring)."""
    ra, rb = _load(a), _load(b)
    if ra.study != rb.study:
        raise MechsteerError(
            f"cannot diff runs of different studies: {ra.study!r} ({ra.output_dir}) vs {rb.study!r} ({rb.output_dir})",
            hint="diff two output folders of the same study",
        )
    depth_a, depth_b = _n_layers(ra), _n_layers(rb)
    templates = _layer_templates(ra) or _layer_templates(rb)
    la, lb = ra.table(), rb.table()
    match_rows, metric_rows, paired_rows = [], [], []
    unmatched_a: list[str] = []
    matched_b: set[str] = set()
    all_b: list[str] = []
    per_problem_pairs = 0
    for model_a, model_b in _match_models(ra, rb):
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
            cells_a, cells_b = _cells(ra, model_a, ca), _cells(rb, model_b, cb)
            for meas in [m for m in cells_a if m in cells_b]:
                kind, ha = cells_a[meas]
                hb = cells_b[meas][1]
                ta = la[(la.model == model_a) & (la.condition == ca) & (la.measurement == meas)]
                tb = lb[(lb.model == model_b) & (lb.condition == cb) & (lb.measurement == meas)]
                means = pd.concat(
                    [
                        ta.groupby("metric")["value"].mean().rename("a"),
                        tb.groupby("metric")["value"].mean().rename("b"),
                    ],
                    axis=1,
                    join="inner",
                )
                short_a, short_b = _short(ha), _short(hb)
                for metric, row in means.iterrows():
                    metric_rows.append(
                        {
                            "model": model_a,
                            "condition": ca,
                            "condition_b": cb,
                            "measurement": meas,
                            "kind": kind,
                            "metric": metric,
                            "a": row.a,
                            "b": row.b,
                            "delta": row.b - row.a,
                            "cells_a": short_a,
                            "cells_b": short_b,
                        }
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
                    lo, hi = paired_bootstrap_ci(xa, xb, n_boot=n_boot, seed=seed)
                    only_a, only_b, p = mcnemar_exact(xa, xb) if single_a and single_b else (None, None, None)
                    paired_rows.append(
                        {
                            "model": model_a,
                            "condition": ca,
                            "condition_b": cb,
                            "measurement": meas,
                            "kind": kind,
                            "metric": metric,
                            "n_shared": len(shared),
                            "acc_a": float(xa.mean()),
                            "acc_b": float(xb.mean()),
                            "delta": float((xb - xa).mean()),
                            "ci_low": lo,
                            "ci_high": hi,
                            "right_only_a": only_a,
                            "right_only_b": only_b,
                            "p_mcnemar": p,
                            "cells_a": short_a,
                            "cells_b": short_b,
                        }
                    )
    metrics_df = pd.DataFrame(
        metric_rows,
        columns=[
            "model",
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
        ],
    )
    if metrics_df.empty:
        raise MechsteerError(
            f"{ra.output_dir} and {rb.output_dir} share no recorded (model, condition, measurement)",
            hint="run both with the same conditions and measurements",
        )
    if per_problem_pairs and not paired_rows:
        raise MechsteerError(
            f"{ra.output_dir} and {rb.output_dir} share no problems: their per-problem records "
            "name different problems, so no paired statistic exists",
            hint="run both on the same benchmark slice (same task, limit and data)",
        )
    paired_df = pd.DataFrame(
        paired_rows,
        columns=[
            "model",
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
        ],
    )
    return DiffResult(
        a=str(ra.output_dir),
        b=str(rb.output_dir),
        study=ra.study,
        matches=pd.DataFrame(match_rows, columns=["model_a", "model_b", "condition_a", "condition_b", "matched_by"]),
        metrics=metrics_df,
        paired=paired_df,
        unmatched_a=unmatched_a,
        unmatched_b=[c for c in dict.fromkeys(all_b) if c not in matched_b],
        seed=seed,
        n_boot=n_boot,
    )


def _short(hashes: list[str]) -> str:
    return " ".join(sorted({h[:12] for h in hashes}))


__all__ = ["DiffResult", "diff", "mcnemar_exact", "paired_bootstrap_ci", "match_conditions", "relative_layer"]
