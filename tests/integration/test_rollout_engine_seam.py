"""The trainer's rollout-engine seam (`rollouts: vllm`), checked without vLLM: a reference engine that samples
with transformers from the biases synced into it (its own copy of the model, its own hooks) stands in for
vLLM. If the trainer turns the engine's token ids into the same `Rollouts` as the HF sampler, and syncs the
current vectors before every rollout (after each optimizer step, and after `--resume` loaded a checkpoint),
then a run with the reference engine is the `rollouts: hf` run exactly. tests/vllm repeats this with vLLM.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import make_tiny_model
from train_helpers import VOCAB, rows, tiny_lm, train_spec

from mechsteer.errors import MechsteerError
from mechsteer.hooks import HookScope
from mechsteer.models.adapters import decoder_output_tensor, replace_decoder_output
from mechsteer.train.rloo import rloo_loss_backward
from mechsteer.train.rollout import pad_prompts, sample
from mechsteer.train.trainer import Trainer
from mechsteer.train.vllm_rollouts import RolloutSamples, rollouts_from_samples
from mechsteer.vectors.vector_set import load_vector_set

TIMING = {"t_sample", "t_reward", "t_update", "t_step", "tokens_per_s", "train_seconds", "seconds"}
ENGINE_KEYS = {"t_engine_start", "t_sync", "t_generate"}


class ReferenceEngine:
    """A rollout engine on a private copy of a model: `sync` stores the biases, `generate` samples with them
    added after each block (HF `sample`, generator seeded with `seed`), and returns token ids only."""

    def __init__(self, lm):
        self.model = copy.deepcopy(lm.model)
        self.adapter, self.pad = lm.adapter, lm.tokenizer.pad_token_id
        self.bias = torch.zeros(lm.shape.n_layers, lm.shape.d_model)
        self.seen: list[torch.Tensor] = []  # the biases in force at each generate call
        self.closed = False

    def sync(self, bias):
        self.bias = bias.detach().clone().float()
        return 0.0

    def generate(self, prompt_ids, *, group_size, max_new_tokens, temperature, stop_ids, seed):
        self.seen.append(self.bias.clone())
        prompts = pad_prompts(prompt_ids, self.pad)
        with HookScope("reference-engine") as scope:
            for i in range(self.bias.shape[0]):
                hook = lambda m, a, out, v=self.bias[i]: replace_decoder_output(out, decoder_output_tensor(out) + v)
                scope.forward_hook(self.adapter.layer(self.model, i), hook)
            ro = sample(
                self.model,
                prompts,
                group_size=group_size,
                max_new_tokens=torch.tensor(max_new_tokens),
                temperature=temperature,
                stop_ids=stop_ids,
                pad_id=self.pad,
                generator=torch.Generator().manual_seed(seed),
            )
        return RolloutSamples(ro.token_lists(), ro.finished.tolist())

    def close(self):
        self.closed = True


def _reward(c):
    return 1.0 if c.token_ids and c.token_ids[0] % 2 == 0 else -1.0


def _spec(rollouts: str, **rloo):
    return train_spec(
        rollouts=rollouts,
        rloo={"group_size": 4, "prompts_per_step": 2, "steps": 4, "lr": 0.05, "max_new_tokens": 5, **rloo},
        checkpoint_every=2,
    )


def _trainer(out, rollouts: str, engine=None, steps=None, **rloo):
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    if rollouts == "vllm" and engine is None:
        engine = ReferenceEngine(lm)
    tr = Trainer(
        _spec(rollouts, **rloo),
        lm=lm,
        output_dir=out,
        rows=rows(5),
        reward_fn=_reward,
        steps=steps,
        rollout_engine=engine,
    )
    return tr, engine


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING | ENGINE_KEYS} for r in records]


def test_engine_token_ids_become_the_hf_samplers_rollouts():
    """Right padding, the stop token inside the mask, truncated rows unfinished, row order p*G + g: the
    loss and gradient from the rebuilt rollouts are the HF sampler's, bit for bit."""
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    prompts = pad_prompts([[5, 6, 7], [8, 9], [10, 11, 12, 13]], 0)
    budgets = torch.tensor([2, 6, 4])
    # stop ids that occur: some rows stop early, others run out of their own budget
    ro = sample(
        lm.model,
        prompts,
        group_size=3,
        max_new_tokens=budgets,
        temperature=1.0,
        stop_ids=list(range(3, 10)),
        pad_id=0,
        generator=torch.Generator().manual_seed(2),
    )
    assert ro.finished.any() and not ro.finished.all() and len(set(ro.lengths.tolist())) > 1
    rebuilt = rollouts_from_samples(prompts, 3, RolloutSamples(ro.token_lists(), ro.finished.tolist()), 0)
    for name in ("tokens", "mask", "finished"):
        assert torch.equal(getattr(rebuilt, name), getattr(ro, name)), name
    adv = torch.randn(9, generator=torch.Generator().manual_seed(0))
    v = torch.nn.Parameter(torch.zeros(lm.shape.d_model))
    grads, losses = [], []
    for r in (ro, rebuilt):
        with HookScope("grad") as scope:
            scope.forward_hook(
                lm.adapter.layer(lm.model, 1),
                lambda m, a, out: replace_decoder_output(out, decoder_output_tensor(out) + v),
            )
            losses.append(rloo_loss_backward(lm.model, r, adv, temperature=1.0).loss)
        grads.append(v.grad.clone())
        v.grad = None
    assert losses[0] == losses[1] and torch.equal(grads[0], grads[1]) and grads[0].norm() > 0


def test_rebuilding_refuses_a_wrong_row_count():
    prompts = pad_prompts([[5, 6], [7]], 0)
    with pytest.raises(ValueError, match="expected 4 rows"):
        rollouts_from_samples(prompts, 2, RolloutSamples([[1], [2], [3]], [True] * 3), 0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_a_run_on_an_engine_that_follows_the_vectors_is_the_hf_run(tmp_path, temperature):
    hf, _ = _trainer(tmp_path / "hf", "hf", temperature=temperature)
    a = hf.run()
    vl, engine = _trainer(tmp_path / "vllm", "vllm", temperature=temperature)
    b = vl.run()
    assert _strip(a.records) == _strip(b.records)
    steps = [r for r in b.records if r["type"] == "step"]
    assert all(r["t_sync"] is not None for r in steps)
    assert len(engine.seen) == 4 and engine.seen[0].abs().max() == 0 and engine.seen[-1].abs().max() > 0
    assert not engine.closed  # an engine the caller passed in is the caller's to close
    assert torch.equal(load_vector_set(a.final_path).vectors, load_vector_set(b.final_path).vectors)


def test_each_rollout_sees_the_vectors_of_the_previous_step(tmp_path):
    tr, engine = _trainer(tmp_path, "vllm")
    seen_by_trainer = []
    real_generate = engine.generate

    def spy(*args, **kw):
        seen_by_trainer.append(torch.stack([tr.params.vectors[i].detach().clone() for i in sorted(tr.params.vectors)]))
        return real_generate(*args, **kw)

    engine.generate = spy
    tr.run()
    assert len(seen_by_trainer) == 4
    for synced, current in zip(engine.seen, seen_by_trainer):
        assert torch.equal(synced, current)
    assert not torch.equal(engine.seen[1], engine.seen[2])  # the vectors moved between steps


def test_a_resumed_run_syncs_the_checkpoint_vectors_before_its_first_rollout(tmp_path, monkeypatch):
    first, _ = _trainer(tmp_path, "vllm", steps=2)
    first.run()
    ck = json.loads((tmp_path / "checkpoints" / "step-000002" / "state.json").read_text())
    assert ck["step"] == 2
    saved = load_vector_set(tmp_path / "checkpoints" / "step-000002" / "vectors.safetensors").vectors
    assert saved.abs().max() > 0
    resumed, engine = _trainer(tmp_path, "vllm")
    engine.sync(torch.randn_like(engine.bias))  # stale state a resumed run must overwrite
    resumed.run(resume=True)
    assert len(engine.seen) == 2  # steps 3 and 4
    assert torch.equal(engine.seen[0], saved)


def test_rollouts_vllm_refuses_setups_that_are_not_biases(tmp_path, monkeypatch):
    from mechsteer import machine
    from mechsteer.errors import SpecError
    from mechsteer.spec.training import load_train_spec

    f = tmp_path / "t.yaml"
    f.write_text(
        "name: t\nmodel: {id: smollm2-135m}\nsetup: {lora1: all}\nrollouts: vllm\nrloo: {max_new_tokens: 8}\ndata: {kind: mini}\n"
    )
    with pytest.raises(SpecError) as e:
        load_train_spec(f)
    assert str(e.value).startswith(f"{f}:4:1: rollouts: rollouts: vllm syncs steering vectors") and "\n" not in str(
        e.value
    )
    # the trainer refuses it too when given a spec object directly
    monkeypatch.setattr(machine, "vllm_problem", lambda: None)
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    tr = Trainer(train_spec(rollouts="vllm", setup={"lora1": "all"}), lm=lm, output_dir=tmp_path, rows=rows(3))
    with pytest.raises(MechsteerError, match="rollouts: vllm needs a vector setup"):
        tr._vllm_engine()


def test_rollouts_vllm_without_vllm_is_one_line(tmp_path, monkeypatch):
    from mechsteer import machine

    monkeypatch.setattr(machine, "vllm_installed", lambda: False)
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    with pytest.raises(MechsteerError) as e:
        Trainer(train_spec(rollouts="vllm"), lm=lm, output_dir=tmp_path, rows=rows(3))
    assert str(e.value).startswith("rollouts: vllm: backend vllm cannot run here: the vllm package is not installed")
    assert "\n" not in str(e.value) and "setup_vllm.sh" in str(e.value)
