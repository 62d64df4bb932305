"""`mechsteer ls`: every run folder under a root (the full run and its `limit-N/` run, marked), with the cells
recorded, stale and damaged counted right after a run, after `--force`, after a code change (the cells'
fingerprint changes, as in test_stale_cells.py) and after a cell is damaged by hand; `--format json`."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import make_tiny_model
from recorded_runs import eval_cell, write_run
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from typer.testing import CliRunner

from mechsteer.api import list_outputs, load_study
from mechsteer.cli.app import app
from mechsteer.engine import code_version


@pytest.fixture
def study_file(tmp_path):
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    doc = {
        "name": "listed",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 4.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {"first": {"kind": "first_token", "prompts": ["ab", "hello"], "template": "raw", "track": ["a"]}},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "s.yaml"


def _counts(df) -> dict:
    return {
        ("limit" if r.limit == r.limit and r.limit is not None else "full"): (r.cells, r.recorded, r.stale, r.damaged)
        for r in df.itertuples()
    }


def test_counts_after_run_force_code_change_and_damage(study_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    study = load_study(study_file)
    study.run(output_dir=out)
    study.run(limit=1, output_dir=out)
    df = list_outputs(out)
    assert [r.folder for r in df.itertuples()] == [str(out / "listed"), str(out / "listed" / "limit-1")]
    assert _counts(df) == {"full": (2, 2, 0, 0), "limit": (2, 2, 0, 0)}
    assert list(df.limit.fillna(0)) == [0, 1] and set(df.study) == {"listed"} and set(df.models) == {"tiny"}
    assert all(r.report.endswith("report/report.html") for r in df.itertuples()) and df.last_run.notna().all()
    before = df.last_run.iloc[0]

    forced = study.run(output_dir=out, force=True)
    assert len(forced.run_summary.executed) == 2
    df = list_outputs(out)
    assert _counts(df) == {"full": (2, 2, 0, 0), "limit": (2, 2, 0, 0)} and df.last_run.iloc[0] >= before

    real = code_version.code_fingerprint

    def pretended(*args, **kwargs):  # a bug fix anywhere in the code that computes cells
        return {**real(*args, **kwargs), "source": "0" * 64}

    monkeypatch.setattr("mechsteer.engine.plan.code_fingerprint", pretended)
    assert _counts(list_outputs(out)) == {"full": (2, 2, 2, 0), "limit": (2, 2, 2, 0)}
    monkeypatch.undo()

    cell = next(p for p in (out / "listed" / "cells").iterdir() if not p.name.startswith("."))
    (cell / "metrics.json").unlink()
    assert _counts(list_outputs(out)) == {"full": (2, 1, 0, 1), "limit": (2, 2, 0, 0)}

    r = CliRunner().invoke(app, ["ls", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [(x["recorded"], x["stale"], x["damaged"], x["limit"]) for x in rows] == [(1, 0, 1, None), (2, 0, 0, 1)]
    text = CliRunner().invoke(app, ["ls", str(out)])
    assert text.exit_code == 0 and "(limit 1)" in text.output and "listed" in text.output


def test_folders_at_any_depth_and_unknown_staleness(tmp_path):
    """Output roots of the studies benchmark nest deeper (`<root>/<time>/<study>`); a folder whose study file
    is gone still lists its counts, with stale unknown and the reason."""
    write_run(tmp_path / "bench" / "20260101-000000" / "s", study="s", cells=[eval_cell("m", "base", [1, 0])])
    write_run(tmp_path / "bench" / "s2", study="s2", cells=[eval_cell("m", "base", [1, 0])])
    (tmp_path / "bench" / "s2" / "cells" / "notes").mkdir()  # a stray folder inside a run is not a run
    df = list_outputs(tmp_path / "bench")
    assert [r.study for r in df.itertuples()] == ["s", "s2"]
    assert df.stale.isna().all() and all("study file not found" in n for n in df.note)
    assert (df.recorded == 1).all()
    bad = CliRunner().invoke(app, ["ls", str(tmp_path / "nowhere")])
    assert bad.exit_code == 1 and "no such folder" in bad.output
