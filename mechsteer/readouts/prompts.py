"""Resolve a readout's prompt source (inline prompts or a task's problems) into problem records."""

from __future__ import annotations

from mechsteer.errors import MechsteerError
from mechsteer.spec.loader import LoadedStudy


def load_problems(opts: dict, study: LoadedStudy) -> list[dict]:
    """[{id, problem, answer|None}] for a readout's options (after compile: `limit` is resolved)."""
    if opts.get("prompts") is not None:
        return [{"id": i, "problem": p, "answer": None} for i, p in enumerate(opts["prompts"])]
    task, limit = opts["task"], opts.get("limit")
    if task == "mini":
        from mechsteer.eval.mini_task import generate_mini

        return generate_mini(split=opts.get("split", "test"), n=limit or 64)
    from mechsteer.eval.datasets import DatasetUnavailableError, load_benchmark

    data_dir = opts.get("data_dir")
    try:
        return load_benchmark(task, study.resolve_path(data_dir) if data_dir else None, limit=limit)
    except DatasetUnavailableError as e:
        raise MechsteerError(str(e)) from None
