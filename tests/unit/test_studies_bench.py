"""benchmarks/studies.py without running a model: which files are studies and which cannot run here (and why),
the cell timings read from an output folder, the merge of sittings, and the README table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from script_loader import REPO, load_script

sb = load_script("benchmarks/studies.py")


def _cell(root: Path, h: str, seconds: float, started: str, *, metrics: bool = True, recorded_hash: str | None = None):
    d = root / "cells" / h
    d.mkdir(parents=True)
    record = {"hash": recorded_hash or h, "timing": {"started": started, "finished": started, "seconds": seconds}}
    (d / "cell.json").write_text(json.dumps(record))
    if metrics:
        (d / "metrics.json").write_text("{}")


def test_cell_timings_count_complete_cells_and_sum_their_recorded_seconds(tmp_path):
    _cell(tmp_path, "a" * 64, 1.25, "2026-01-01T10:00:00+00:00")
    _cell(tmp_path, "b" * 64, 3.5, "2026-01-01T10:05:07+00:00")
    _cell(tmp_path, "c" * 64, 100.0, "2026-01-01T10:06:00+00:00", metrics=False)  # damaged: not counted
    _cell(tmp_path, "d" * 64, 200.0, "2026-01-01T10:06:00+00:00", recorded_hash="e" * 64)  # another cell's record
    _cell(tmp_path, ".tmp-" + "f" * 64 + "-x", 400.0, "2026-01-01T10:06:00+00:00")  # a temporary folder
    (tmp_path / "cells" / ".locks").mkdir()
    since = datetime(2026, 1, 1, 10, 5, 7, 600_000, tzinfo=UTC)  # the subprocess started within that second
    got = sb.cell_timings(tmp_path, since=since)
    assert got == {"cells": 2, "cells_computed": 1, "cell_seconds": 4.75}
    assert sb.cell_timings(tmp_path)["cells_computed"] is None
    assert sb.cell_timings(tmp_path / "nothing") == {"cells": 0, "cells_computed": None, "cell_seconds": 0.0}


def test_training_files_are_not_studies_and_unknown_names_are_errors():
    studies, training = sb.study_files(REPO / "studies")
    assert {f.name for f in training} == {"train_mini.yaml", "train_paper.yaml", "train_paper_llama.yaml"}
    assert "quickstart.yaml" in {f.name for f in studies} and not set(studies) & set(training)
    assert [f.stem for f in sb.study_files(REPO / "studies", ["logit_lens", "quickstart"])[0]] == [
        "logit_lens",
        "quickstart",
    ]
    with pytest.raises(SystemExit, match="--only nope: no such file"):
        sb.study_files(REPO / "studies", ["quickstart", "nope"])


def test_skip_reasons_come_from_the_validated_default_profile(tmp_path):
    reason, plan = sb.skip_reason(REPO / "studies" / "paper_eval.yaml", tmp_path)
    assert plan is None
    assert reason == (
        "needs hub models: Qwen/Qwen2.5-Math-7B, meta-llama/Llama-3.1-8B-Instruct; hub benchmarks: aime24, aime25, "
        "amc23, math500, minerva_math, olympiadbench"
    )
    reason, plan = sb.skip_reason(REPO / "studies" / "quickstart.yaml", tmp_path)
    assert reason is None and Path(plan.output_dir) == tmp_path / "quickstart" and len(plan.unique_cells()) == 9

    doc = {
        "name": "local",
        "models": {"smol": {"id": "smollm2-135m", "device": "cuda"}},
        "conditions": {"base": []},
        "evaluation": {"tasks": ["math500", "mini"], "data_dir": "data"},
    }
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(doc))
    reason, _ = sb.skip_reason(tmp_path / "local.yaml", tmp_path / "out")
    assert reason == "needs a GPU: smol on cuda; files that are not here: data/math500/test.jsonl"
    (tmp_path / "data" / "math500").mkdir(parents=True)
    (tmp_path / "data" / "math500" / "test.jsonl").write_text("")
    assert sb.skip_reason(tmp_path / "local.yaml", tmp_path / "out")[0] == "needs a GPU: smol on cuda"

    (tmp_path / "bad.yaml").write_text(
        "name: bad\nmodels: {smol: {id: smollm2-135m}}\nconditions: {base: [{kind: nope}]}\n"
    )
    reason, plan = sb.skip_reason(tmp_path / "bad.yaml", tmp_path / "out")
    assert plan is None and reason.startswith(f"{tmp_path / 'bad.yaml'}:3:") and "nope" in reason
    assert "\n" not in reason


def test_description_is_the_first_sentence():
    assert sb.first_sentence("One thing (v1.2) here. Then more. And more.") == "One thing (v1.2) here."
    assert sb.first_sentence("Ends with e.g. lowercase words") == "Ends with e.g. lowercase words"
    assert sb.first_sentence(None) == ""
    assert sb.description(REPO / "studies" / "prefix_token.yaml") == (
        'Forced "To" opening vs the last-layer vector: accuracy, and the first-token distribution without and '
        "with the forced token."
    )


def _row(study, status, date, commit, **kw):
    base = {
        "study": study,
        "file": f"studies/{study}.yaml",
        "reproduces": f"{study} thing.",
        "status": status,
        "date": date,
        "sitting": date[:16].replace("T", " "),
        "commit": commit,
        "dirty": False,
        "threads": 2,
        "script_command": "python benchmarks/studies.py",
        "machine": {
            "cpu": "CPU X",
            "cpu_flags": {"avx2": True},
            "cores": 2,
            "load_avg_1m_at_start": 1.0,
            "torch_threads": 2,
            "python": "3.11",
            "torch": "2.13",
            "platform": "Linux",
        },
    }
    return {**base, **kw}


def test_merge_keeps_other_studies_with_their_own_date_and_commit():
    old = [
        _row("a", "ok", "2026-01-01T10:00:00+00:00", "1111111111aa", cells=3, wall_seconds=10.0, cell_seconds=8.0),
        _row("b", "failed", "2026-01-01T10:00:00+00:00", "1111111111aa", cells=0, wall_seconds=5.0, cell_seconds=0),
        _row("gone", "ok", "2026-01-01T10:00:00+00:00", "1111111111aa", cells=1, wall_seconds=1.0, cell_seconds=1),
    ]
    new = [
        _row("c", "ok", "2026-02-02T12:00:00+00:00", "2222222222bb", cells=4, wall_seconds=20.0, cell_seconds=15.0),
        _row("b", "ok", "2026-02-02T12:00:00+00:00", "2222222222bb", cells=2, wall_seconds=30.0, cell_seconds=25.0),
    ]
    merged = sb.merge_rows(old, new, known=["a", "b", "c"])
    assert [(r["study"], r["status"], r["commit"]) for r in merged] == [
        ("a", "ok", "1111111111aa"),
        ("b", "ok", "2222222222bb"),
        ("c", "ok", "2222222222bb"),
    ]
    assert merged[0] is old[0]  # unchanged, not re-dated
    assert [r["study"] for r in sb.merge_rows(old, new)] == ["a", "b", "c", "gone"]


def test_table_and_section_show_each_row_with_its_own_sitting():
    rows = [
        _row("a", "ok", "2026-01-01T10:00:00+00:00", "1111111111aa", cells=3, wall_seconds=265.4, cell_seconds=41.6),
        _row(
            "b",
            "failed",
            "2026-02-02T12:00:00+00:00",
            "2222222222bb",
            dirty=True,
            exit_code=1,
            cells=1,
            wall_seconds=7.0,
            cell_seconds=2.0,
            stderr_tail=["Traceback", "ValueError: a|b"],
        ),
        _row("c", "skipped", "2026-02-02T12:00:00+00:00", "2222222222bb", reason="needs hub models: Q/Q"),
    ]
    lines = sb.table(rows).splitlines()
    assert lines[0] == (
        "| study | what it reproduces | cells | wall time | cells' compute | status | date (UTC) | commit |"
    )
    assert lines[2] == "| `studies/a.yaml` | a thing. | 3 | 4.4 min | 42 s | ok | 2026-01-01 10:00 | 1111111111 |"
    assert lines[3] == (
        "| `studies/b.yaml` | b thing. | 1 | 7 s | 2 s | failed (exit 1): ValueError: a\\|b | 2026-02-02 12:00 | "
        "2222222222 (dirty) |"
    )
    assert lines[4] == (
        "| `studies/c.yaml` | c thing. | - | - | - | skipped: needs hub models: Q/Q | 2026-02-02 12:00 | 2222222222 |"
    )
    text = "\n".join(sb.section(rows))
    assert "Sitting 2026-01-01 10:00 (a): `python benchmarks/studies.py`" in text
    assert "Sitting 2026-02-02 12:00 (b): " in text  # the skipped study ran nothing, so it names no sitting
    assert text.count("- machine: CPU X") == 2
