"""`data_dir: $MECHSTEER_DATA_DIR`: a study's local-data folder comes from --data-dir or the environment
variable, never from a path written in the file; when neither is given, running gives a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mechsteer.errors import SpecError
from mechsteer.spec.loader import load_study

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "studies" / "paper_eval.yaml"


def test_paper_eval_local_data_profile_names_no_path():
    doc = yaml.safe_load(PAPER.read_text())
    assert doc["profiles"]["local_data"]["evaluation"]["data_dir"] == "$MECHSTEER_DATA_DIR"
    assert "shared/data" not in PAPER.read_text() and "data_dir: ../" not in PAPER.read_text()


def test_env_var_fills_the_placeholder(monkeypatch, tmp_path):
    monkeypatch.setenv("MECHSTEER_DATA_DIR", str(tmp_path))
    ls = load_study(PAPER, "local_data", data_dir=None)  # what `mechsteer run -p local_data` does
    assert ls.spec.evaluation.data_dir == str(tmp_path.resolve())


def test_data_dir_option_wins_over_the_env_var(monkeypatch, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("MECHSTEER_DATA_DIR", str(tmp_path / "a"))
    ls = load_study(PAPER, "local_data", data_dir=tmp_path / "b")
    assert ls.spec.evaluation.data_dir == str((tmp_path / "b").resolve())


def test_neither_given_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MECHSTEER_DATA_DIR", raising=False)
    with pytest.raises(SpecError) as e:
        load_study(PAPER, "local_data", data_dir=None)
    msg = str(e.value)
    assert "profile 'local_data'" in msg and "evaluation.data_dir" in msg
    assert "--data-dir" in msg and "MECHSTEER_DATA_DIR" in msg


def test_env_var_that_is_not_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MECHSTEER_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(SpecError, match="is not a folder"):
        load_study(PAPER, "local_data", data_dir=None)


def test_validation_alone_keeps_the_placeholder(monkeypatch):
    monkeypatch.delenv("MECHSTEER_DATA_DIR", raising=False)
    assert load_study(PAPER, "local_data").spec.evaluation.data_dir == "$MECHSTEER_DATA_DIR"


def test_other_profiles_ignore_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("MECHSTEER_DATA_DIR", str(tmp_path))
    assert load_study(PAPER, "greedy", data_dir=None).spec.evaluation.data_dir is None


def test_run_command_reports_the_missing_folder(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mechsteer.cli.app import app

    monkeypatch.delenv("MECHSTEER_DATA_DIR", raising=False)
    r = CliRunner().invoke(app, ["plan", str(PAPER), "-p", "local_data", "-o", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "MECHSTEER_DATA_DIR" in r.output and "Traceback" not in r.output
