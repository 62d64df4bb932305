"""The bias-compiled checkpoint in stock vLLM equals the hooked HF `add` (float32, the embedded model): on
the Quickstart's conditions the greedy completions are identical, and the log-probabilities of one forward
agree within float32 rounding. `steered` is the checkpoint as loaded; `base` and the norm-matched random
control are the same engine with their biases put in place (backends.vllm_engine.BiasSync)."""

from __future__ import annotations

import torch
from vllm_shared import NEW_TOKENS, engine, float32_tolerance, hf_block_hooks, hf_greedy, require_vllm, shared  # noqa: F401 - engine, shared: session fixtures

from mechsteer.hooks import HookScope

require_vllm()


def test_loaded_checkpoint_greedy_equals_the_hooked_add(shared, engine):
    expected = hf_greedy(shared.lm, shared.prompts, shared.vectors, shared.stop_ids)
    assert engine.as_loaded.greedy == expected
    base = hf_greedy(shared.lm, shared.prompts, torch.zeros_like(shared.vectors), shared.stop_ids)
    assert sum(a != b for a, b in zip(base, expected)) >= len(expected) // 2  # the vectors change most answers


def test_loaded_checkpoint_logprobs_equal_the_hooked_add_within_float32_rounding(shared, engine):
    lm = shared.lm
    worst = worst_top = 0.0
    tol = None
    with HookScope("hooked-add") as scope, torch.no_grad():
        hf_block_hooks(scope, lm, shared.vectors)
        for ids, got, top in zip(shared.prompts, engine.as_loaded.prompt_logprobs, engine.as_loaded.top):
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            want = logp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            tol = float32_tolerance(lm, float(logits.abs().max()))
            worst = max(worst, float((torch.tensor(got) - want).abs().max()))
            assert len(top) >= 20
            last = logp[-1]
            worst_top = max(worst_top, max(abs(lp - float(last[t])) for t, lp in top.items()))
            assert int(last.argmax()) in top
    print(f"log-prob |vLLM - HF| max: prompt {worst:.3g}, top-20 next {worst_top:.3g} (tolerance {tol:.3g})")
    assert worst <= tol and worst_top <= tol, (worst, worst_top, tol)


def test_synced_conditions_greedy_equal_the_hooked_add(shared, engine):
    """base (zero bias) and the random control (random directions with the bundled per-layer norms)."""
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(shared.vectors.shape, generator=g)
    control = direction / direction.norm(dim=1, keepdim=True) * shared.vectors.norm(dim=1, keepdim=True)
    for bias in (torch.zeros_like(shared.vectors), control):
        engine.sync(bias)
        got = engine.generate(
            shared.prompts,
            group_size=1,
            max_new_tokens=[NEW_TOKENS] * len(shared.prompts),
            temperature=0.0,
            stop_ids=shared.stop_ids,
            seed=0,
        ).token_ids
        assert got == hf_greedy(shared.lm, shared.prompts, bias, shared.stop_ids)
        assert torch.equal(engine.biases(), bias)
