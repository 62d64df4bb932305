"""The rehearsal tier (`pytest -m rehearsal`, `.ci/run_rehearsal`): every `paper*` profile of every bundled study
and every paper training run is rehearsed end to end through the CLI, as a user would before GPU time
(docs/rehearsal.md): `mechsteer run FILE -p PROFILE --rehearse` builds its report, and `mechsteer train FILE
[-p PROFILE] [--per-block BLOCKS] --rehearse` trains with checkpoints and selects the best one. Profiles and
training runs are discovered from studies/*.yaml (the per-block blocks from what the paper studies read), never
listed here."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechsteer.cli.app import app
from mechsteer.engine.estimate import paper_profiles, training_references
from mechsteer.spec.rehearsal import REHEARSAL_FORMAT, SUFFIX

REPO = Path(__file__).resolve().parents[2]
STUDIES, TRAININGS = paper_profiles(REPO / "studies")

pytestmark = pytest.mark.rehearsal


@lru_cache(maxsize=1)
def per_block_blocks() -> dict[tuple[str, str | None], list[int]]:
    """(training file, profile) -> the per-block runs the paper studies read (from their compiled plans)."""
    from mechsteer.engine.plan import compile_study
    from mechsteer.spec.loader import load_study

    out: dict[tuple[str, str | None], set] = {}
    for f, profile in STUDIES:
        for key, blocks in training_references(compile_study(load_study(f, profile, max_cells=10**6))).items():
            out.setdefault(key, set()).update(b for b in blocks if b != "single")
    return {k: sorted(v) for k, v in out.items() if v}


def test_the_discovery_sees_both_models_and_the_training_files():
    names = {(f.name, p) for f, p in STUDIES}
    assert ("composition.yaml", "paper_llama") in names and ("transfer.yaml", "paper_qwen15") in names
    assert len(STUDIES) >= 28
    assert {f.name for f, _ in TRAININGS} == {"train_paper.yaml", "train_paper_llama.yaml"}
    assert ("train_paper.yaml", "mini") not in {(f.name, p) for f, p in TRAININGS}  # embedded: not a paper run


@pytest.mark.parametrize(("study", "profile"), STUDIES, ids=[f"{f.stem}-{p}" for f, p in STUDIES])
def test_every_paper_profile_rehearses(study, profile, tmp_path):
    r = CliRunner().invoke(
        app, ["run", str(study), "-p", profile, "--rehearse", "--threads", "1", "-q", "-o", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    (folder,) = tmp_path.glob(f"*-{profile}{SUFFIX}")
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["rehearsal"]["format"] == REHEARSAL_FORMAT
    report = (folder / "report" / "report.md").read_text()
    n = len({c["hash"] for c in plan["cells"]})
    assert report.startswith("# REHEARSAL: ") and f"{n} of {n} cells recorded" in report
    recorded = {c.parent.name for c in (folder / "cells").glob("*/metrics.json")}
    assert recorded == {c["hash"] for c in plan["cells"]}  # every cell ran
    assert (folder / "report" / "report.html").is_file()


@pytest.mark.parametrize(("train", "profile"), TRAININGS, ids=[f"{f.stem}-{p or 'default'}" for f, p in TRAININGS])
def test_every_paper_training_run_rehearses(train, profile, tmp_path):
    blocks = per_block_blocks().get((str(train.resolve()), profile))
    args = ["train", str(train), "--rehearse", "--threads", "1", "-q", "-o", str(tmp_path / "run")]
    args += ["-p", profile] if profile else []
    args += ["--per-block", ",".join(map(str, blocks))] if blocks else []
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    folder = tmp_path / f"run{SUFFIX}"
    record = json.loads((folder / "rehearsal.json").read_text())
    assert record["format"] == REHEARSAL_FORMAT and record["kind"] == "training"
    runs = [folder / "run" / f"layer-{k:02d}" for k in blocks] if blocks else [folder / "run"]
    for run in runs:
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    if isinstance(record["selection"], list):  # vector setups: the paper's selection wrote best.json everywhere
        assert {Path(e["run"]) for e in record["selection"]} == set(runs)
        assert all((run / "best.json").is_file() for run in runs)
