"""The engine end to end on a tiny local model: records, cache hits on re-run, shared baseline cells,
resume after an interrupted run with nothing lost or half-written, and the report tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from typer.testing import CliRunner

from mechsteer import measurement
from mechsteer.cli.app import app
from mechsteer.engine.execute import execute_plan
from mechsteer.engine.plan import compile_study
from mechsteer.engine.store import CellStore
from mechsteer.spec.loader import load_study


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-llama")
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(d)
    make_tiny_tokenizer().save_pretrained(d)
    return d


def _study(tmp_path: Path, model_dir: Path, **extra) -> Path:
    doc = {
        "name": "tiny",
        "models": {"tiny": {"id": str(model_dir), "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 8.0}, "z": {"kind": "zeros"}},
        "conditions": {
            "base": [],
            "base_again": [],
            "zero": [{"kind": "add", "vector": "z"}],
            "steer": [{"kind": "add", "vector": "v", "layer": "penultimate"}],
            "steer_gen": [{"kind": "add", "vector": "v", "layer": [1, 2], "positions": "generated"}],
        },
        "readouts": {
            "gen": {
                "kind": "generate",
                "prompts": ["ab", "hello there", "x"],
                "template": "raw",
                "max_new_tokens": 6,
                "batch_size": 2,
            },
            "first": {"kind": "first_token", "prompts": ["ab", "hello there"], "template": "raw", "track": ["a"]},
        },
    }
    doc.update(extra)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def test_run_records_cells_and_reuses_them(tmp_path, tiny_model_dir):
    study = _study(tmp_path, tiny_model_dir)
    plan = compile_study(load_study(study), output_root=tmp_path / "out")
    assert len(plan.cells) == 10
    # base and base_again have identical (empty) interventions: one shared cell per measurement
    assert len(plan.unique_cells()) == 8
    first = execute_plan(plan)
    assert len(first.executed) == 8 and not first.cached
    store = CellStore(plan.cells_dir)
    for c in plan.cells:
        rec = store.read_record(c.hash)
        assert rec["hash"] == c.hash and rec["model_provenance"]["dtype"] == "float32"
        assert rec["environment"]["packages"]["torch"] != "not installed"
        assert rec["spec_hash"] and rec["timing"]["seconds"] >= 0
        # the spec the cell ran, not a copy of the whole study
        assert rec["measurement_spec"] == c.measurement.spec.model_dump(mode="json") and "resolved_spec" not in rec
    steer = next(c for c in plan.cells if c.condition == "steer" and c.measurement.id == "readout:gen")
    assert store.read_record(steer.hash)["vectors"]["v"]["sha256"]
    again = execute_plan(compile_study(load_study(study), output_root=tmp_path / "out"))
    assert again.executed == [] and len(again.cached) == 8


def test_zero_vector_reproduces_baseline_and_steering_changes_outputs(tmp_path, tiny_model_dir):
    study = _study(tmp_path, tiny_model_dir)
    plan = compile_study(load_study(study), output_root=tmp_path / "out")
    execute_plan(plan)
    store = CellStore(plan.cells_dir)
    by = {(c.condition, c.measurement.id): store.read_samples(c.hash) for c in plan.cells}
    texts = lambda cond: [s["completion"] for s in by[(cond, "readout:gen")]]  # noqa: E731
    assert texts("zero") == texts("base")
    assert by[("zero", "readout:first")] == by[("base", "readout:first")]
    assert texts("steer") != texts("base")
    assert by[("steer", "readout:first")] != by[("base", "readout:first")]
    # steering only generated positions leaves the first-token distribution (computed on the prompt) intact
    assert by[("steer_gen", "readout:first")] == by[("base", "readout:first")]
    assert texts("steer_gen") != texts("base")


def test_changing_a_condition_reruns_only_its_cells(tmp_path, tiny_model_dir):
    study = _study(tmp_path, tiny_model_dir)
    execute_plan(compile_study(load_study(study), output_root=tmp_path / "out"))
    doc = yaml.safe_load(study.read_text())
    doc["conditions"]["steer"][0]["scale"] = 2.0
    doc["conditions"]["renamed_base"] = doc["conditions"].pop("base")
    study.write_text(yaml.safe_dump(doc, sort_keys=False))
    s = execute_plan(compile_study(load_study(study), output_root=tmp_path / "out"))
    assert len(s.executed) == 2  # steer x {gen, first}; renaming a condition re-runs nothing


def test_interrupted_run_keeps_finished_cells_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
    study = _study(tmp_path, tiny_model_dir)
    plan = compile_study(load_study(study), output_root=tmp_path / "out")
    real_runner_for = measurement.runner_for
    real = real_runner_for("first_token")
    calls = {"n": 0}

    def interrupt_on_second_call(task):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(
        measurement,
        "runner_for",
        lambda kind: interrupt_on_second_call if kind == "first_token" else real_runner_for(kind),
    )
    with pytest.raises(KeyboardInterrupt):
        execute_plan(plan)
    store = CellStore(plan.cells_dir)
    done = [c.hash for c in plan.unique_cells() if store.is_done(c.hash)]
    assert 0 < len(done) < 8
    # nothing half-written: every cell directory is complete, and no temporary directory is left
    dirs = [p for p in plan.cells_dir.iterdir()]
    assert all(store.is_done(p.name) for p in dirs if not p.name.startswith(".")), dirs
    assert not [p for p in dirs if p.name.startswith(".") and p.name != ".locks"]  # .locks: the cells' claims
    monkeypatch.setattr(measurement, "runner_for", real_runner_for)
    resumed = execute_plan(plan)
    assert sorted(resumed.cached) == sorted(done)
    assert len(resumed.executed) == 8 - len(done)


def test_cli_run_writes_report_and_second_run_is_cached(tmp_path, tiny_model_dir):
    study = _study(tmp_path, tiny_model_dir)
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(study), "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    report = out / "tiny" / "report"
    assert (report / "report.md").is_file() and (report / "results.csv").is_file()
    md = (report / "table.md").read_text()
    assert "| tiny" in md and "steer_gen" in md and "Difference from the baseline condition `base`" in md
    r2 = runner.invoke(app, ["run", str(study), "-o", str(out), "--quiet"])
    assert r2.exit_code == 0 and "ran 0 cells, 8 cached" in r2.output
    p = runner.invoke(app, ["plan", str(study), "-o", str(out)])
    assert p.exit_code == 0 and "8 cached, 0 to run" in p.output


def test_limit_changes_the_cells(tmp_path, tiny_model_dir):
    study = _study(tmp_path, tiny_model_dir)
    a = compile_study(load_study(study), output_root=tmp_path / "out")
    b = compile_study(load_study(study), limit=1, output_root=tmp_path / "out")
    assert {c.hash for c in a.cells}.isdisjoint({c.hash for c in b.cells})
    assert b.cells[0].measurement.spec.prompts == ["ab"]


def test_wrong_vector_shape_is_a_clear_error(tmp_path, tiny_model_dir):
    from mechsteer.vectors import VectorSet, save_vector_set

    save_vector_set(VectorSet(torch.randn(30, 576), list(range(30))), tmp_path / "big.safetensors")
    study = _study(
        tmp_path, tiny_model_dir, vectors={"v": {"kind": "file", "path": "big.safetensors"}, "z": {"kind": "zeros"}}
    )
    r = CliRunner().invoke(app, ["run", str(study), "-o", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 1
    # caught by validation, before any model loads, with the field and both shapes
    out = " ".join(r.output.split())
    assert "vectors.v.path" in out and "[30 layers x d_model 576]" in out and "[4 layers x d_model 32]" in out
    assert "Traceback" not in r.output


def test_missing_local_model_is_a_clear_error(tmp_path):
    study = _study(tmp_path, tmp_path / "no-such-model")
    r = CliRunner().invoke(app, ["run", str(study), "-o", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 1 and "local model directory not found" in r.output


def test_offline_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    doc = yaml.safe_load(_study(tmp_path, Path("x")).read_text())
    doc["models"]["tiny"]["id"] = "someorg/some-model"
    p = tmp_path / "hub.yaml"
    p.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(app, ["run", str(p), "-o", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 1, r.output
    assert "HF_HUB_OFFLINE=1" in r.output and "local" in r.output and "Traceback" not in r.output


def test_prefix_token_takes_the_model_default(tmp_path, tiny_model_dir):
    study = _study(tmp_path, tiny_model_dir)
    doc = yaml.safe_load(study.read_text())
    doc["models"]["tiny"]["prefix_token"] = "T"
    doc["conditions"] = {"base": [], "prefixed": [{"kind": "prefix_token"}]}
    doc["readouts"] = {"gen": doc["readouts"]["gen"]}
    study.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = compile_study(load_study(study), output_root=tmp_path / "out")
    execute_plan(plan)
    store = CellStore(plan.cells_dir)
    prompts = {c.condition: store.read_record(c.hash)["info"]["prompt_example"] for c in plan.cells}
    assert prompts["prefixed"] == prompts["base"] + "T"
