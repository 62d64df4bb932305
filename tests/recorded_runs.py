"""Output folders written directly through `CellStore` with known per-problem outcomes, for the diff and report
tests: a plan.json as `mechsteer run` writes it and one cell per (model, condition, measurement, seed), with
eval cells holding lm-eval-style sample logs (`doc.id`, per-problem `acc_lenient`/`acc_boxed`) and `generate`
readout cells holding `id`/`lenient_correct`/`boxed_correct` records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mechsteer.engine.plan import PLAN_FORMAT
from mechsteer.engine.store import CellStore


def eval_samples(correct: list[int], boxed: list[int] | None = None, prefix: str = "p") -> list[dict]:
    boxed = boxed if boxed is not None else [0] * len(correct)
    return [
        {
            "doc_id": i,
            "doc": {"id": f"{prefix}{i}", "problem": "?", "answer": "1"},
            "acc_lenient": float(c),
            "acc_boxed": float(b),
            "resps": [["..."]],
        }
        for i, (c, b) in enumerate(zip(correct, boxed, strict=True))
    ]


def generate_samples(correct: list[int], prefix: str = "p") -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "sample": 0,
            "completion": "...",
            "n_tokens": 10,
            "finished": True,
            "first_token": "To",
            "lenient_correct": bool(c),
            "boxed_correct": False,
            "has_box": False,
        }
        for i, c in enumerate(correct)
    ]


def _controls(conditions_spec: dict, default: str | None, conditions: list[str]) -> dict[str, str]:
    """What `compile_study` writes as plan.json's `controls` for these conditions (sweeps over listed values
    only): each condition's `control:` (a sweep's template filled per expansion), else `default`."""
    out = {}
    for name, body in conditions_spec.items():
        control = body.get("control") if isinstance(body, dict) else None
        if isinstance(body, dict) and "sweep" in body:
            var, values = next(iter(body["sweep"].items()))
            pairs = [
                (name.replace("{" + var + "}", str(v)), (control or default or "").replace("{" + var + "}", str(v)))
                for v in values
            ]
        else:
            pairs = [(name, control or default or "")]
        out.update((c, ctl) for c, ctl in pairs if ctl and ctl != c)
    for c in conditions:  # conditions given only as recorded cells
        if c not in out and default and default != c:
            out[c] = default
    return {c: ctl for c, ctl in out.items() if ctl in conditions}


def write_run(
    root: Path,
    *,
    study: str,
    cells: list[dict],
    n_layers: dict[str, int] | None = None,
    conditions_spec: dict | None = None,
    baseline: str | None = "base",
    evaluation: dict | None = None,
    profile: str | None = None,
    spec_extra: dict | None = None,
    architectures: dict[str, str] | None = None,
) -> Path:
    """`cells`: dicts with model, condition, measurement (`eval:mini`, `readout:gen`), kind, seed, metrics,
    samples; `conditions_spec`: the study's `conditions:` (its sweep templates and the conditions' controls go
    into plan.json, as `compile_study` puts them); `spec_extra`: more plan.json fields (e.g. `report`);
    `architectures`: model -> the architecture its cells' provenance records. A cell dict's optional
    `interventions` (dicts, as a condition lists them) is recorded as the run records it. Returns the output
    folder."""
    store = CellStore(root / "cells")
    rows, conditions, models = [], [], []
    for c in cells:
        key = json.dumps([str(root), c["model"], c["condition"], c["measurement"], c["seed"]])
        h = hashlib.sha256(key.encode()).hexdigest()
        rows.append(
            {
                "hash": h,
                "model": c["model"],
                "condition": c["condition"],
                "measurement": c["measurement"],
                "kind": c["kind"],
                "seed": c["seed"],
                "backend": "hf",
            }
        )
        conditions += [c["condition"]] if c["condition"] not in conditions else []
        models += [c["model"]] if c["model"] not in models else []
        record = {
            "hash": h,
            "study": study,
            "model": c["model"],
            "conditions": [c["condition"]],
            "measurement": c["measurement"],
            "seed": c["seed"],
            "model_provenance": {
                "name": c["model"],
                "n_layers": (n_layers or {}).get(c["model"], 4),
                **({"architecture": architectures[c["model"]]} if c["model"] in (architectures or {}) else {}),
            },
            "measurement_spec": {"kind": c["kind"]},
            **({"interventions": c["interventions"]} if "interventions" in c else {}),
        }
        store.write(h, record, c["metrics"], c.get("samples", []), c.get("files"))
    sweeps = {
        name: body["sweep"]
        for name, body in (conditions_spec or {}).items()
        if isinstance(body, dict) and "sweep" in body
    }
    summary = {
        "format": PLAN_FORMAT,
        "study": study,
        "profile": profile,
        "description": None,
        "models": models,
        "conditions": conditions,
        "baseline": baseline,
        "evaluation": evaluation,
        "sweeps": sweeps,
        "controls": _controls(conditions_spec or {}, (evaluation or {}).get("control"), conditions),
        "spec_file": None,
        "spec_hash": "x",
        "cells": rows,
        **(spec_extra or {}),
    }
    (root / "plan.json").write_text(json.dumps(summary))
    return root


def eval_cell(
    model: str,
    condition: str,
    correct: list[int],
    *,
    seed: int = 0,
    task: str = "mini",
    boxed: list[int] | None = None,
    prefix: str = "p",
) -> dict:
    samples = eval_samples(correct, boxed, prefix)
    acc = sum(correct) / len(correct)
    acc_b = sum(boxed) / len(boxed) if boxed else 0.0
    return {
        "model": model,
        "condition": condition,
        "measurement": f"eval:{task}",
        "kind": "eval",
        "seed": seed,
        "metrics": {"acc_lenient": acc, "acc_boxed": acc_b, "n_problems": float(len(correct))},
        "samples": samples,
    }


def generate_cell(
    model: str, condition: str, correct: list[int], *, seed: int = 0, name: str = "gen", prefix: str = "p"
) -> dict:
    return {
        "model": model,
        "condition": condition,
        "measurement": f"readout:{name}",
        "kind": "generate",
        "seed": seed,
        "metrics": {"acc_lenient": sum(correct) / len(correct), "mean_len": 10.0 + seed, "n": float(len(correct))},
        "samples": generate_samples(correct, prefix),
    }


PAPER_SHAPES_SPEC = {
    "base": [],
    "all_layers": [],
    "single_{layer}": {"sweep": {"layer": "layers"}, "interventions": []},
    "q_head_{head}": {"sweep": {"head": "query_heads"}, "interventions": []},
    "pair_{i}_{j}": {"sweep": {"i": "layers", "j": "layers"}, "where": ["i < j"], "interventions": []},
}
# accuracy (out of 8 problems) per condition and seed
PAPER_SHAPES_ACC = {
    "base": (2, 2),
    "all_layers": (6, 6),
    "single_0": (3, 5),
    "single_1": (4, 4),
    "single_2": (2, 4),
    "single_3": (7, 7),
    "q_head_0": (1, 3),
    "q_head_1": (5, 5),
    "pair_0_1": (4, 4),
    "pair_0_2": (6, 6),
    "pair_1_2": (1, 1),
}


def _correct(k: int) -> list[int]:
    return [1] * k + [0] * (8 - k)


def paper_shapes_run(root, reference="all_layers", token_html: str | None = None):
    """A study with a baseline, a reference, single-layer, head and pair sweeps (two seeds, 8 problems);
    `token_html` is recorded as a coloured-token sample file in the single_1 seed-0 cell."""
    cells = [
        eval_cell("m", cond, _correct(k), seed=s) for cond, ks in PAPER_SHAPES_ACC.items() for s, k in enumerate(ks)
    ]
    if token_html is not None:
        cells[next(i for i, c in enumerate(cells) if c["condition"] == "single_1")]["files"] = {
            "tokens/sample_0.html": token_html.encode()
        }
    ev = {"tasks": ["mini"], "protocol": "paper", "seeds": [0, 1], "reference": reference}
    return write_run(root, study="paper_shapes", cells=cells, conditions_spec=PAPER_SHAPES_SPEC, evaluation=ev)


def record_plan(plan, outcomes: dict[tuple[str, str], list[int]], finished: str = "2026-01-02T03:04:05+00:00") -> Path:
    """Write every cell of a compiled `plan` as `mechsteer run` would have, without loading a model: fresh
    records (the plan's code fingerprint, measurement spec and timing), per-problem samples for evaluation and
    `generate` cells from `outcomes[(condition, measurement name)]` (0/1 per problem; conditions missing there
    get all zeros), empty records for other readouts, and plan.json. Returns the output folder."""
    store = CellStore(plan.cells_dir)
    for cell in plan.unique_cells():
        meas = cell.measurement.id.split(":", 1)[1]
        correct = next((outcomes[(c, meas)] for c in plan.conditions_of(cell.hash) if (c, meas) in outcomes), [0] * 8)
        if cell.measurement.kind == "eval":
            built = eval_cell(cell.model, cell.condition, correct, task=meas)
        elif cell.measurement.kind == "generate":
            built = generate_cell(cell.model, cell.condition, correct, name=meas)
        else:
            built = {"metrics": {"n": 8.0, "p(To)": 0.5, "entropy": 1.0}, "samples": []}
        record = {
            "hash": cell.hash,
            "study": plan.study,
            "profile": plan.profile,
            "model": cell.model,
            "conditions": plan.conditions_of(cell.hash),
            "measurement": cell.measurement.id,
            "seed": cell.seed,
            "code": cell.code,
            "measurement_spec": cell.measurement.spec.model_dump(mode="json"),
            "model_provenance": {"name": cell.model, "n_layers": 30},
            "timing": {"started": finished, "finished": finished, "seconds": 1.0},
        }
        store.write(cell.hash, record, built["metrics"], built["samples"])
    plan.write_summary()
    return plan.output_dir
