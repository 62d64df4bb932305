"""`mechsteer plan FILE -p PROFILE --estimate` and `mechsteer plan --estimate --all`: the GPU estimate, rendered
for the terminal (tables of cell groups, the totals, the rates' sources) or as JSON (`mechsteer.engine.estimate`
computes it)."""

from __future__ import annotations

import json
import math

from rich.markup import escape
from rich.table import Table


def tokens(n: float) -> str:
    """A token count in k / M / B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def hours(h: float) -> str:
    """GPU hours (two decimals below 10 hours; seconds below a minute's worth of hundredths)."""
    if not math.isfinite(h):
        return "?"
    if h < 0.01:
        return f"{h * 3600:.0f} s" if h > 0 else "0"
    return f"{h:.2f}" if h < 10 else f"{h:,.0f}"


def render_plan(console, plan, cells, sources: dict, notes: list, table, gpu: str) -> None:
    """The estimate of one plan: a table per cell group (model x measurement), the total, the sources."""
    from mechsteer.engine.estimate import group_table

    groups = group_table(cells)
    multi = groups.model.nunique() > 1 if not groups.empty else False
    t = Table(title=escape(f"{plan.study}" + (f" [{plan.profile}]" if plan.profile else "") + f": estimate on {gpu}"))
    t.add_column("model / measurement" if multi else "measurement", no_wrap=True)
    for col in ("cells", "seqs", "gen.", "gen. cap", "forced", "GPU h", "cap", "vLLM"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in groups.itertuples():
        name = (f"{r.model} / " if multi else "") + r.measurement + (" (vllm)" if r.backend == "vllm" else "")
        t.add_row(
            escape(name),
            str(r.cells),
            tokens(r.sequences),
            tokens(r.generated),
            tokens(r.generated_cap),
            tokens(r.scored),
            hours(r.gpu_hours),
            hours(r.gpu_hours_cap),
            hours(r.gpu_hours_vllm),
        )
    if not groups.empty:
        t.add_row(
            "total",
            str(int(groups.cells.sum())),
            tokens(groups.sequences.sum()),
            tokens(groups.generated.sum()),
            tokens(groups.generated_cap.sum()),
            tokens(groups.scored.sum()),
            hours(groups.gpu_hours.sum()),
            hours(groups.gpu_hours_cap.sum()),
            hours(groups.gpu_hours_vllm.sum()),
            style="bold",
        )
    console.print(t)
    _footer(console, sources, notes, table, gpu)


def _footer(console, sources: dict, notes: list, table, gpu: str) -> None:
    console.print(
        escape(
            f"GPU: {table.gpus[gpu].name} ({gpu}). seqs: sampled sequences; gen.: generated tokens as expected "
            "(mean completion lengths), gen. cap: every sample run to its max_new_tokens; forced: teacher-forced "
            "tokens; GPU h: GPU hours on one GPU as planned, cap: at the cap, vLLM: with the evaluation cells a "
            "bias-compiled checkpoint can run (and vector-setup rollouts) on vLLM."
        ),
        soft_wrap=True,
    )
    from mechsteer.engine.estimate import sources_by_text

    for src, used in sources_by_text(sources):
        console.print(escape(f"rates for {', '.join(used)}: {src}"), soft_wrap=True)
    for what in ("prompt_tokens", "completion_tokens"):
        a = table.assumptions.get(what, {})
        console.print(escape(f"{what}: {a.get('source', '?')}"), soft_wrap=True)
    for note in notes:
        console.print(escape(f"note: {note}"), soft_wrap=True)


def plan_json(plan, cells, sources: dict, notes: list, table, gpu: str) -> str:
    """The estimate of one plan as JSON (groups, total, cells, sources)."""
    from mechsteer.engine.estimate import NUMBERS, group_table

    groups = group_table(cells)
    doc = {
        "study": plan.study,
        "profile": plan.profile,
        "gpu": gpu,
        "gpu_name": table.gpus[gpu].name,
        "tables": table.files,
        "groups": json.loads(groups.to_json(orient="records")) if not groups.empty else [],
        "total": {k: float(cells[k].sum()) if not cells.empty else 0.0 for k in NUMBERS},
        "cells": json.loads(cells.to_json(orient="records")) if not cells.empty else [],
        "sources": sources,
        "assumptions": table.assumptions,
        "notes": notes,
    }
    return json.dumps(doc, indent=1)


def _short(model_id: str) -> str:
    """A model id without its organisation, shortened (Qwen2.5-Math-7B -> Q-Math-7B)."""
    name = model_id.rsplit("/", 1)[-1]
    return name.replace("Qwen2.5-", "Q").replace("Llama-3.1-", "L").replace("-Instruct", "-I").replace("Math-", "M")


def render_paper(console, est: dict, table) -> None:
    """The whole paper: one row per study profile and training run, the totals against the goal, what
    dominates."""
    t = Table(title=escape(f"The whole paper on {est['gpu_name']} ({est['gpu']})"))
    for col in ("study or training file", "model(s)", "cells", "gen.", "GPU h", "cap", "vLLM"):
        t.add_column(col, justify="left" if col in ("study or training file", "model(s)") else "right", no_wrap=True)
    for i in est["items"]:
        name = i["file"].rsplit("/", 1)[-1].removesuffix(".yaml") + (f" -p {i['profile']}" if i["profile"] else "")
        count = str(i["cells"]) if i["kind"] == "study" else f"{i['runs']} run" + ("s" if i["runs"] > 1 else "")
        t.add_row(
            escape(name),
            escape(", ".join(_short(m) for m in i["models"])),
            count,
            tokens(i["generated"]),
            hours(i["gpu_hours"]),
            hours(i["gpu_hours_cap"]),
            hours(i["gpu_hours_vllm"]),
        )
    tot = est["total"]
    t.add_row(
        "total",
        "",
        "",
        "",
        hours(tot["gpu_hours"]),
        hours(tot["gpu_hours_cap"]),
        hours(tot["gpu_hours_vllm"]),
        style="bold",
    )
    console.print(t)
    goal = est["goal"]
    budget = goal["gpu_hours"]
    for key, what in (("gpu_hours", "as planned"), ("gpu_hours_vllm", "with vLLM where it can run")):
        verdict = "fits" if est["fits"][key] else "does NOT fit"
        console.print(
            escape(
                f"goal ({goal.get('what', '')}: {goal.get('gpus')} GPUs x {goal.get('hours')} h = {budget:.0f} GPU h): "
                f"{what}, {tot[key]:,.0f} GPU h expected = {tot[key] / budget:.1f}x the budget; the design {verdict}"
            ),
            soft_wrap=True,
        )
    share = ", ".join(
        f"{d['file'].rsplit('/', 1)[-1]}{' -p ' + d['profile'] if d['profile'] else ''} "
        f"({d['gpu_hours']:,.0f} h, {100 * d['gpu_hours'] / max(tot['gpu_hours'], 1e-9):.0f}%)"
        for d in est["dominant"]
    )
    console.print(escape(f"dominated by: {share}"), soft_wrap=True)
    _footer(console, est["sources"], est["notes"], table, est["gpu"])
