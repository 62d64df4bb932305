"""Phase 1 (before the switch): the unified sampler against the old sampling paths, on tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from train_helpers import VOCAB, tiny_lm

from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.models.loading import LoadedModel
from mechsteer.sequences import SamplingSettings, pad_prompts, sample, sample_rollouts
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.spec.models import ModelSpec
from mechsteer.vectors.vector_set import VectorSet

PROBLEMS = ["1+1?", "what is 12 + 30?", "hi", "Compute 7*6.", "x", "a longer problem, with words", "3*3"]


def _lm(seed=0):
    tok = make_tiny_tokenizer()
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE, max_position_embeddings=256, seed=seed)
    model.generation_config.eos_token_id = tok.eos_token_id
    with torch.no_grad():  # the end-of-turn token likely: some rows finish early
        model.lm_head.weight[tok.eos_token_id] *= 2.5
    adapter = adapter_for(model)
    return LoadedModel(
        "tiny",
        ModelSpec(id="tiny", dtype="float32", device="cpu"),
        model,
        tok,
        adapter,
        adapter.shape(model),
        torch.device("cpu"),
        torch.float32,
        "local",
        None,
    )


def _cond():
    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(4)) * 3, [0, 1, 2, 3])
    return [AddSpec(vector="v", layer=[1, 2], positions="generated")], {"v": vs}


@pytest.mark.parametrize("temperature,samples", [(0.0, 1), (1.0, 3), (0.7, 2)])
def test_sample_equals_old_generation_generate(temperature, samples):
    from mechsteer.generation import generate, lm_stop_token_ids, render_prompts, uses_chat_template

    lm = _lm()
    cond, vecs = _cond()
    stops = lm_stop_token_ids(lm)
    with steering(lm.model, lm.adapter, cond, vecs, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, PROBLEMS, "qwen_math")
        old = generate(
            lm, ctx, prompts, max_new_tokens=7, temperature=temperature, samples=samples, seed=3, batch_size=3
        )
        ids = [lm.tokenizer(p, add_special_tokens=not uses_chat_template(lm))["input_ids"] for p in prompts]
        s = SamplingSettings(7, temperature, samples=samples, seed=3, stop_ids=tuple(stops), batch_size=3)
        new = sample(lm.model, ids, s, pad_id=lm.tokenizer.pad_token_id, ctx=ctx)
    old_flat = [c for cs in old for c in cs]
    assert len(new) == len(old_flat)
    assert any(c.finished for c in old_flat) and not all(c.finished for c in old_flat)
    for q, c in zip(new, old_flat):
        assert q.text(lm.tokenizer) == c.text
        assert q.n_generated == c.n_tokens and q.finished == c.finished
        assert q.first_token(lm.tokenizer) == c.first_token


def test_sample_equals_old_diffsae_generate_and_grade():
    from mechsteer.diffsae.collect import generate_and_grade
    from mechsteer.generation import lm_stop_token_ids, render_prompts

    lm = _lm(seed=1)
    cond, vecs = _cond()
    problems = [{"id": f"q{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(7)]
    old = generate_and_grade(
        lm, cond, vecs, problems, temperature=1.0, samples=2, max_new_tokens=6, batch_size=3, seed=5
    )
    s = SamplingSettings(6, 1.0, samples=2, seed=5, stop_ids=tuple(lm_stop_token_ids(lm)), batch_size=3)
    with steering(lm.model, lm.adapter, cond, vecs, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, [p["problem"] for p in problems], "qwen_math", ctx.prompt_suffix)
        ids = [lm.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        new = sample(lm.model, ids, s, pad_id=lm.tokenizer.pad_token_id, ctx=ctx)
    assert [list(q.prompt_ids) for q in new] == [o.prompt_ids for o in old]
    assert [list(q.generated_ids) for q in new] == [o.generated_ids for o in old]
    assert [q.text(lm.tokenizer) for q in new] == [o.completion for o in old]
    assert any(q.finished for q in new)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sample_rollouts_equals_old_rollout_sample(temperature):
    from mechsteer.train.rollout import sample as old_sample

    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    prompts = pad_prompts([[5, 6, 7], [8, 9, 10, 11, 12], [13]], pad_id=0)
    budgets = torch.tensor([7, 5, 6])
    old = old_sample(
        lm.model,
        prompts,
        group_size=4,
        max_new_tokens=budgets,
        temperature=temperature,
        stop_ids=[2, 7],
        pad_id=0,
        generator=torch.Generator().manual_seed(11),
    )
    s = SamplingSettings(8, temperature, samples=4, seed=11, stop_ids=(2, 7))
    new = sample_rollouts(lm.model, prompts, s, pad_id=0, budgets=budgets)
    assert torch.equal(new.tokens, old.tokens) and torch.equal(new.mask, old.mask)
    assert torch.equal(new.finished, old.finished)
    assert bool(old.finished.any()) or temperature == 0.0
