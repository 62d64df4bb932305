"""Resolve a readout's prompt source (inline prompts or a task's problems) into problem records."""

from __future__ import annotations

from mechsteer.errors import MechsteerError


def load_problems(spec) -> list[dict]:
    """[{id, problem, answer|None}] for a compiled readout spec (a `PromptSource`: `limit` resolved and
    `data_dir` absolute by the compiler)."""
    if spec.prompts is not None:
        return [{"id": i, "problem": p, "answer": None} for i, p in enumerate(spec.prompts)]
    from mechsteer.eval.datasets import DatasetUnavailableError
    from mechsteer.eval.lm_eval_tasks import load_problems as load_task_problems

    shuffle = getattr(spec, "shuffle", None)
    try:
        if shuffle is None:
            return load_task_problems(spec.task, spec.data_dir, spec.limit, split=spec.split)
        rows = load_task_problems(spec.task, spec.data_dir, None, split=spec.split)
    except DatasetUnavailableError as e:
        raise MechsteerError(str(e)) from None
    return shuffled(rows, shuffle)[: spec.limit]


def shuffled(rows: list, seed: int) -> list:
    """`rows` in the order `datasets.Dataset.shuffle(seed=seed)` gives (a numpy `default_rng(seed)`
    permutation of the row indices), so a readout draws the same subset of a hub dataset as the authors."""
    import numpy as np

    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
