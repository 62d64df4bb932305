"""Three store safety rules: `--reuse-stale` rewrites a cell's record only while holding the cell's claim;
`clean_temp` never treats names read from leftover folders as glob patterns; atomic writes never change the
process-wide umask (another thread creating a file meanwhile would get the wrong permissions)."""

from __future__ import annotations

import json
import os
import threading

import pytest
import yaml

from mechsteer import atomic
from mechsteer.api import load_study
from mechsteer.engine.claims import Claim
from mechsteer.engine.execute import NullProgress, RunSummary, select_todo
from mechsteer.engine.store import CellStore

# ------------------------------------------------------------------------------------ --reuse-stale


@pytest.fixture
def stale_cell(tmp_path):
    """A plan of one cell (never loaded) and that cell recorded by "other code"."""
    (tmp_path / "model").mkdir()
    cfg = {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "architectures": ["LlamaForCausalLM"]}
    (tmp_path / "model" / "config.json").write_text(json.dumps(cfg))
    doc = {
        "name": "reuse",
        "models": {"m": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "conditions": {"base": []},
        "readouts": {"first": {"kind": "first_token", "prompts": ["ab"], "template": "raw"}},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    plan = load_study(tmp_path / "s.yaml").plan(output_dir=tmp_path / "out")
    (cell,) = plan.cells
    store = CellStore(plan.cells_dir)
    old = {**cell.code, "source": "0" * 64}
    store.write(cell.hash, {"hash": cell.hash, "code": old}, {"m": 1.0}, [])
    return plan, store, cell


def _select(plan, store) -> RunSummary:
    summary = RunSummary()
    todo = select_todo(plan, store, force=False, reuse_stale=True, progress=NullProgress(), summary=summary)
    assert todo == []
    return summary


def test_reuse_stale_rewrites_the_record_only_under_the_claim(stale_cell, monkeypatch):
    plan, store, cell = stale_cell
    checked = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("cell.json"):
            with Claim(store.root, cell.hash) as probe:
                checked.append(not probe.acquire(blocking=False))  # held by the writer: not acquirable
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    summary = _select(plan, store)
    assert checked == [True]
    assert summary.reused_stale == [cell.hash] and summary.cached == [cell.hash]
    assert store.read_record(cell.hash)["reused_stale"][-1]["code"] == cell.code


def test_reuse_stale_waits_for_a_run_recomputing_the_cell(stale_cell, monkeypatch):
    """Another run holds the claim and recomputes the cell: the reusing run waits, then finds it fresh and
    neither annotates nor overwrites the new record."""
    plan, store, cell = stale_cell
    other = Claim(store.root, cell.hash)
    assert other.acquire(blocking=False)
    waiting = threading.Event()
    real_acquire = Claim.acquire

    def acquire(self, blocking):
        if blocking:
            waiting.set()
        return real_acquire(self, blocking)

    monkeypatch.setattr(Claim, "acquire", acquire)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(summary=_select(plan, store)))
    worker.start()
    assert waiting.wait(60), "the reusing run did not wait for the cell's claim"
    store.write(cell.hash, {"hash": cell.hash, "code": cell.code}, {"m": 2.0}, [])  # the other run's fresh cell
    other.release()
    worker.join(60)
    assert result["summary"].reused_stale == [] and result["summary"].cached == [cell.hash]
    record = store.read_record(cell.hash)
    assert "reused_stale" not in record and store.read_metrics(cell.hash) == {"m": 2.0}


# ------------------------------------------------------------------------------------ clean_temp


@pytest.mark.parametrize("hostile", ["*", "[0-9a-f]*", "?" * 64, ".."])
def test_clean_temp_never_globs_with_names_from_folders(tmp_path, hostile):
    store = CellStore(tmp_path)
    held = "a" * 64
    other = Claim(tmp_path, held)
    assert other.acquire(blocking=False)  # another run is writing this cell
    work = tmp_path / f".tmp-{held}-k3y"
    work.mkdir()
    (tmp_path / f".tmp-{hostile}-x").mkdir()  # a folder whose name holds glob characters
    (tmp_path / f".{hostile}.old-1-x").mkdir()
    store.clean_temp()
    assert work.is_dir()  # the other run's work in progress survives
    other.release()
    assert store.clean_temp() == 1 and not work.exists()  # once free, only the real cell's folder goes


# ------------------------------------------------------------------------------------ umask


@pytest.fixture
def umask_027(monkeypatch):
    old = os.umask(0o027)
    monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask was called"))
    yield
    monkeypatch.undo()
    os.umask(old)


def test_atomic_writes_follow_the_umask_without_changing_it(tmp_path, umask_027):
    assert atomic.current_umask() == 0o027
    assert atomic.default_mode() == 0o640 and atomic.default_mode(directory=True) == 0o750
    f = atomic.atomic_write_text(tmp_path / "a.txt", "x")
    assert f.stat().st_mode & 0o777 == 0o640
    with atomic.atomic_dir(tmp_path / "cell", prefix=".tmp-c-") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("y")
        fd = os.open(tmp / "private", os.O_CREAT | os.O_WRONLY, 0o600)  # as mkstemp-based writers do
        os.close(fd)
    assert (tmp_path / "cell").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "cell" / "sub").stat().st_mode & 0o777 == 0o750
    assert {(tmp_path / "cell" / n).stat().st_mode & 0o777 for n in ("sub/f", "private")} == {0o640}


def test_umask_without_proc_comes_from_a_probe_file(tmp_path, umask_027, monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    assert atomic.current_umask() == 0o027
