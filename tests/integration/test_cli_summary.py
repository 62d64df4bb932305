"""What `mechsteer run` and `mechsteer report` print at the end: a summary of the effects that fits the
terminal (the Quickstart, all cached, in a 100-column terminal: under 30 lines, none longer than 100
characters, `steered` minus `base` and minus the random control with their intervals and p), the paths of
report.md and report.html, and with `--format json` the same facts for scripts. The cells are recorded from the
Quickstart's own plan (`recorded_runs.record_plan`), so no model runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from recorded_runs import record_plan

from mechsteer.api import load_study
from mechsteer.report.effects import delta_text, p_text
from mechsteer.results import Results

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "studies" / "quickstart.yaml"
N = 64
OUTCOMES = {
    ("base", "mini"): [1 if i < 23 else 0 for i in range(N)],
    ("steered", "mini"): [1 if i < 53 else 0 for i in range(N)],
    ("random_control", "mini"): [1 if 1 <= i < 25 else 0 for i in range(N)],
    ("base", "t1"): [1 if i % 7 == 0 else 0 for i in range(N)],
    ("steered", "t1"): [1 if i % 3 else 0 for i in range(N)],
    ("random_control", "t1"): [1 if i % 6 == 0 else 0 for i in range(N)],
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    return root, record_plan(load_study(QUICKSTART).plan(output_dir=root), OUTCOMES)


def _cli(*args, columns: int = 100) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50"}
    return subprocess.run(
        [sys.executable, "-m", "mechsteer.cli.app", *args], capture_output=True, text=True, cwd=REPO, env=env
    )


def test_cached_quickstart_run_prints_a_summary_that_fits(recorded):
    root, out = recorded
    r = _cli("run", str(QUICKSTART), "-o", str(root), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.rstrip("\n").split("\n")
    assert len(lines) < 30, r.stdout
    assert max(len(line) for line in lines) <= 100, r.stdout
    assert "ran 0 cells, 9 cached" in r.stdout and "9 of 9 cells recorded" in r.stdout
    assert f"report: {out / 'report' / 'report.md'}" in r.stdout and str(out / "report" / "report.html") in r.stdout
    assert "## Results" not in r.stdout  # the report is not dumped
    eff = Results.load(out).effects().set_index(["measurement", "condition"])
    steered = eff.loc[("mini", "steered")]
    row = next(line for line in lines if line.strip().startswith("steered"))  # the first: measurement mini
    assert delta_text(steered.vs_baseline, steered.vs_baseline_low, steered.vs_baseline_high) in row
    assert delta_text(steered.vs_control, steered.vs_control_low, steered.vs_control_high) in row
    assert p_text(steered.p_baseline, steered.vs_baseline, short=True) in row
    assert steered.p_baseline < 0.05 and steered.control == "random_control"


def test_narrow_terminals_keep_one_line_per_row(recorded):
    root, out = recorded
    r = _cli("report", str(out), columns=72)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.rstrip("\n").split("\n")
    assert max(len(line) for line in lines if not line.startswith(("report:", " " * 8 + "/"))) <= 72, r.stdout
    assert sum(1 for line in lines if line.strip().startswith(("base ", "steered ", "random_control "))) == 6


def test_json_format_for_scripts(recorded):
    root, out = recorded
    r = _cli("run", str(QUICKSTART), "-o", str(root), "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout is the JSON document alone
    assert doc["ran"]["executed"] == 0 and doc["ran"]["cached"] == 9 and doc["cells"] == {"recorded": 9, "total": 9}
    assert doc["report"]["md"] == str(out / "report" / "report.md") and Path(doc["report"]["html"]).is_file()
    eff = Results.load(out).effects()
    assert len(doc["effects"]) == len(eff) == 6
    got = {(e["measurement"], e["condition"]): e for e in doc["effects"]}
    for row in eff.itertuples():
        assert got[(row.measurement, row.condition)]["value"] == pytest.approx(row.value)
    assert got[("mini", "base")]["vs_baseline"] is None  # NaN as null
    again = _cli("report", str(out), "--format", "json")
    assert json.loads(again.stdout)["effects"] == doc["effects"]
    bad = _cli("report", str(out), "--format", "yaml")
    assert bad.returncode != 0 and "use text or json" in bad.stderr
