"""The Ray executor on a local Ray instance with 2 CPU workers: the same cells (hashes), metrics and report as
the local executor; a worker killed mid-run loses no finished cell and a re-run completes the study."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

ray = pytest.importorskip("ray", reason="Ray is installed by scripts/setup.sh (mechsteer[ray])")

from mechsteer.api import load_study  # noqa: E402
from mechsteer.engine.execute import cell_states, execute_plan  # noqa: E402
from mechsteer.engine.ray_executor import RayResources, execute_plan_ray, submit  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ray")
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(d / "model")
    make_tiny_tokenizer().save_pretrained(d / "model")
    doc = {
        "name": "tiny_ray",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 8.0}},
        "conditions": {
            "base": [],
            "steer": [{"kind": "add", "vector": "v", "layer": "penultimate"}],
            "steer_last": [{"kind": "add", "vector": "v", "layer": "last"}],
        },
        "readouts": {
            "gen": {
                "kind": "generate",
                "prompts": ["ab", "hello there", "x"],
                "template": "raw",
                "max_new_tokens": 24,
                "temperature": 1.0,
                "batch_size": 2,
            }
        },
        "seeds": [0, 1, 2, 3],
    }
    (d / "s.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d / "s.yaml"


def _metrics(plan) -> dict:
    return {c.hash: json.loads((plan.cells_dir / c.hash / "metrics.json").read_text()) for c in plan.unique_cells()}


def test_ray_gives_the_local_executor_cells_and_metrics(tmp_path, study_file, ray_cluster):
    local = load_study(study_file).plan(output_dir=tmp_path / "local")
    execute_plan(local)
    remote = load_study(study_file).plan(output_dir=tmp_path / "ray")
    summary = execute_plan_ray(remote, cpus_per_worker=1)
    assert sorted(summary.executed) == sorted(c.hash for c in remote.unique_cells())
    assert [c.hash for c in local.cells] == [c.hash for c in remote.cells]
    assert _metrics(local) == _metrics(remote)
    assert all(s.state == "fresh" for s in cell_states(remote).values())
    again = execute_plan_ray(remote)
    assert again.executed == [] and len(again.cached) == len(remote.unique_cells())


def test_killed_worker_loses_no_finished_cell_and_rerun_completes(tmp_path, study_file, ray_cluster):
    plan = load_study(study_file).plan(output_dir=tmp_path / "out")
    plan.write_summary()
    todo = plan.unique_cells()
    refs = submit(plan, todo, RayResources(cpus_per_worker=1), workers=2)
    deadline = time.time() + 240
    done: list[str] = []
    while time.time() < deadline:
        done = [h for h, s in cell_states(plan).items() if s.state == "fresh"]
        if done:
            break
        time.sleep(0.05)
    for r in refs:
        ray.cancel(r, force=True)  # kills the worker processes mid-run
    finished = {h: (plan.cells_dir / h / "metrics.json").read_text() for h in done}
    assert finished, "no cell finished before the deadline"
    states = cell_states(plan)
    assert all(states[h].state == "fresh" for h in finished), "a finished cell was damaged by the kill"
    summary = execute_plan_ray(plan, cpus_per_worker=1)
    assert all(s.state == "fresh" for s in cell_states(plan).values())
    assert set(summary.cached) >= set(finished)
    for h, text in finished.items():
        assert (plan.cells_dir / h / "metrics.json").read_text() == text, "a finished cell was recomputed"
