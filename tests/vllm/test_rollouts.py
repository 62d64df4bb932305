"""RLOO rollouts from vLLM (`rollouts: vllm`), on the session's engine:

* after a sync, the engine's greedy rollouts equal the HF sampler's under the same vectors, and the loss and
  gradient computed from them equal those from the HF rollouts (same token ids, same `Rollouts`);
* at temperature 1 the engine samples the trained policy: its log-probabilities of its own samples equal
  transformers' under the same vectors (float32 rounding), the same seed repeats the samples, and other
  seeds do not;
* the trainer syncs its current vectors before every rollout, and a resumed run syncs the checkpoint's
  vectors before its first rollout (the engine held other biases before).
"""

from __future__ import annotations

import torch
from vllm_shared import engine, float32_tolerance, hf_block_hooks, hf_greedy, require_vllm, shared  # noqa: F401 - engine, shared: session fixtures

from mechsteer.hooks import HookScope
from mechsteer.train.rloo import rloo_loss_backward, sequence_logprobs
from mechsteer.train.rollout import pad_prompts, sample
from mechsteer.train.vllm_rollouts import rollouts_from_samples

require_vllm()

G = 4
BUDGETS = [64, 12, 48, 8]
"""Per-prompt budgets (some rows end on a stop token, others run out)."""


def _trained_like(shared, seed: int = 3, scale: float = 0.9) -> torch.Tensor:
    """Vectors a training run could be at: the bundled ones scaled, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    return shared.vectors * scale + torch.randn(shared.vectors.shape, generator=g) * 0.01


def _loss_and_grad(lm, ro, adv, vectors):
    v = torch.nn.Parameter(vectors.clone())
    with HookScope("loss") as scope:
        hf_block_hooks(scope, lm, v)
        res = rloo_loss_backward(lm.model, ro, adv, temperature=1.0)
    return res.loss, v.grad.clone()


def test_greedy_rollouts_after_a_sync_equal_hf_and_give_the_same_loss_and_gradient(shared, engine):
    lm = shared.lm
    vectors = _trained_like(shared)
    prompt_ids = shared.prompts[:4]
    engine.sync(vectors)
    samples = engine.generate(
        prompt_ids, group_size=G, max_new_tokens=BUDGETS, temperature=0.0, stop_ids=shared.stop_ids, seed=0
    )
    prompts = pad_prompts(prompt_ids, lm.tokenizer.pad_token_id)
    ro_vllm = rollouts_from_samples(prompts, G, samples, lm.tokenizer.pad_token_id)
    with HookScope("hf") as scope:
        hf_block_hooks(scope, lm, vectors)
        ro_hf = sample(
            lm.model,
            prompts,
            group_size=G,
            max_new_tokens=torch.tensor(BUDGETS),
            temperature=0.0,
            stop_ids=shared.stop_ids,
            pad_id=lm.tokenizer.pad_token_id,
        )
    for name in ("tokens", "mask", "finished"):
        assert torch.equal(getattr(ro_vllm, name), getattr(ro_hf, name)), name
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * 4)  # fixed, non-zero: greedy rows of a group are identical
    loss_v, grad_v = _loss_and_grad(lm, ro_vllm, adv, vectors)
    loss_h, grad_h = _loss_and_grad(lm, ro_hf, adv, vectors)
    assert loss_v == loss_h and torch.equal(grad_v, grad_h) and grad_h.norm() > 0
    assert ro_hf.finished.any() and not ro_hf.finished.all()  # both ways of ending a row were compared


def test_a_sync_invalidates_prompt_kv_cached_under_the_old_biases(shared, engine):
    """vLLM caches the KV of full prompt blocks (128 tokens on CPU) by token ids: the same long prompt after a
    sync must be recomputed under the new biases, not served from the cache."""
    lm = shared.lm
    preamble = " ".join(f"Fact {i}: {i} plus {i} is {2 * i}." for i in range(40))
    ids = lm.tokenizer(preamble, add_special_tokens=False)["input_ids"][:300] + shared.prompts[0]
    assert len(ids) > 2 * 128
    old, new = shared.vectors, _trained_like(shared, seed=5, scale=0.6)
    for bias in (old, new):
        engine.sync(bias)
        got = engine.generate(
            [ids], group_size=1, max_new_tokens=[16], temperature=0.0, stop_ids=shared.stop_ids, seed=0
        ).token_ids
    assert got == hf_greedy(lm, [ids], new, shared.stop_ids, new_tokens=16)
    assert got != hf_greedy(lm, [ids], old, shared.stop_ids, new_tokens=16)  # the two policies differ here


def test_sampled_rollouts_come_from_the_synced_policy(shared, engine):
    lm = shared.lm
    vectors = _trained_like(shared, seed=4)
    prompt_ids = shared.prompts[4:7]
    engine.sync(vectors)

    def draw(seed):
        return engine.generate(
            prompt_ids,
            group_size=G,
            max_new_tokens=[24] * len(prompt_ids),
            temperature=1.0,
            stop_ids=shared.stop_ids,
            seed=seed,
            logprobs=True,
        )

    a, b, c = draw(11), draw(11), draw(12)
    assert a.token_ids == b.token_ids and a.finished == b.finished  # per-request seeds: reproducible
    assert a.token_ids != c.token_ids
    assert len({tuple(r) for r in a.token_ids}) > len(prompt_ids)  # G different samples per prompt
    prompts = pad_prompts(prompt_ids, lm.tokenizer.pad_token_id)
    ro = rollouts_from_samples(prompts, G, a, lm.tokenizer.pad_token_id)
    with HookScope("tf") as scope, torch.no_grad():
        hf_block_hooks(scope, lm, vectors)
        hf_seq = sequence_logprobs(lm.model, prompts, ro.tokens, ro.mask, G, temperature=1.0)
    vllm_seq = torch.tensor([sum(r) for r in a.logprobs])
    tol = float32_tolerance(lm, 30.0) * float(ro.lengths.max())
    err = float((vllm_seq - hf_seq).abs().max())
    print(f"sequence log-prob |vLLM - HF| max {err:.3g} (tolerance {tol:.3g})")
    assert err <= tol, (err, tol)
    # the policy without the vectors gives these samples other log-probabilities: the sync mattered
    with torch.no_grad():
        plain = sequence_logprobs(lm.model, prompts, ro.tokens, ro.mask, G, temperature=1.0)
    assert float((plain - hf_seq).abs().max()) > 10 * tol


def _trainer(shared, out, engine, steps):
    from mechsteer.spec.training import TrainSpec
    from mechsteer.train.trainer import Trainer

    spec = TrainSpec.model_validate(
        {
            "name": "vllm_tier",
            "model": {"id": "smollm2-135m", "dtype": "float32", "device": "cpu"},
            "rollouts": "vllm",
            "rloo": {
                "group_size": 4,
                "prompts_per_step": 2,
                "steps": 3,
                "lr": 0.01,
                "max_new_tokens": 24,
                "warmup_ratio": 0.0,
            },
            "reward": "last_number",
            "data": {"kind": "mini", "n": 16},
            "checkpoint_every": 1,
            "seed": 0,
        }
    )
    return Trainer(
        spec,
        lm=shared.lm,
        output_dir=out,
        run_eval=False,
        rollout_engine=engine,
        steps=steps,
        reward_fn=_first_token_even,  # a reward with signal in every group of 4 samples (almost surely)
    )


def _first_token_even(c) -> float:
    return 1.0 if c.token_ids and c.token_ids[0] % 2 == 0 else -1.0


def test_the_trainer_syncs_before_every_rollout_and_after_resume(shared, engine, tmp_path):
    from mechsteer.vectors.vector_set import load_vector_set

    seen = []  # (the engine's biases, the trainer's vectors) at every rollout
    real_generate = engine.generate

    def spy(*args, **kw):
        seen.append((engine.biases(), tr.params.to_vector_set().vectors.clone()))
        return real_generate(*args, **kw)

    engine.generate = spy
    try:
        tr = _trainer(shared, tmp_path, engine, steps=2)
        first = tr.run()
        assert [r["step"] for r in first.records if r["type"] == "step"] == [1, 2]
        assert all(r["t_sync"] >= 0 and "t_engine_start" not in r for r in first.records if r["type"] == "step")
        assert len(seen) == 2 and seen[0][1].abs().max() == 0 and seen[1][1].abs().max() > 0
        for held, current in seen:
            assert torch.equal(held, current)
        saved = load_vector_set(tmp_path / "checkpoints" / "step-000002" / "vectors.safetensors").vectors
        assert not torch.equal(saved, seen[-1][0])  # step 2's update was never synced: a resume must do it
        engine.sync(torch.randn(saved.shape))  # and whatever the engine holds now is stale
        seen.clear()
        tr = _trainer(shared, tmp_path, engine, steps=3)
        tr.run(resume=True)
        assert len(seen) == 1 and torch.equal(seen[0][0], saved)
    finally:
        engine.generate = real_generate
    assert engine.llm is not None  # the trainer leaves an engine it was given running
