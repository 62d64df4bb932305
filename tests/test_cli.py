"""CLI behaviour that a user meets first: validate stays torch-free and fast, schema drift is detectable,
the bundled studies validate, errors exit 1 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mechsteer.cli.app import app

REPO = Path(__file__).resolve().parent.parent


def test_validate_never_imports_torch():
    code = (
        "import sys\n"
        "from mechsteer.cli.app import app\n"
        "try:\n"
        "    app(['validate', *sys.argv[1:]])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    studies = sorted(str(p) for p in (REPO / "studies").glob("*.yaml"))
    assert studies
    r = subprocess.run([sys.executable, "-c", code, *studies], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_schema_check_detects_drift(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["schema", "--out-dir", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["schema", "--check", "--out-dir", str(tmp_path)]).exit_code == 0
    f = tmp_path / "study.schema.json"
    f.write_text(f.read_text().replace('"penultimate"', '"second_to_last"'))
    r = runner.invoke(app, ["schema", "--check", "--out-dir", str(tmp_path)])
    assert r.exit_code == 1 and "out of date" in r.output


def test_committed_schemas_are_current():
    r = CliRunner().invoke(app, ["schema", "--check", "--out-dir", str(REPO / "schemas")])
    assert r.exit_code == 0, r.output


def test_plan_needs_no_model(tmp_path):
    r = CliRunner().invoke(app, ["plan", str(REPO / "studies" / "quickstart.yaml"), "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "to run" in r.output and "quickstart" in r.output
