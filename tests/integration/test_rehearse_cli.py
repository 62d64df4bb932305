"""`mechsteer run FILE -p PROFILE --rehearse` end to end on one small paper profile (last_layer -p paper: Qwen's
twin, a per-block run read at `checkpoint: best`, the all-layer run, a token-shift readout on finished samples
only, the first-token readout on stand-in MATH-500), and what marks the folder as a rehearsal: its plan.json,
report, summary, cell keys and `ls` say so, `diff` refuses to mix it with a run, and the real run's plan shares
no cell with it. The whole paper is rehearsed by tests/slow/test_rehearse_paper.py."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mechsteer as ms
from mechsteer.cli.app import app
from mechsteer.spec.rehearsal import BANNER, REHEARSAL_FORMAT

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "studies" / "last_layer.yaml"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    r = CliRunner().invoke(
        app, ["run", str(STUDY), "-p", "paper", "--rehearse", "--threads", "1", "-q", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    return out, r.output


def test_the_rehearsal_runs_every_cell_and_builds_the_report(rehearsal):
    out, output = rehearsal
    folder = out / "last_layer-paper-rehearsal"
    assert BANNER in " ".join(output.split())
    with pytest.warns(ms.RehearsalWarning, match="REHEARSAL"):
        results = ms.load_results(folder)
    assert results.rehearsal["format"] == REHEARSAL_FORMAT
    assert len(results.recorded()) == len(results.cells) == 7
    report = (folder / "report" / "report.md").read_text()
    assert report.startswith("# REHEARSAL: last_layer (profile paper)")
    assert "## What the rehearsal stood in" in report and "Qwen/Qwen2.5-Math-7B -> a random-weight twin" in report
    assert "## Token shift" in report or "token_shift" in report
    # the per-block run was read at its best.json's step, as a real run would be
    assert "best" in report.split("## Training checkpoints used", 1)[1]
    rows = results.table()
    assert set(rows.measurement) == {"shift", "first_token"}
    for cell in results.recorded():
        key = json.loads((folder / "cells" / cell["hash"] / "cell.json").read_text())["key"]
        assert key["rehearsal"] == REHEARSAL_FORMAT


def test_a_real_plan_shares_no_cell_with_the_rehearsal(rehearsal, tmp_path):
    out, _ = rehearsal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.RehearsalWarning)
        rehearsed = {c["hash"] for c in ms.load_results(out / "last_layer-paper-rehearsal").cells}
    real = ms.load_study(STUDY, "paper").plan(output_dir=out)
    assert real.output_dir == out / "last_layer-paper"
    assert not rehearsed & {c.hash for c in real.cells}


def test_report_ls_and_diff_say_it_is_a_rehearsal(rehearsal, tmp_path):
    out, _ = rehearsal
    folder = out / "last_layer-paper-rehearsal"
    runner = CliRunner()
    r = runner.invoke(app, ["report", str(folder)])
    assert r.exit_code == 0 and BANNER in " ".join(r.output.split())
    r = runner.invoke(app, ["report", str(folder), "--format", "json"])
    assert json.loads(r.output)["rehearsal"]["format"] == REHEARSAL_FORMAT
    r = runner.invoke(app, ["ls", str(out), "--format", "json"])
    (row,) = [x for x in json.loads(r.output) if x["folder"] == str(folder)]
    assert row["note"].startswith("REHEARSAL")
    fake = tmp_path / "last_layer-paper"  # the same cells presented as a run: diff must refuse to mix them
    shutil.copytree(folder, fake, ignore=shutil.ignore_patterns("stand-ins", "work", "report"))
    plan = json.loads((fake / "plan.json").read_text())
    del plan["rehearsal"]
    (fake / "plan.json").write_text(json.dumps(plan))
    r = runner.invoke(app, ["diff", str(fake), str(folder)])
    assert r.exit_code == 1 and "is a rehearsal" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["diff", str(folder), str(folder)])
    assert r.exit_code == 0, r.output


def test_data_dir_is_refused_with_rehearse(tmp_path):
    r = CliRunner().invoke(app, ["run", str(STUDY), "-p", "paper", "--rehearse", "--data-dir", str(tmp_path)])
    assert r.exit_code != 0 and "--data-dir has no effect with --rehearse" in r.output


def test_an_unknown_hub_model_is_named_with_the_fix(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(
        "name: s\nmodels: {m: {id: someone/unknown-7b}}\nconditions: {base: []}\n"
        "readouts: {f: {kind: first_token, prompts: [hi]}}\n"
    )
    r = CliRunner().invoke(app, ["run", str(study), "--rehearse", "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    text = " ".join(r.output.split())
    assert str(study) in text and "models.m.id" in text and "someone/unknown-7b" in text
    assert "model_configs.yaml" in text and "hf download someone/unknown-7b config.json" in text
