"""The grading helper process is isolated from the working directory (a `json.py` or `math_verify.py` there is
never imported), and a helper that dies or prints under an answer neither crashes grading nor moves the
work into the caller's thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from mechsteer.eval import grading, helper_process
from mechsteer.eval.grading import grade_boxed


def dies(box: str, gold: str) -> bool:
    """Stand-in for an answer that kills whatever grades it (runs inside the helper)."""
    os._exit(3)


def prints_then_agrees(box: str, gold: str) -> bool:
    """Stand-in for a grader that chatters on stdout from Python and from C level (runs inside the helper)."""
    print("not json {")
    sys.stdout.flush()
    os.write(1, b"\n}{ neither is this\n")
    return True


def _in_thread(fn, *args):
    """`fn(*args)` on a worker thread (as lm-eval grades); what it raised comes back as the exception."""
    out: list = []

    def work():
        try:
            out.append(fn(*args))
        except Exception as e:  # noqa: BLE001 - reported as the result, the assertions say what was expected
            out.append(e)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout=120)  # a hang guard for the test itself
    assert not worker.is_alive(), "grading off the main thread did not return"
    return out[0]


@pytest.fixture
def pool(monkeypatch):
    fresh = helper_process.HelperPool()
    monkeypatch.setattr(helper_process, "_POOL", fresh)
    yield fresh
    fresh.close()


@pytest.fixture
def no_grading_in_this_process(monkeypatch):
    """Off the main thread the work must stay in a helper: grading here would lose the helper's time limit."""

    def forbidden(*args, **kwargs):
        raise AssertionError("graded in the calling process instead of a helper")

    monkeypatch.setattr(grading, "_verify", forbidden)


def test_modules_in_the_working_directory_are_not_imported_by_the_helper(
    pool, tmp_path, monkeypatch, no_grading_in_this_process
):
    markers = {name: tmp_path / f"{name}.imported" for name in ("json", "math_verify", "sympy")}
    for name, marker in markers.items():
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    verdicts = [
        _in_thread(grade_boxed, "so \\boxed{\\frac{1}{2}}", "0.5"),
        _in_thread(grade_boxed, "\\boxed{3}", "0.5"),
    ]
    assert [name for name, marker in markers.items() if marker.exists()] == []
    assert verdicts == [True, False]
    assert pool.killed == 0 and len(pool._idle) == 1  # graded in one healthy helper


def test_the_helper_command_is_isolated_and_names_only_the_package_folder():
    command = helper_process.helper_command()
    assert command[:2] == [sys.executable, "-I"] and "-m" not in command
    root = command[-1]
    assert os.path.isabs(root) and os.path.isdir(os.path.join(root, "mechsteer"))
    # the helper imports the same mechsteer as this process, even with an installed copy elsewhere
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import mechsteer; print(mechsteer.__file__)"
    shown = subprocess.run([sys.executable, "-I", "-c", probe, root], capture_output=True, text=True, check=True)
    import mechsteer

    assert shown.stdout.strip() == mechsteer.__file__


def test_a_helper_that_dies_under_an_answer_counts_it_not_verified(pool, monkeypatch, no_grading_in_this_process):
    monkeypatch.setattr(grading, "VERIFY_IN_HELPER", f"{__name__}:dies")
    assert _in_thread(grade_boxed, "\\boxed{1}", "1") is False
    assert pool.killed == grading.HELPER_ATTEMPTS  # tried again in a fresh helper before giving up
    monkeypatch.setattr(grading, "VERIFY_IN_HELPER", "mechsteer.eval.grading:verify_in_helper")
    assert _in_thread(grade_boxed, "\\boxed{1}", "1") is True  # and grading goes on


def test_output_printed_in_the_helper_cannot_corrupt_its_answers(pool, monkeypatch, no_grading_in_this_process):
    monkeypatch.setattr(grading, "VERIFY_IN_HELPER", f"{__name__}:prints_then_agrees")
    assert _in_thread(grade_boxed, "\\boxed{1}", "2") is True  # the stand-in's answer arrives intact
    assert _in_thread(grade_boxed, "\\boxed{1}", "2") is True
    assert pool.killed == 0 and len(pool._idle) == 1
