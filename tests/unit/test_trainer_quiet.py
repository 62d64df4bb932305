"""The trainer is library code: constructing one loads no model (the caller hands it one, `Trainer.from_spec`
loads the spec's), and training prints nothing: every step, evaluation and message goes to the progress
protocol, which the CLI renders with rich (`RichTrainProgress`)."""

from __future__ import annotations

import inspect
import io

import pytest
from conftest import make_tiny_model
from rich.console import Console
from train_helpers import VOCAB, rows, tiny_lm, train_spec

import mechsteer.models.loading as loading
from mechsteer.progress import RichTrainProgress
from mechsteer.spec.models import ModelSpec
from mechsteer.train.progress import TrainProgress
from mechsteer.train.trainer import Trainer


class Recorder(TrainProgress):
    """Keeps every call as (method, argument)."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []

    def start(self, name, total, done):
        self.calls.append(("start", (name, total, done)))

    def step(self, record, total):
        self.calls.append(("step", (record["step"], total)))

    def eval(self, record):
        self.calls.append(("eval", record["step"]))

    def message(self, text):
        self.calls.append(("message", text))

    def warning(self, text):
        self.calls.append(("warning", text))

    def end(self):
        self.calls.append(("end", None))


def _no_loading(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the trainer loaded a model")

    monkeypatch.setattr(loading, "load_model", refuse)


def _spec():
    return train_spec(
        rloo={"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 2},
        checkpoint_every=1,
        eval={"n": 2, "samples": 0, "every": 1, "max_new_tokens": 2, "select": "greedy_lenient"},
    )


def test_the_trainer_constructs_without_loading_a_model(monkeypatch, tmp_path):
    _no_loading(monkeypatch)
    assert inspect.signature(Trainer).parameters["lm"].default is inspect.Parameter.empty  # no hidden load
    with pytest.raises(TypeError, match="lm"):
        Trainer(_spec(), output_dir=tmp_path)
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    tr = Trainer(_spec(), lm=lm, output_dir=tmp_path, rows=rows(4), eval_rows=rows(2))
    assert tr.lm is lm and tr.total_steps == 2 and tr.params.n_params() > 0
    assert not any(tmp_path.iterdir())  # nothing written before `run`


def test_from_spec_loads_the_model_the_spec_names(monkeypatch, tmp_path):
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    seen = []

    def fake_load(role, spec, base_dir):
        seen.append((role, spec, base_dir))
        return lm

    monkeypatch.setattr(loading, "load_model", fake_load)
    spec = _spec()
    tr = Trainer.from_spec(spec, base_dir=tmp_path, output_dir=tmp_path / "out", rows=rows(4), eval_rows=rows(2))
    assert tr.lm is lm and seen == [("policy", spec.model, tmp_path)]
    assert isinstance(seen[0][1], ModelSpec)


def test_training_prints_nothing_and_reports_through_the_progress_protocol(capfd, tmp_path):
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    (tmp_path / "summary.json").write_text("{}")  # an earlier run's file: a fresh run removes it and says so
    rec = Recorder()
    res = Trainer(
        _spec(), lm=lm, output_dir=tmp_path, rows=rows(4), eval_rows=rows(2), reward_fn=lambda c: 0.0, progress=rec
    ).run()
    assert capfd.readouterr() == ("", "")
    assert res.steps == 2
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["message", "eval", "start", "step", "eval", "step", "eval", "end", "message"]
    assert rec.calls[0][1].startswith("fresh run: removed 1 files") and rec.calls[2][1] == ("tiny", 2, 0)
    assert [c[1] for c in rec.calls if c[0] == "step"] == [(1, 2), (2, 2)]
    assert rec.calls[-1][1].startswith("best checkpoint by greedy_lenient: step ")

    # resuming: the trainer says from where; still nothing on stdout / stderr, and no progress given at all
    Trainer(_spec(), lm=lm, output_dir=tmp_path, rows=rows(4), eval_rows=rows(2), steps=3).run(resume=True)
    assert capfd.readouterr() == ("", "")


def test_the_end_of_the_step_loop_is_reported_when_a_step_fails(tmp_path, monkeypatch):
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    rec = Recorder()
    tr = Trainer(_spec(), lm=lm, output_dir=tmp_path, rows=rows(4), run_eval=False, progress=rec)

    def boom(step):
        raise RuntimeError("step failed")

    monkeypatch.setattr(tr, "step", boom)
    with pytest.raises(RuntimeError, match="step failed"):
        tr.run()
    assert [c[0] for c in rec.calls] == ["start", "end"]


def _record(step, skipped=False):
    return {
        "step": step,
        "reward_mean": 0.5,
        "accuracy": 0.25,
        "loss": -0.125,
        "grad_norm": 0.5,
        "lr": 1e-3,
        "mean_len": 3.0,
        "groups_with_signal": 1,
        "groups": 2,
        "t_step": 0.5,
        "tokens_per_s": 10.0,
        "backward_skipped": skipped,
    }


def test_the_rich_display_renders_steps_evaluations_and_plain_text():
    buf = io.StringIO()
    show = RichTrainProgress(Console(file=buf, highlight=False, width=200), bar=False)
    show.message("resuming from [runs]/x")  # user text with brackets is printed as is, not as markup
    show.start("tiny", 2, 0)
    show.step(_record(1), 2)
    show.step(_record(2, skipped=True), 2)
    show.eval({"step": 2, "greedy": {"lenient": 0.5, "boxed": 0.25}, "seconds": 3.0})
    show.end()
    show.warning("eval.select greedy_lenient: no checkpoint has an evaluation")
    lines = buf.getvalue().splitlines()
    assert lines == [
        "resuming from [runs]/x",
        "step 1/2 reward +0.500 acc 0.250 loss -0.12500 |g| 0.5 lr 1.00e-03 len 3.0 signal 1/2 0.5 s",
        "step 2/2 reward +0.500 acc 0.250 loss -0.12500 |g| 0.5 lr 1.00e-03 len 3.0 signal 1/2 0.5 s "
        "(all advantages 0: backward skipped)",
        "eval @ step 2: greedy 0.500 (boxed 0.250) [3 s]",
        "eval.select greedy_lenient: no checkpoint has an evaluation",
    ]
