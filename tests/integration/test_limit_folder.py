"""A `--limit N` run goes to its own folder (`<output>/<study>/limit-N/`): it never replaces the full run's
plan.json or report, so `mechsteer report <output>/<study>` keeps showing the full run."""

from __future__ import annotations

import json

import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from typer.testing import CliRunner

from mechsteer.api import load_results
from mechsteer.cli.app import app


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_limited_run_leaves_the_full_runs_plan_and_report_alone(tmp_path):
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    doc = {
        "name": "lim",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 4.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {
            "first": {"kind": "first_token", "prompts": ["ab", "hello", "abc"], "template": "raw", "track": ["a"]}
        },
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    out, full = tmp_path / "out", tmp_path / "out" / "lim"
    runner = CliRunner()
    r = runner.invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    plan_before, report_before = (full / "plan.json").read_bytes(), _snapshot(full / "report")

    r = runner.invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(out), "--limit", "1", "-q"])
    assert r.exit_code == 0, r.output
    assert (full / "plan.json").read_bytes() == plan_before
    assert _snapshot(full / "report") == report_before
    limited = full / "limit-1"
    assert json.loads((limited / "plan.json").read_text())["limit"] == 1
    lim = load_results(limited)
    assert {len(lim.store.read_samples(c["hash"])) for c in lim.cells} == {1}  # one prompt per cell

    r = runner.invoke(app, ["report", str(full)])
    assert r.exit_code == 0, r.output
    assert _snapshot(full / "report") == report_before  # rebuilt from the full run's cells: the same report
    assert {c["hash"] for c in load_results(full).cells} == {c["hash"] for c in json.loads(plan_before)["cells"]}
    assert not {c["hash"] for c in load_results(limited).cells} & {c["hash"] for c in load_results(full).cells}
