"""The paper's best-checkpoint selection at paper scale (finding 2): a study evaluates every checkpoint of a run
on the benchmarks, `mechsteer select-checkpoints` writes each run's best.json from the six-benchmark Average
(per seed, then over seeds), studies read it as `checkpoint: best`, and every cell and the report say which
step a trained vector set came from."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from mechsteer.engine.plan import bind_vectors, compile_study
from mechsteer.engine.store import CellStore
from mechsteer.engine.vectors import BuildContext
from mechsteer.errors import MechsteerError
from mechsteer.report.checkpoint_selection import candidate_of, select, write_best
from mechsteer.report.provenance import checkpoint_rows
from mechsteer.results import Results
from mechsteer.spec.evaluation import PAPER_AVERAGE_TASKS
from mechsteer.spec.loader import load_study
from mechsteer.vectors.vector_set import VectorSet, save_vector_set

N, D = 30, 576
TRAIN = """
name: tr
model: {id: smollm2-135m}
setup: all_layers
rloo: {steps: 6, max_new_tokens: 8}
data: {kind: mini}
output: runs/tr
profiles:
  single: {setup: {single_layer: 3}}
"""


def _runs(tmp_path):
    """An all-layer run and two per-block runs (blocks 3, 7), each with checkpoints 2, 4, 6 and a final file."""
    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN))
    for run, rows_of in (
        (tmp_path / "runs" / "tr", range(N)),
        *((tmp_path / "runs" / "tr-single" / f"layer-{k:02d}", [k]) for k in (3, 7)),
    ):
        for step in (2, 4, 6):
            rows = torch.zeros(N, D)
            rows[list(rows_of)] = float(step)
            meta = {"step": str(step)}
            save_vector_set(
                VectorSet(rows, list(rows_of), meta), run / "checkpoints" / f"step-{step:06d}" / "vectors.safetensors"
            )
        save_vector_set(VectorSet(rows, list(rows_of), {"step": "6"}), run / "vectors.safetensors")


STUDY = """
name: ck
models: {m: {id: smollm2-135m}}
vectors:
  a2: {kind: trained, train: train.yaml, checkpoint: 2}
  a4: {kind: trained, train: train.yaml, checkpoint: 4}
  a6: {kind: trained, train: train.yaml}
  s2: {kind: trained, train: train.yaml, profile: single, per_block: [3, 7], checkpoint: 2}
  s4: {kind: trained, train: train.yaml, profile: single, per_block: [3, 7], checkpoint: 4}
  s6: {kind: trained, train: train.yaml, profile: single, per_block: [3, 7], checkpoint: 6}
conditions:
  base: []
  all_{step}:
    sweep: {step: [2, 4, 6]}
    interventions: [{kind: add, vector: "a{step}"}]
  l{layer}_{step}:
    sweep: {layer: [3, 7], step: [2, 4, 6]}
    interventions: [{kind: add, vector: "s{step}", layer: "{layer}"}]
  scaled: [{kind: add, vector: a2, scale: 2.0}]
evaluation: {tasks: [aime24, aime25, amc23, math500, minerva_math, olympiadbench], protocol: paper, seeds: [0, 1]}
"""


def _value(cond: str, task: str, seed: int) -> float:
    """Hand-made accuracies: distinct per condition, task and seed (a sum of unrelated terms)."""
    return (sum(map(ord, cond)) % 17) / 40 + PAPER_AVERAGE_TASKS.index(task) / 97 + seed / 53


def _recorded_study(tmp_path):
    """The plan of STUDY with every eval cell recorded (hand-made metrics, the vectors each cell built)."""
    _runs(tmp_path)
    (tmp_path / "ck.yaml").write_text(textwrap.dedent(STUDY))
    ls = load_study(tmp_path / "ck.yaml")
    plan = compile_study(ls, output_root=tmp_path / "out")
    store = CellStore(plan.output_dir / "cells")
    vectors = bind_vectors(ls)
    for cell in plan.cells:
        if store.is_done(cell.hash):
            continue
        task = cell.measurement.id.split(":", 1)[1]
        built = {}
        ctx = BuildContext(n_layers=N, d_model=D, specs=vectors)
        for n in sorted({r for iv in cell.interventions for r in iv.vector_refs()}):
            vs = ctx.get(n)
            built[n] = {"sha256": vs.sha256(), "layers": vs.layers, "norms": vs.norms(), "meta": vs.meta}
        record = {
            "hash": cell.hash,
            "interventions": [iv.model_dump(mode="json") for iv in cell.interventions],
            "vectors": built,
        }
        store.write(cell.hash, record, {"acc_boxed": _value(cell.condition, task, cell.seed)}, [])
    plan.write_summary()
    return plan


def test_a_condition_maps_to_the_run_and_step_it_evaluates(tmp_path):
    plan = _recorded_study(tmp_path)
    res = Results.load(plan.output_dir)
    found = {}
    for c in res.recorded():
        found[c["condition"]] = candidate_of(res.store.read_record(c["hash"]))
    runs = (tmp_path / "runs").resolve()
    assert found["all_4"] == (str(runs / "tr"), 4)
    assert found["all_6"] == (str(runs / "tr"), 6)  # the final file's own step
    assert found["l7_2"] == (str(runs / "tr-single" / "layer-07"), 2)  # one block of a stack = that block's run
    assert found["base"] is None and found["scaled"] is None  # not one checkpoint as trained


def test_selection_is_the_best_six_benchmark_average_and_studies_read_it(tmp_path):
    plan = _recorded_study(tmp_path)
    selection = {e["run"]: e for e in select(Results.load(plan.output_dir))}
    runs = (tmp_path / "runs").resolve()
    by_cond = {str(runs / "tr"): "all_{}", **{str(runs / "tr-single" / f"layer-{k:02d}"): f"l{k}_{{}}" for k in (3, 7)}}
    assert set(selection) == set(by_cond)
    for run, name in by_cond.items():
        # per seed: the mean of the six tasks; then the mean over the two seeds
        avg = {
            s: sum(sum(_value(name.format(s), t, seed) for t in PAPER_AVERAGE_TASKS) / 6 for seed in (0, 1)) / 2
            for s in (2, 4, 6)
        }
        want = max(avg, key=lambda s: (avg[s], -s))
        entry = selection[run]
        assert entry["step"] == want and entry["value"] == pytest.approx(avg[want], rel=1e-12)
        assert [c["step"] for c in entry["candidates"]] == [2, 4, 6]
        assert "six-benchmark Average" in entry["metric"]
    assert len({e["step"] for e in selection.values()}) > 1  # the hand-made values make the runs disagree

    write_best(list(selection.values()))
    (tmp_path / "read.yaml").write_text(
        textwrap.dedent(
            """
            name: rd
            models: {m: {id: smollm2-135m}}
            vectors:
              best: {kind: trained, train: train.yaml, checkpoint: best}
              stack: {kind: trained, train: train.yaml, profile: single, per_block: [3, 7], checkpoint: best}
            conditions: {base: [], a: [{kind: add, vector: best}], b: [{kind: add, vector: stack}]}
            evaluation: {tasks: [mini]}
            """
        )
    )
    ctx = BuildContext(n_layers=N, d_model=D, specs=bind_vectors(load_study(tmp_path / "read.yaml")))
    best = ctx.get("best")
    step = selection[str(runs / "tr")]["step"]
    assert float(best.vectors[0, 0]) == step  # the checkpoint's own values
    assert best.meta["checkpoint"] == str(step) and best.meta["checkpoint_rule"] == "best"
    stack = ctx.get("stack")
    runs_meta = json.loads(stack.meta["runs"])
    for k in (3, 7):
        s = selection[str(runs / "tr-single" / f"layer-{k:02d}")]["step"]
        assert float(stack.vectors[k, 0]) == s and runs_meta[str(k)]["checkpoint"] == s


def test_the_report_names_each_trained_sets_checkpoint(tmp_path):
    plan = _recorded_study(tmp_path)
    rows = checkpoint_rows(Results.load(plan.output_dir)).set_index("vectors")
    assert rows.loc["a4", "steps"] == "step 4" and rows.loc["a4", "checkpoint"] == "fixed"
    assert rows.loc["a6", "steps"] == "step 6" and rows.loc["a6", "checkpoint"] == "final"
    assert rows.loc["s2", "steps"] == "block 3: step 2, block 7: step 2"


def test_cli_writes_best_json_and_dry_run_writes_nothing(tmp_path):
    from mechsteer.cli.app import app

    plan = _recorded_study(tmp_path)
    best = tmp_path / "runs" / "tr" / "best.json"
    dry = CliRunner().invoke(app, ["select-checkpoints", str(plan.output_dir), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and not best.exists()
    res = CliRunner().invoke(app, ["select-checkpoints", str(plan.output_dir)])
    assert res.exit_code == 0, res.output
    assert json.loads(best.read_text())["selected_by"]["study"] == "ck"
    empty = CliRunner().invoke(app, ["select-checkpoints", str(tmp_path / "nowhere")])
    assert empty.exit_code == 1 and "Traceback" not in empty.output


def test_a_study_without_checkpoint_conditions_is_refused(tmp_path):
    plan = _recorded_study(tmp_path)
    res = Results.load(plan.output_dir)
    res.summary = dict(res.summary, cells=[c for c in res.cells if c["condition"] in ("base", "scaled")])
    with pytest.raises(MechsteerError, match="no condition adds one checkpoint"):
        select(res)
