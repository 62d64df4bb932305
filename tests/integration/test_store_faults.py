"""The cell store under faults, on a tiny local model: two runs sharing one output folder at once (each cell
computed once, both end with the complete report), SIGKILL in the middle of a cell (finished cells intact,
the next run resumes, the half-written folder never counts), a full disk while writing (one clear line, no
half cell, the old cell survives a --force re-run), and cell folders damaged by hand (reported and re-run,
nothing else lost)."""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_engine import _study, tiny_model_dir  # noqa: F401 - the tiny saved model fixture (module scope)
from typer.testing import CliRunner

from mechsteer.cli.app import app
from mechsteer.engine.execute import execute_plan
from mechsteer.engine.plan import compile_study
from mechsteer.engine.store import CellStore
from mechsteer.spec.loader import load_study

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("store_driver.py")
CONDITIONS = {"base": [], "steer": [{"kind": "add", "vector": "v", "layer": "penultimate"}]}


def _small_study(tmp_path: Path, model_dir: Path) -> Path:
    """4 cells: {base, steer} x {first_token, a 3-token generation}."""
    readouts = {
        "first": {"kind": "first_token", "prompts": ["ab", "hello there"], "template": "raw", "track": ["a"]},
        "gen": {"kind": "generate", "prompts": ["ab"], "template": "raw", "max_new_tokens": 3},
    }
    return _study(tmp_path, model_dir, conditions=CONDITIONS, readouts=readouts)


def _plan(study: Path, out: Path):
    return compile_study(load_study(study), output_root=out)


def _driver(*args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.Popen(
        [sys.executable, str(DRIVER), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _temp_folders(cells_dir: Path) -> list[Path]:
    return [p for p in cells_dir.iterdir() if p.name.startswith(".") and p.name != ".locks"]


def test_two_runs_sharing_an_output_folder_compute_each_cell_once(tmp_path, tiny_model_dir):
    study, out, log = _small_study(tmp_path, tiny_model_dir), tmp_path / "out", tmp_path / "writes.log"
    plan = _plan(study, out)
    hashes = {c.hash for c in plan.unique_cells()}
    assert len(hashes) == 4
    procs = [
        _driver(str(study), str(out), str(log), "--barrier", str(tmp_path / "barrier"), "2", "--hold", "0.3")
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    writes = [line.split() for line in log.read_text().splitlines()]
    per_cell = Counter(h for _, h in writes)
    assert set(per_cell) == hashes and set(per_cell.values()) == {1}, per_cell  # every cell computed once
    ran = []
    for stdout, _ in results:
        summary = re.search(r"^ran (\d+) cells, (\d+) cached", stdout, re.MULTILINE)
        executed, cached = int(summary[1]), int(summary[2])
        assert executed + cached == 4, summary  # each run accounts for every cell ...
        ran.append(executed)
        # ... and ends with the complete report: every cell recorded, both conditions, both readouts
        assert "4 of 4 cells recorded" in stdout, stdout
        summary = stdout[stdout.index("4 of 4 cells recorded") :].split("\n")
        assert any(line.strip().startswith("steer ") for line in summary) and "first/p(a)" in stdout, stdout
    md = (out / "tiny" / "report" / "report.md").read_text()
    assert "4 of 4 cells recorded" in md and "| steer " in md and "p(a)" in md and "mean_len" in md, md
    assert sum(ran) == 4
    store = CellStore(plan.cells_dir)
    assert all(store.is_done(h) for h in hashes) and not _temp_folders(plan.cells_dir)
    pids = {int(pid) for pid, _ in writes}
    assert pids <= {p.pid for p in procs}


def test_sigkill_in_the_middle_of_a_cell_then_resume(tmp_path, tiny_model_dir):
    study, out, log = _small_study(tmp_path, tiny_model_dir), tmp_path / "out", tmp_path / "writes.log"
    marker = tmp_path / "stalled"
    proc = _driver(str(study), str(out), str(log), "--stall-at", "2", str(marker))
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    plan = _plan(study, out)
    store = CellStore(plan.cells_dir)
    first, killed = (line.split()[1] for line in log.read_text().splitlines())
    assert store.is_done(first) and not store.is_done(killed)
    leftovers = _temp_folders(plan.cells_dir)
    assert [p.name.startswith(f".tmp-{killed}-") for p in leftovers] == [True]  # the half-written cell
    from mechsteer.engine.claims import Claim

    with Claim(plan.cells_dir, killed) as claim:  # the dead run's claim was released by the OS
        assert claim.acquire(blocking=False)
    finished = (store.dir(first) / "cell.json").read_bytes()

    r = CliRunner().invoke(app, ["run", str(study), "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "ran 3 cells, 1 cached" in r.output
    assert all(store.is_done(c.hash) for c in plan.unique_cells())
    assert (store.dir(first) / "cell.json").read_bytes() == finished  # the finished cell was not recomputed
    assert not _temp_folders(plan.cells_dir)


def _enospc_on_metrics(monkeypatch, fail_times: int = 1):
    """Make writing a cell's metrics.json (inside its temporary folder) fail with ENOSPC."""
    real = Path.write_text
    state = {"left": fail_times}

    def write_text(self, *args, **kwargs):
        if self.name == "metrics.json" and self.parent.name.startswith(".tmp-") and state["left"] > 0:
            state["left"] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def test_full_disk_is_one_clear_line_and_leaves_no_half_cell(tmp_path, tiny_model_dir, monkeypatch):
    study, out = _small_study(tmp_path, tiny_model_dir), tmp_path / "out"
    plan = _plan(study, out)
    first = plan.unique_cells()[0]
    _enospc_on_metrics(monkeypatch)
    r = CliRunner().invoke(app, ["run", str(study), "-o", str(out), "--quiet"])
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output
    assert str(plan.cells_dir / first.hash) in errors[0] and "no space left on device" in errors[0]
    assert not (plan.cells_dir / first.hash).exists() and not _temp_folders(plan.cells_dir)


def test_full_disk_during_force_keeps_the_old_cell(tmp_path, tiny_model_dir, monkeypatch):
    study, out = _small_study(tmp_path, tiny_model_dir), tmp_path / "out"
    plan = _plan(study, out)
    execute_plan(plan)
    store = CellStore(plan.cells_dir)
    before = {c.hash: {f.name: f.read_bytes() for f in store.dir(c.hash).iterdir()} for c in plan.unique_cells()}
    _enospc_on_metrics(monkeypatch)
    r = CliRunner().invoke(app, ["run", str(study), "-o", str(out), "--quiet", "--force"])
    assert r.exit_code == 1 and "no space left on device" in r.output, r.output
    after = {c.hash: {f.name: f.read_bytes() for f in store.dir(c.hash).iterdir()} for c in plan.unique_cells()}
    assert after == before  # the cell being replaced survived, byte for byte, and nothing else changed
    assert not _temp_folders(plan.cells_dir)


def test_damaged_cells_are_reported_and_rerun(tmp_path, tiny_model_dir, caplog):
    study, out = _small_study(tmp_path, tiny_model_dir), tmp_path / "out"
    plan = _plan(study, out)
    execute_plan(plan)
    store = CellStore(plan.cells_dir)
    cells = [c.hash for c in plan.unique_cells()]
    no_metrics, bad_record, other_record, intact = cells
    (store.dir(no_metrics) / "metrics.json").unlink()
    (store.dir(bad_record) / "cell.json").write_text('{"hash": "')
    (store.dir(other_record) / "cell.json").write_bytes((store.dir(intact) / "cell.json").read_bytes())
    intact_files = {f.name: f.read_bytes() for f in store.dir(intact).iterdir()}
    for h in (no_metrics, bad_record, other_record):
        assert not store.is_done(h) and store.damage(h)
    assert store.is_done(intact) and store.damage(intact) is None

    with caplog.at_level(logging.WARNING, logger="mechsteer.engine"):
        summary = execute_plan(plan)
    assert sorted(summary.executed) == sorted([no_metrics, bad_record, other_record])
    assert summary.cached == [intact]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{store.dir(no_metrics)} is damaged (metrics.json is missing)" in messages
    assert f"{store.dir(bad_record)} is damaged (cell.json is not valid JSON" in messages
    assert f"{store.dir(other_record)} is damaged (cell.json records cell {intact[:12]}" in messages
    assert all(store.is_done(h) for h in cells)
    assert {f.name: f.read_bytes() for f in store.dir(intact).iterdir()} == intact_files
    assert not _temp_folders(plan.cells_dir)


@pytest.mark.parametrize("damage", ["missing", "invalid"])
def test_plan_counts_a_damaged_cell_as_to_run(tmp_path, tiny_model_dir, damage):
    study, out = _small_study(tmp_path, tiny_model_dir), tmp_path / "out"
    plan = _plan(study, out)
    execute_plan(plan)
    cell = CellStore(plan.cells_dir).dir(plan.unique_cells()[0].hash) / "cell.json"
    cell.unlink() if damage == "missing" else cell.write_text("[1, 2]")
    p = CliRunner().invoke(app, ["plan", str(study), "-o", str(out)])
    assert p.exit_code == 0 and "3 cached, 1 to run" in p.output, p.output
