"""A study with an `evaluation:` block run by the engine end to end on a tiny local model: one lm-eval cell
per condition x seed, lm-eval's results and sample logs kept per cell, a zero-vector condition reproducing
the baseline exactly, a steered condition differing, and the paper-shaped table in the report."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import make_tiny_model, register_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

STUDY = """\
name: tiny-eval
models:
  tiny: {id: ./tiny_model, dtype: float32, max_length: 256}
vectors:
  rnd: {kind: random, seed: 1, norm: 6.0, layers: [1]}
  z: {kind: zeros}
conditions:
  base: []
  steered: [{kind: add, vector: rnd}]
  zero: [{kind: add, vector: z}]
evaluation:
  tasks: [mini]
  protocol: paper
  seeds: [0, 1]
  samples: {mini: 2}
  limit: 4
  max_new_tokens: 4
  batch_size: 4
"""


@pytest.fixture
def study(tmp_path, monkeypatch):
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE, max_position_embeddings=512)
    model.save_pretrained(tmp_path / "tiny_model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "tiny_model")
    (tmp_path / "study.yaml").write_text(textwrap.dedent(STUDY))
    # Models loaded by the engine are put under the hook-leak guard too.
    import mechsteer.models.loading as loading

    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: _guarded(real(*a, **k)))
    return tmp_path / "study.yaml"


def _guarded(lm):
    register_model(lm.model)
    return lm


def _marked(text) -> bool:
    return bool(text) and ord(text[0]) % 2 == 0


def _marked_grade(monkeypatch):
    """The tiny random model never answers right, so an accuracy of 0 would pass any aggregation. The real
    grader runs, then a completion counts as boxed-correct when its first character has an even code
    (about half of them): the cell's acc_boxed must equal the share computed here from the sample logs."""
    import dataclasses

    import mechsteer.eval.grading as grading

    real = grading.grade

    def grade(text, gold, **kw):
        return dataclasses.replace(real(text, gold, **kw), boxed_correct=_marked(text))

    monkeypatch.setattr(grading, "grade", grade)


def test_engine_runs_eval_cells_and_reports_the_paper_table(study, tmp_path, monkeypatch):
    from mechsteer.engine.execute import execute_plan
    from mechsteer.engine.plan import compile_study
    from mechsteer.engine.store import CellStore
    from mechsteer.report import write_report
    from mechsteer.spec.loader import load_study

    _marked_grade(monkeypatch)
    plan = compile_study(load_study(study), output_root=tmp_path / "out")
    assert len(plan.unique_cells()) == 6  # 3 conditions (distinct interventions) x 2 seeds
    summary = execute_plan(plan)
    assert len(summary.executed) == 6
    store = CellStore(plan.cells_dir)
    outs, hits = {}, []
    for c in plan.cells:
        d = store.dir(c.hash)
        results = json.loads((d / "lm_eval_results.json").read_text())
        assert "mechsteer_mini" in results["results"]
        samples = store.read_samples(c.hash)
        assert len(samples) == 4 and all(len(s["filtered_resps"][0]) == 2 for s in samples)
        metrics = store.read_metrics(c.hash)
        assert metrics["n_samples"] == 8
        resps = [r for s in samples for r in s["filtered_resps"][0]]
        by_hand = sum(_marked(r) for r in resps) / len(resps)
        assert metrics["acc_boxed"] == pytest.approx(by_hand), (metrics["acc_boxed"], resps)
        hits.append(by_hand)
        outs[(c.condition, c.seed)] = [s["filtered_resps"][0] for s in samples]
    assert 0 < sum(hits) < len(hits), hits  # the check above saw both right and wrong completions
    for seed in (0, 1):
        assert outs[("zero", seed)] == outs[("base", seed)]
        assert outs[("steered", seed)] != outs[("base", seed)]
    assert outs[("base", 0)] != outs[("base", 1)], "seeds must drive sampling"

    # A second run is fully cached (the cell hash covers interventions, vectors, protocol and seed).
    assert len(execute_plan(plan).cached) == 6

    report = write_report(plan)
    text = report.read_text()
    assert "## Benchmark accuracy (paper layout)" in text
    table = (report.parent / "paper_table_boxed.csv").read_text().splitlines()
    assert table[0].startswith("model,condition,mini,mini_std,mini_seeds")
    assert [line.split(",")[1] for line in table[1:]] == ["base", "steered", "zero"]
    assert (report.parent / "paper_table_lenient.csv").is_file()
    assert "Lenient accuracy" in (report.parent / "paper_table.md").read_text()
