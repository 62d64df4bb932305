"""Best-checkpoint selection (the paper keeps, per training run, the checkpoint with the best held-out
accuracy): `select_best` against hand-picked records, a training run writing `best.json`, and a study reading
that checkpoint through `{kind: trained, checkpoint: best}`."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from conftest import make_tiny_model
from train_helpers import VOCAB, rows, tiny_lm, train_spec

from mechsteer.engine.plan import bind_vectors
from mechsteer.engine.vectors import BuildContext
from mechsteer.errors import VectorError
from mechsteer.spec.loader import load_study
from mechsteer.train.checkpoint import select_best
from mechsteer.train.trainer import Trainer
from mechsteer.vectors.vector_set import load_vector_set


def _ev(step, greedy, sampled=None):
    r = {"type": "eval", "step": step, "greedy": {"lenient": greedy, "boxed": 0.0}}
    if sampled is not None:
        r["sampled"] = {"lenient": sampled, "boxed": 0.0}
    return r


def test_select_best_picks_the_highest_checkpointed_value_and_the_earliest_tie():
    evals = [_ev(0, 0.9), _ev(2, 0.25, 0.5), _ev(3, 0.75), _ev(4, 0.5, 0.5), _ev(6, 0.75)]
    # step 0 (the base model) and step 3 (no checkpoint there) do not compete
    best = select_best(evals, {2, 4, 6}, "greedy_lenient")
    assert best["step"] == 6 and best["value"] == 0.75
    assert [c["step"] for c in best["candidates"]] == [2, 4, 6]
    # sampled_lenient: 0.5 at steps 2 and 4 -> the earliest wins; step 6 has no sampled record
    assert select_best(evals, {2, 4, 6}, "sampled_lenient")["step"] == 2
    assert select_best(evals, {5}, "greedy_lenient") is None


def test_a_run_with_eval_select_writes_best_json_and_a_study_reads_that_checkpoint(tmp_path, monkeypatch):
    spec = train_spec(
        rloo={"steps": 6, "prompts_per_step": 2, "max_new_tokens": 3},
        checkpoint_every=2,
        eval={"n": 2, "samples": 0, "every": 2, "max_new_tokens": 3, "select": "greedy_lenient"},
    )
    scripted = {0: 0.0, 2: 0.25, 4: 0.75, 6: 0.5}  # held-out accuracy by step: step 4 is the best
    calls = []

    def fake_evaluate(self):
        step = len(calls) * 2
        calls.append(step)
        return {"greedy": {"lenient": scripted[step], "boxed": 0.0}, "seconds": 0.0}

    monkeypatch.setattr(Trainer, "evaluate", fake_evaluate)
    out = tmp_path / "runs" / "tr"
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    Trainer(spec, lm=lm, output_dir=out, rows=rows(5), eval_rows=rows(2)).run()
    assert calls == [0, 2, 4, 6]
    best = json.loads((out / "best.json").read_text())
    assert best["step"] == 4 and best["value"] == 0.75 and best["metric"] == "greedy_lenient"
    assert json.loads((out / "summary.json").read_text())["best"]["step"] == 4

    (tmp_path / "train.yaml").write_text(
        textwrap.dedent(
            """
            name: tr
            model: {id: smollm2-135m}
            rloo: {steps: 6, max_new_tokens: 8}
            data: {kind: mini}
            output: runs/tr
            """
        )
    )
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent(
            """
            name: s
            models: {m: {id: smollm2-135m}}
            vectors:
              best: {kind: trained, train: train.yaml, checkpoint: best}
              final: {kind: trained, train: train.yaml}
            conditions: {base: [], steer: [{kind: add, vector: best}]}
            readouts: {r: {kind: first_token, prompts: [a]}}
            """
        )
    )
    vectors = bind_vectors(load_study(tmp_path / "s.yaml"))
    n, d = lm.shape.n_layers, lm.shape.d_model
    got = BuildContext(n_layers=n, d_model=d, specs=vectors).get("best")
    want = load_vector_set(out / "checkpoints" / "step-000004" / "vectors.safetensors")
    final = BuildContext(n_layers=n, d_model=d, specs=vectors).get("final")
    assert not torch.equal(want.vectors, final.vectors)  # the selection matters: step 4 != step 6
    assert torch.equal(got.vectors, want.vectors)
    (out / "best.json").unlink()
    vectors = bind_vectors(load_study(tmp_path / "s.yaml"))  # a plan compiled now finds no selection
    with pytest.raises(VectorError, match=r"no best.json.*eval.select"):
        BuildContext(n_layers=n, d_model=d, specs=vectors).get("best")


def test_select_needs_the_evaluation_it_names():
    with pytest.raises(ValueError, match="needs samples > 0"):
        train_spec(eval={"samples": 0, "select": "sampled_lenient"})
