"""The git probes behind provenance records print nothing: outside a git checkout they record "no git"
(mechsteer's own `git_revision`, and the lm-eval probe the bridge replaces); inside one, the commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mechsteer.engine import provenance

REPO = Path(__file__).resolve().parents[2]


def _no_git_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "plain"
    folder.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    return folder


def test_git_revision_outside_a_checkout_is_quiet(tmp_path, monkeypatch, capfd):
    folder = _no_git_folder(tmp_path, monkeypatch)
    (folder / "mechsteer" / "engine").mkdir(parents=True)
    monkeypatch.setattr(provenance, "__file__", str(folder / "mechsteer" / "engine" / "provenance.py"))
    provenance.git_revision.cache_clear()
    try:
        assert provenance.git_revision() == {"commit": None, "dirty": None, "note": "no git checkout"}
    finally:
        provenance.git_revision.cache_clear()
    assert capfd.readouterr().err == ""


def test_lm_eval_git_probe_is_replaced_by_a_quiet_one(tmp_path, monkeypatch, capfd):
    import lm_eval.evaluator

    from mechsteer.eval.lm_eval_bridge import quiet_git_commit_hash

    assert lm_eval.evaluator.get_git_commit_hash is quiet_git_commit_hash
    monkeypatch.chdir(_no_git_folder(tmp_path, monkeypatch))
    assert quiet_git_commit_hash() is None
    assert capfd.readouterr().err == ""
    monkeypatch.chdir(REPO)
    expected = subprocess.run(
        ["git", "describe", "--always"], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert quiet_git_commit_hash() == (expected or None)  # the commit in a checkout (this repository's)
