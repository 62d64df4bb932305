"""The rehearsal's stand-in benchmark files: every benchmark and prompt set mechsteer knows, written from the
bundled `mini` task's problems in each one's own format, read back by the real loaders (never ../shared)."""

from __future__ import annotations

from mechsteer.engine.rehearsal import DATA_ROWS, write_stand_in_data
from mechsteer.eval.datasets import BENCHMARKS, PROMPT_SETS, load_benchmark
from mechsteer.eval.mini_task import generate_mini


def test_every_task_loads_the_mini_problems(tmp_path):
    folder = write_stand_in_data(tmp_path / "data")
    for names, split in ((BENCHMARKS, "test"), (PROMPT_SETS, "train")):
        expected = generate_mini(split, DATA_ROWS[split], seed=7)
        for task in names:
            rows = load_benchmark(task, folder)
            assert [(r["problem"], r["answer"]) for r in rows] == [(e["problem"], e["answer"]) for e in expected], task
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.jsonl")}
    write_stand_in_data(folder)  # unchanged files are not rewritten (their hashes key the cells)
    assert before == {p: p.stat().st_mtime_ns for p in folder.rglob("*.jsonl")}
