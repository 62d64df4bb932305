"""Checkpoints and --resume: an interrupted run resumed from its checkpoint ends bit-for-bit where the
uninterrupted run ends (vectors, AdamW state, metrics); and a trained vector set used through the `add`
intervention reproduces the trainer's own forward pass exactly."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model
from tolerance import logits_tolerance
from train_helpers import VOCAB, rows, tiny_lm, train_spec

from mechsteer.errors import MechsteerError
from mechsteer.train.checkpoint import latest_checkpoint
from mechsteer.train.trainer import Trainer
from mechsteer.vectors.vector_set import load_vector_set

TIMING = {"t_sample", "t_reward", "t_update", "t_step", "tokens_per_s", "train_seconds", "seconds"}


def _reward(c):
    """Learnable and position-dependent: +1 when the completion's first token is even."""
    return 1.0 if c.token_ids and c.token_ids[0] % 2 == 0 else -1.0


def _spec(**over):
    # warm-up of 2 steps straddles the interruption at step 2; checkpoints every 2 steps
    return train_spec(
        rloo={"group_size": 4, "prompts_per_step": 2, "steps": 4, "lr": 0.05, "max_new_tokens": 3, "warmup_ratio": 0.4},
        checkpoint_every=2,
        **over,
    )


def _trainer(out, steps=None):
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    return Trainer(_spec(), lm=lm, output_dir=out, rows=rows(5), reward_fn=_reward, steps=steps)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_resume_is_bit_for_bit(tmp_path, monkeypatch):
    full = _trainer(tmp_path / "full").run()

    crashed = _trainer(tmp_path / "resumed")
    real_step = Trainer.step

    def crash_at_3(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        crashed.run()
    monkeypatch.setattr(Trainer, "step", real_step)
    assert latest_checkpoint(tmp_path / "resumed" / "checkpoints").name == "step-000002"

    resumed = _trainer(tmp_path / "resumed").run(resume=True)
    a, b = load_vector_set(full.final_path), load_vector_set(resumed.final_path)
    assert a.vectors.norm() > 0
    assert torch.equal(a.vectors, b.vectors)
    assert _strip(full.records) == _strip(resumed.records)
    sa = json.loads((tmp_path / "full/checkpoints/step-000004/state.json").read_text())
    sb = json.loads((tmp_path / "resumed/checkpoints/step-000004/state.json").read_text())
    assert sa["param_groups"] == sb["param_groups"]
    from safetensors.torch import load_file

    ta = load_file(str(tmp_path / "full/checkpoints/step-000004/state.safetensors"))
    tb = load_file(str(tmp_path / "resumed/checkpoints/step-000004/state.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta if not k.startswith("rng/"))


def test_checkpoint_vectors_carry_metadata(tmp_path):
    res = _trainer(tmp_path).run()
    vs = load_vector_set(tmp_path / "checkpoints" / "step-000002" / "vectors.safetensors")
    for key in ("step", "reward_mean", "accuracy", "lr", "seed", "model_revision", "setup"):
        assert key in vs.meta, key
    assert vs.meta["step"] == "2" and vs.meta["model_revision"] == "tiny-rev"
    assert (tmp_path / "train.png").stat().st_size > 0
    assert res.steps == 4 and (tmp_path / "summary.json").is_file()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["type"] == "step"] == [1, 2, 3, 4]


def test_resume_refuses_a_different_spec_or_no_checkpoint(tmp_path):
    with pytest.raises(MechsteerError, match="no checkpoint"):
        _trainer(tmp_path / "empty").run(resume=True)
    _trainer(tmp_path / "a", steps=2).run()
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    other = Trainer(
        train_spec(rloo={"group_size": 4, "prompts_per_step": 2, "steps": 4, "lr": 0.01, "max_new_tokens": 3}),
        lm=lm,
        output_dir=tmp_path / "a",
        rows=rows(5),
        reward_fn=_reward,
    )
    with pytest.raises(MechsteerError, match="different training spec"):
        other.run(resume=True)


def test_a_fresh_run_clears_an_earlier_runs_checkpoints(tmp_path):
    """A fresh (not resumed) run into a folder that holds another run's checkpoints and final vectors leaves
    only its own: `checkpoint: 4` can no longer read the earlier run's step 4."""
    from mechsteer.train.checkpoint import checkpoint_steps

    out = tmp_path / "run"
    _trainer(out).run()  # steps 2 and 4
    assert sorted(checkpoint_steps(out / "checkpoints")) == [2, 4]
    (out / "best.json").write_text('{"step": 4}')  # as an eval.select run would have left it
    (out / "checkpoints" / ".step-000006.tmp").mkdir()  # a crashed writer's leftover
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB, seed=1))  # another model: other vectors
    fresh = Trainer(_spec(), lm=lm, output_dir=out, rows=rows(5), reward_fn=_reward, steps=2).run()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert not (out / "best.json").exists()
    mine = load_vector_set(out / "checkpoints" / "step-000002" / "vectors.safetensors")
    assert torch.equal(mine.vectors, load_vector_set(fresh.final_path).vectors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_trained_vectors_through_add_reproduce_the_trainer_forward(tmp_path, dtype):
    from mechsteer.hooks import HookScope
    from mechsteer.interventions import steering
    from mechsteer.spec.kinds.interventions import AddSpec

    model = make_tiny_model("qwen2", vocab_size=VOCAB, dtype=dtype)
    lm = tiny_lm(model, dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
    spec = train_spec(
        setup={"layers": [0, 2, 3]},
        rloo={"group_size": 4, "prompts_per_step": 2, "steps": 2, "lr": 0.1, "max_new_tokens": 3},
    )
    tr = Trainer(spec, lm=lm, output_dir=tmp_path, rows=rows(4), reward_fn=_reward)
    res = tr.run()
    vs = load_vector_set(res.final_path)
    assert vs.layers == [0, 2, 3] and vs.vectors[[0, 2, 3]].norm(dim=1).min() > 0
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    with HookScope("trainer") as scope, torch.no_grad():
        tr.params.attach(scope)
        mine = model(input_ids=ids).logits
    with steering(model, lm.adapter, [AddSpec(vector="v")], {"v": vs}), torch.no_grad():
        theirs = model(input_ids=ids).logits
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    assert torch.equal(mine, theirs)
    assert not torch.equal(mine, plain)


@pytest.mark.parametrize("setup", ["lora1", "at_place"])
def test_lora1_and_at_place_exports_reproduce_the_trainer_forward(tmp_path, setup):
    """The `lora1` and `add_at_place` interventions read what the trainer writes and give its logits."""
    from mechsteer.hooks import HookScope
    from mechsteer.interventions import steering
    from mechsteer.spec.kinds.placement import AddAtPlaceSpec, Lora1Spec

    model = make_tiny_model("llama", vocab_size=VOCAB)
    lm = tiny_lm(model)
    spec = train_spec(
        setup={"lora1": [1, 3]} if setup == "lora1" else {"at_place": {"layer": 2, "place": "self_attn"}},
        rloo={"group_size": 4, "prompts_per_step": 2, "steps": 2, "lr": 0.1, "max_new_tokens": 3},
    )
    tr = Trainer(spec, lm=lm, output_dir=tmp_path, rows=rows(4), reward_fn=_reward)
    res = tr.run()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    with HookScope("trainer") as scope, torch.no_grad():
        tr.params.attach(scope)
        mine = model(input_ids=ids).logits
    if setup == "lora1":
        ivs, vectors = [Lora1Spec(path=str(res.final_path))], {}
    else:
        ivs, vectors = [AddAtPlaceSpec(vector="v")], {"v": load_vector_set(res.final_path)}
    with steering(model, lm.adapter, ivs, vectors), torch.no_grad():
        theirs = model(input_ids=ids).logits
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    tol = logits_tolerance(model, mine, theirs, plain)  # the trainer's hooks vs the intervention's: rounding
    torch.testing.assert_close(mine, theirs, rtol=0, atol=tol)
    assert (mine - plain).abs().max() > 10 * tol
