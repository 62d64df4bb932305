"""Output folders written directly through `CellStore` with known per-problem outcomes, for the diff and report
tests: a plan.json as `mechsteer run` writes it and one cell per (model, condition, measurement, seed), with
eval cells holding lm-eval-style sample logs (`doc.id`, per-problem `acc_lenient`/`acc_boxed`) and `generate`
readout cells holding `id`/`lenient_correct`/`boxed_correct` records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mechsteer.engine.store import CellStore


def eval_samples(correct: list[int], boxed: list[int] | None = None, prefix: str = "p") -> list[dict]:
    boxed = boxed if boxed is not None else [0] * len(correct)
    return [{"doc_id": i, "doc": {"id": f"{prefix}{i}", "problem": "?", "answer": "1"}, "acc_lenient": float(c),
             "acc_boxed": float(b), "resps": [["..."]]} for i, (c, b) in enumerate(zip(correct, boxed, strict=True))]


def generate_samples(correct: list[int], prefix: str = "p") -> list[dict]:
    return [{"id": f"{prefix}{i}", "sample": 0, "completion": "...", "n_tokens": 10, "finished": True,
             "first_token": "To", "lenient_correct": bool(c), "boxed_correct": False, "has_box": False}
            for i, c in enumerate(correct)]


def write_run(root: Path, *, study: str, cells: list[dict], n_layers: dict[str, int] | None = None,
              conditions_spec: dict | None = None, baseline: str | None = "base",
              evaluation: dict | None = None, profile: str | None = None) -> Path:
    """`cells`: dicts with model, condition, measurement (`eval:mini`, `readout:gen`), kind, seed, metrics,
    samples. Returns the output folder."""
    store = CellStore(root / "cells")
    rows, conditions, models = [], [], []
    for c in cells:
        key = json.dumps([str(root), c["model"], c["condition"], c["measurement"], c["seed"]])
        h = hashlib.sha256(key.encode()).hexdigest()
        rows.append({"hash": h, "model": c["model"], "condition": c["condition"], "measurement": c["measurement"],
                     "kind": c["kind"], "seed": c["seed"], "backend": "hf"})
        conditions += [c["condition"]] if c["condition"] not in conditions else []
        models += [c["model"]] if c["model"] not in models else []
        record = {"hash": h, "study": study, "model": c["model"], "conditions": [c["condition"]],
                  "measurement": c["measurement"], "seed": c["seed"],
                  "model_provenance": {"name": c["model"], "n_layers": (n_layers or {}).get(c["model"], 4)},
                  "resolved_spec": {"name": study, "conditions": conditions_spec or {}}}
        store.write(h, record, c["metrics"], c.get("samples", []), c.get("files"))
    summary = {"format": "mechsteer.plan/1", "study": study, "profile": profile, "description": None,
               "models": models, "conditions": conditions, "baseline": baseline, "evaluation": evaluation,
               "spec_file": None, "spec_hash": "x", "cells": rows}
    (root / "plan.json").write_text(json.dumps(summary))
    return root


def eval_cell(model: str, condition: str, correct: list[int], *, seed: int = 0, task: str = "mini",
              boxed: list[int] | None = None, prefix: str = "p") -> dict:
    samples = eval_samples(correct, boxed, prefix)
    acc = sum(correct) / len(correct)
    acc_b = sum(boxed) / len(boxed) if boxed else 0.0
    return {"model": model, "condition": condition, "measurement": f"eval:{task}", "kind": "eval", "seed": seed,
            "metrics": {"acc_lenient": acc, "acc_boxed": acc_b, "n_problems": float(len(correct))},
            "samples": samples}


def generate_cell(model: str, condition: str, correct: list[int], *, seed: int = 0, name: str = "gen",
                  prefix: str = "p") -> dict:
    return {"model": model, "condition": condition, "measurement": f"readout:{name}", "kind": "generate",
            "seed": seed, "metrics": {"acc_lenient": sum(correct) / len(correct), "mean_len": 10.0 + seed,
                                      "n": float(len(correct))},
            "samples": generate_samples(correct, prefix)}
