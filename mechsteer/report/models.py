"""The report's "Models and intervention sites" section: which model each entry of the run is (id, architecture,
depth and width, block layout, from its cells' provenance), where each intervention kind of its recorded
conditions acts on that model (each kind's own `site` sentence for the model's block layout, so the report of
a Gemma run says that its `add` sits after post_feedforward_layernorm's residual add and is not a down_proj
bias), and, for a run of several models, their headline accuracies side by side.
"""

from __future__ import annotations

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from mechsteer.report.effects import pct
from mechsteer.safe_text import markdown_table
from mechsteer.spec.layouts import layout_of

MAX_LISTED = 6
"""Conditions named per site line before the rest are counted."""


def _intervention_adapter() -> TypeAdapter:
    from mechsteer.spec.study import InterventionSpec

    return TypeAdapter(list[InterventionSpec])  # type: ignore[valid-type]


def model_facts(results) -> dict[str, dict]:
    """model -> its recorded provenance (id, architecture, n_layers, d_model, ...) from its first recorded cell."""
    out: dict[str, dict] = {}
    for c in results.recorded():
        if c["model"] not in out:
            out[c["model"]] = results.store.read_record(c["hash"]).get("model_provenance") or {}
    return out


def intervention_sites(results) -> pd.DataFrame:
    """One row per (model, intervention kind, site sentence): the conditions that use it there. The sentence is
    the kind's own (`InterventionBase.site`) for the block layout of the architecture the cells recorded."""
    facts = model_facts(results)
    adapter = _intervention_adapter()
    rows: dict[tuple[str, str, str], list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for c in results.recorded():
        key = (c["model"], c["condition"])
        if key in seen:
            continue
        seen.add(key)
        raw = results.store.read_record(c["hash"]).get("interventions") or []
        try:
            specs = adapter.validate_python(raw)
        except ValidationError:
            continue  # a cell recorded by another version: its kinds are described where they are known
        layout = layout_of(facts.get(c["model"], {}).get("architecture"))
        for iv in specs:
            conditions = rows.setdefault((c["model"], iv.kind, iv.site(layout)), [])
            if c["condition"] not in conditions:
                conditions.append(c["condition"])
    return pd.DataFrame(
        [{"model": m, "kind": k, "site": s, "conditions": conds} for (m, k, s), conds in rows.items()],
        columns=["model", "kind", "site", "conditions"],
    )


def _conditions_text(conditions: list[str]) -> str:
    shown = ", ".join(f"`{c}`" for c in conditions[:MAX_LISTED])
    more = len(conditions) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _layer_sweep_expansions(results) -> set[str]:
    """Conditions expanded from a sweep over `layers` (their numbers mean different depths in different
    models; the sweep plots and `mechsteer diff --models` match them by relative depth)."""
    from mechsteer.comparison.matching import layer_templates

    templates = layer_templates(results)
    return {c for c in results.conditions if any(rx.match(c) for _, rx, _ in templates)}


def side_by_side(results) -> pd.DataFrame:
    """Rows = (measurement, condition), columns = models: the headline rate with its 95% interval, for the
    conditions every model ran (layer-sweep expansions left out)."""
    eff = results.effects()
    if eff.empty:
        return pd.DataFrame()
    skip = _layer_sweep_expansions(results)
    eff = eff[~eff.condition.isin(skip)]
    models = [m for m in results.models if m in set(eff.model)]
    rows = []
    for (meas, cond), part in eff.groupby(["measurement", "condition"], sort=False):
        by_model = {r.model: r for r in part.itertuples()}
        if len(by_model) < 2:
            continue
        row = {"measurement": meas, "condition": cond}
        for m in models:
            r = by_model.get(m)
            row[m] = "-" if r is None else f"{pct(r.value)} [{pct(r.low)}, {pct(r.high)}]"
        rows.append(row)
    return pd.DataFrame(rows, columns=["measurement", "condition", *models])


def models_section(results) -> list[str]:
    """Markdown lines: the models table, the intervention sites per model, and (several models) the headline
    side by side with the command that gives their paired differences."""
    facts = model_facts(results)
    if not facts:
        return []
    table = pd.DataFrame(
        [
            {
                "model": m,
                "id": f.get("id", "?"),
                "architecture": f.get("architecture", "?"),
                "blocks x width": f"{f.get('n_layers', '?')} x {f.get('d_model', '?')}",
                "block layout": getattr(layout_of(f.get("architecture")), "name", "unknown"),
                "dtype": f.get("dtype", "?"),
            }
            for m, f in facts.items()
        ]
    )
    lines = ["## Models and intervention sites", "", markdown_table(table, index=False), ""]
    layouts = {layout.name: layout for f in facts.values() if (layout := layout_of(f.get("architecture")))}
    lines += [f"Block layout `{name}`: `{layout.formula}`." for name, layout in layouts.items()]
    lines += [""] if layouts else []
    sites = intervention_sites(results)
    if not sites.empty:
        lines += [
            "Intervention sites: where each kind of the recorded conditions acts on each model (the kind's own "
            "description for the model's block layout).",
            "",
        ]
        for m in facts:
            lines += [
                f"- `{m}`, `{r.kind}` ({_conditions_text(r.conditions)}): {r.site}"
                for r in sites[sites.model == m].itertuples()
            ]
        lines.append("")
    if len(facts) > 1:
        sbs = side_by_side(results)
        if not sbs.empty:
            metric = results.headline()
            names = list(facts)
            lines += [
                f"### The models side by side ({metric}, %)",
                "",
                f"Each model's rate with its 95% interval (as in the effects below); layer sweeps are left out "
                f"(block numbers mean different depths). Paired differences between two models on the shared "
                f"problems, with layer sweeps matched by relative depth: `mechsteer diff {results.output_dir} "
                f"--models {names[0]} {names[1]}`.",
                "",
                markdown_table(sbs, index=False, disable_numparse=True),
                "",
            ]
    return lines


__all__ = ["intervention_sites", "model_facts", "models_section", "side_by_side"]
