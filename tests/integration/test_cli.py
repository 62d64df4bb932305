"""CLI behaviour that a user meets first: validate stays torch-free and fast, schema drift is detectable,
the bundled studies validate, errors exit 1 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mechsteer.cli.app import app

REPO = Path(__file__).resolve().parents[2]


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


def test_data_dir_option_points_evaluation_at_local_data(tmp_path):
    data = tmp_path / "data"
    (data / "math500").mkdir(parents=True)
    (data / "math500" / "test.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    study = tmp_path / "s.yaml"
    study.write_text(
        "name: t\nmodels: {m: {id: smollm2-135m}}\nconditions: {base: []}\n"
        "evaluation: {tasks: [math500]}\nreadouts: {r: {kind: first_token, task: math500}}\n"
    )
    from mechsteer.engine.plan import compile_study
    from mechsteer.spec.loader import load_study

    ls = load_study(study, data_dir=data)
    assert ls.spec.evaluation.data_dir == str(data.resolve())
    assert ls.spec.readouts["r"].data_dir == str(data.resolve())
    keys = [c.key["measurement"]["data"] for c in compile_study(ls, output_root=tmp_path).cells]
    assert all("data_sha256" in k for k in keys)  # the local file's content is in every cell hash
    r = CliRunner().invoke(app, ["plan", str(study), "--data-dir", str(tmp_path / "nope"), "-o", str(tmp_path)])
    assert r.exit_code == 1 and "is not a folder" in r.output
