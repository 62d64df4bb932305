"""Off the main thread, math-verify's own time limits do not work (they use signals), so grading there runs in
a helper process under a wall-clock limit: a grader that never returns costs at most that limit and counts as
not verified, the stuck helper is killed, and grading goes on. On the main thread no helper is involved."""

from __future__ import annotations

import threading
import time

import pytest

from mechsteer.eval import grading, helper_process
from mechsteer.eval.grading import grade_boxed


def never_returns(box: str, gold: str) -> bool:
    """A deliberately pathological grader stand-in (runs inside the helper process)."""
    time.sleep(3600)
    return True


def _in_thread(fn, *args):
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    worker.start()
    worker.join(timeout=120)  # a hang guard for the test itself, far above the 1 s limit under test
    assert not worker.is_alive(), "grading off the main thread did not return"
    return out[0]


@pytest.fixture
def pool(monkeypatch):
    fresh = helper_process.HelperPool()
    monkeypatch.setattr(helper_process, "_POOL", fresh)
    yield fresh
    fresh.close()


def test_a_grader_that_never_returns_is_cut_off_off_the_main_thread(pool, monkeypatch):
    monkeypatch.setattr(grading, "VERIFY_IN_HELPER", f"{__name__}:never_returns")
    monkeypatch.setattr(grading, "OFF_THREAD_LIMIT_S", 1)
    assert _in_thread(grade_boxed, "\\boxed{1}", "1") is False  # not verified (the real grader says True)
    assert pool.killed == 1 and pool._idle == []  # the stuck helper was killed, not kept
    # grading continues with a fresh helper and the real grader
    monkeypatch.setattr(grading, "VERIFY_IN_HELPER", "mechsteer.eval.grading:verify_in_helper")
    monkeypatch.setattr(grading, "OFF_THREAD_LIMIT_S", 60)
    assert _in_thread(grade_boxed, "so \\boxed{\\frac{1}{2}}", "0.5") is True
    assert _in_thread(grade_boxed, "\\boxed{3}", "0.5") is False
    assert pool.killed == 1 and len(pool._idle) == 1  # one helper, reused


def test_main_thread_grades_here_without_a_helper(pool, monkeypatch):
    def no_helper(*args, **kwargs):
        raise AssertionError("the main thread must not use a helper process")

    monkeypatch.setattr(pool, "call", no_helper)
    assert grade_boxed("so \\boxed{\\frac{1}{2}}", "0.5") is True
    assert grade_boxed("\\boxed{3}", "0.5") is False


def test_without_a_helper_process_grading_still_works_off_the_main_thread(pool, monkeypatch):
    def unavailable(*args, **kwargs):
        raise helper_process.HelperUnavailable("no subprocesses here")

    monkeypatch.setattr(pool, "call", unavailable)
    assert _in_thread(grade_boxed, "\\boxed{0.5}", "\\frac{1}{2}") is True
