"""Per-cell claims (mechsteer.engine.claims) without a model: a cell another process holds is skipped, then
waited for, and reused when that process finished it or computed when it did not; temporary folders of a cell
in progress survive another run's start; --force computes a cell once even when two runs are forced.

A second holder is simulated by a Claim opened in the test: flock locks belong to the open file, so a second
open file of the same lock conflicts exactly as another process would."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from mechsteer.engine.claims import Claim, claimed
from mechsteer.engine.store import CellStore


@dataclass
class FakeCell:
    hash: str


def _cells(*names: str) -> list[FakeCell]:
    return [FakeCell(n * 64) for n in names]


def _finish(store: CellStore, h: str, value: float = 1.0) -> None:
    store.write(h, {"hash": h}, {"m": value}, [])


def test_claims_conflict_and_are_released(tmp_path):
    a, b = Claim(tmp_path, "h" * 64), Claim(tmp_path, "h" * 64)
    assert a.acquire(blocking=False)
    assert not b.acquire(blocking=False)
    a.release()
    assert b.acquire(blocking=False)
    b.release()


def test_a_cell_held_elsewhere_is_skipped_then_reused(tmp_path):
    store = CellStore(tmp_path)
    c1, c2, c3 = _cells("a", "b", "c")
    other = Claim(tmp_path, c2.hash)
    assert other.acquire(blocking=False)  # "another run" is computing c2
    reused: list[str] = []
    gen = claimed(store, [c1, c2, c3], reused=reused.append)
    assert next(gen) is c1
    with Claim(tmp_path, c1.hash) as probe:  # the caller holds c1's claim while it computes c1
        assert not probe.acquire(blocking=False)
    _finish(store, c1.hash)
    assert next(gen) is c3  # c2 skipped for now
    _finish(store, c3.hash)
    _finish(store, c2.hash)  # the other run finishes c2 and lets go
    other.release()
    assert list(gen) == [] and reused == [c2.hash]


def test_a_cell_the_other_run_left_unfinished_is_computed(tmp_path):
    store = CellStore(tmp_path)
    (c1,) = _cells("a")
    other = Claim(tmp_path, c1.hash)
    assert other.acquire(blocking=False)
    tmp = tmp_path / f".tmp-{c1.hash}-dead0000"  # the other run's work in progress
    tmp.mkdir()
    assert store.clean_temp() == 0 and tmp.exists()  # a run starting now leaves it alone
    notes: list[str] = []
    gen = claimed(store, [c1], notify=notes.append)
    threading.Timer(0.2, other.release).start()  # the other run dies without finishing, while this one waits
    assert next(gen) is c1
    assert notes == ["waiting for 1 cell(s) another run is computing"]
    assert not tmp.exists()  # the new holder of the claim cleaned up the dead run's folder
    gen.close()


def test_clean_temp_removes_folders_of_unclaimed_cells_only(tmp_path):
    store = CellStore(tmp_path)
    held, free = _cells("a", "b")
    other = Claim(tmp_path, held.hash)
    assert other.acquire(blocking=False)
    (tmp_path / f".tmp-{held.hash}-x1").mkdir()
    (tmp_path / f".tmp-{free.hash}-x2").mkdir()
    (tmp_path / f".tmp-{free.hash[:12]}-x3").mkdir()  # the name older versions used
    assert store.clean_temp() == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == [f".tmp-{held.hash}-x1"]
    other.release()


def test_force_computes_once_even_when_two_runs_are_forced(tmp_path):
    store = CellStore(tmp_path)
    c1, c2 = _cells("a", "b")
    _finish(store, c1.hash, 1.0), _finish(store, c2.hash, 1.0)
    other = Claim(tmp_path, c1.hash)
    assert other.acquire(blocking=False)  # a second forced run is recomputing c1
    reused: list[str] = []
    gen = claimed(store, [c1, c2], force=True, reused=reused.append)
    assert next(gen) is c2  # done, but forced: computed again
    _finish(store, c2.hash, 2.0)
    _finish(store, c1.hash, 2.0)  # the other forced run rewrites c1 meanwhile
    other.release()
    assert list(gen) == [] and reused == [c1.hash]  # rewritten after this run started: not computed twice
    # a forced run whose cells nobody rewrote computes them all
    assert [c.hash for c in claimed(store, [c1, c2], force=True)] == [c1.hash, c2.hash]


def test_damaged_cell_is_computed_again(tmp_path, caplog):
    store = CellStore(tmp_path)
    (c1,) = _cells("a")
    _finish(store, c1.hash)
    (store.dir(c1.hash) / "metrics.json").write_text("{not json")
    assert not store.is_done(c1.hash) and "metrics.json is not valid JSON" in store.damage(c1.hash)
    assert [c.hash for c in claimed(store, [c1])] == [c1.hash]
    assert f"{store.dir(c1.hash)} is damaged (metrics.json is not valid JSON" in caplog.text
    assert json.loads((store.dir(c1.hash) / "cell.json").read_text()) == {"hash": c1.hash}
