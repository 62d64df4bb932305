"""Per-problem scores of recorded cells: what every paired statistic (`diff`, the report's effects) is computed
on.

Measurements with per-problem correctness: evaluation cells (lm-eval's per-problem `acc_lenient`/`acc_boxed`
in each sample log, the problem named by `doc.id` or else `doc_id`) and `generate` readouts
(`lenient_correct`/`boxed_correct` per record, the problem named by `id`). A problem's score is its mean over
the given cells' seeds and samples.
"""

from __future__ import annotations

import pandas as pd

PAIRED_METRICS = {"acc_lenient": "lenient_correct", "acc_boxed": "boxed_correct"}
"""Accuracy metric -> the per-sample field of a `generate` readout that holds it (eval samples use the metric's
own name)."""
PER_PROBLEM_KINDS = ("eval", "generate")
"""Measurement kinds whose cells hold per-problem correctness."""


def problem_id(sample: dict, kind: str) -> str:
    """The problem a sample record answers (its benchmark id where it has one)."""
    if kind == "eval":
        doc = sample.get("doc")
        if isinstance(doc, dict) and doc.get("id") is not None:
            return str(doc["id"])
        return str(sample.get("doc_id"))
    return str(sample.get("id"))


def problem_scores(results, hashes: list[str], kind: str, metric: str) -> tuple[pd.Series, bool]:
    """(per-problem score: the mean over the given cells' seeds and samples of one accuracy metric, whether every
    problem has exactly one 0/1 outcome). The series is empty when the cells hold no per-problem record.
    `results`: a `mechsteer.results.Results` (its cell store is read)."""
    if kind not in PER_PROBLEM_KINDS or metric not in PAIRED_METRICS:
        return pd.Series(dtype=float), False
    field_name = metric if kind == "eval" else PAIRED_METRICS[metric]
    ids, values = [], []
    for h in hashes:
        for s in results.store.read_samples(h):
            v = s.get(field_name)
            if v is None or isinstance(v, (list, dict, str)):
                continue
            ids.append(problem_id(s, kind))
            values.append(float(v))
    if not ids:
        return pd.Series(dtype=float), False
    g = pd.Series(values, index=ids, dtype=float).groupby(level=0, sort=False)
    means = g.mean()
    single = bool((g.size() == 1).all() and means.isin((0.0, 1.0)).all())
    return means, single


def cells_of(results, model: str, condition: str) -> dict[str, tuple[str, list[str]]]:
    """measurement -> (kind, cell hashes over seeds) of one model and condition's recorded cells."""
    out: dict[str, tuple[str, list[str]]] = {}
    for c in results.recorded():
        if c["model"] == model and c["condition"] == condition:
            m = c["measurement"].split(":", 1)[1]
            out.setdefault(m, (c["kind"], []))[1].append(c["hash"])
    return out


def short(hashes: list[str]) -> str:
    """The cells' 12-character hash prefixes, sorted, space-separated."""
    return " ".join(sorted({h[:12] for h in hashes}))


__all__ = ["PAIRED_METRICS", "PER_PROBLEM_KINDS", "cells_of", "problem_id", "problem_scores", "short"]
