"""RLOO on tiny models: the leave-one-out advantage, the loss against a hand computation (no cache, no
padding, one sequence at a time), gradients that reach only the vectors, and a learnable reward that rises."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from tolerance import forward_ops, tolerance
from train_helpers import VOCAB, rows, tiny_lm, train_spec

from mechsteer.hooks import HookScope
from mechsteer.train.params import BlockVectors, Lora1, PlaceVector
from mechsteer.train.rloo import rloo_advantages, rloo_loss_backward
from mechsteer.train.rollout import Rollouts, pad_prompts, sample


def test_advantages_are_leave_one_out():
    r = torch.tensor([[1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    a = rloo_advantages(r)
    assert torch.allclose(a[0], torch.tensor([2.0, -2 / 3, -2 / 3, -2 / 3]))
    assert torch.equal(a[1], torch.zeros(4))
    with pytest.raises(ValueError):
        rloo_advantages(torch.ones(3, 1))


def _fixed_batch(lm, G=3):
    """Two prompts of different lengths (left padding) and G responses each of different lengths."""
    prompts = pad_prompts([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0)
    gen = torch.Generator().manual_seed(1)
    P = 2
    R = 5
    tokens = torch.randint(3, VOCAB, (P * G, R), generator=gen)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])[: P * G]
    mask = (torch.arange(R)[None] < lengths[:, None]).long()
    tokens = torch.where(mask.bool(), tokens, torch.zeros_like(tokens))
    return Rollouts(prompts, G, tokens, mask, torch.ones(P * G, dtype=torch.bool))


def _hand_loss(model, ro: Rollouts, rewards: torch.Tensor) -> tuple[torch.Tensor, float]:
    """-(1/N_tok) * sum_i A_i * sum_t log pi(y_t), every sequence run alone, unpadded, without a cache; and
    the largest |logit| seen."""
    G = ro.group_size
    P = rewards.shape[0]
    n_tok = int(ro.mask.sum())
    total, size = 0.0, 0.0
    for p in range(P):
        prompt = ro.prompts.ids[p][ro.prompts.mask[p].bool()].tolist()
        for g in range(G):
            others = [rewards[p, j] for j in range(G) if j != g]
            adv = rewards[p, g] - sum(others) / (G - 1)
            row = p * G + g
            resp = ro.tokens[row][: int(ro.mask[row].sum())].tolist()
            ids = torch.tensor([prompt + resp])
            logits = model(input_ids=ids).logits[0].float()
            size = max(size, float(logits.detach().abs().max()))
            logp = torch.log_softmax(logits, dim=-1)
            seq = sum(logp[len(prompt) - 1 + t, y] for t, y in enumerate(resp))
            total = total + adv * seq
    return -total / n_tok, size


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_loss_and_gradient_match_hand_computation(arch):
    lm = tiny_lm(make_tiny_model(arch, vocab_size=VOCAB))
    params = BlockVectors(lm.model, lm.adapter, [0, 2, 3])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params.named_trainable().values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    ro = _fixed_batch(lm)
    rewards = torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0]])
    with HookScope("t") as scope:
        params.attach(scope)
        res = rloo_loss_backward(lm.model, ro, rloo_advantages(rewards), temperature=1.0, chunk_prompts=1)
        got = {n: p.grad.clone() for n, p in params.named_trainable().items()}
        for p in params.named_trainable().values():
            p.grad = None
        hand, size = _hand_loss(lm.model, ro, rewards)
        hand.backward()
    assert res.backward_ran and res.groups_with_signal == 2
    # batched and padded vs one sequence at a time: each log-prob is rounding apart by at most twice the logits'
    # rounding, and the loss is a mean of them weighted by |A| <= max |A|
    n = forward_ops(lm.model)
    max_adv = float(rloo_advantages(rewards).abs().max())
    assert res.loss == pytest.approx(float(hand.detach()), abs=2 * max_adv * tolerance(torch.float32, size, n))
    # the gradient: forward and backward (2n roundings) at the size of the largest gradient entry
    grad_size = max(float(p.grad.abs().max()) for p in params.named_trainable().values())
    for name, p in params.named_trainable().items():
        torch.testing.assert_close(got[name], p.grad, rtol=0, atol=tolerance(torch.float32, grad_size, 2 * n))
        assert got[name].abs().sum() > 0


def test_zero_advantage_groups_skip_backward():
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    params = BlockVectors(lm.model, lm.adapter, [1])
    ro = _fixed_batch(lm)
    with HookScope("t") as scope:
        params.attach(scope)
        res = rloo_loss_backward(lm.model, ro, rloo_advantages(-torch.ones(2, 3)), temperature=1.0)
    assert not res.backward_ran and res.loss == 0.0 and res.groups_with_signal == 0
    assert params.vectors[1].grad is None


@pytest.mark.parametrize("setup", ["vectors", "at_place", "lora1"])
def test_gradient_reaches_only_the_trainable_tensors(setup):
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    if setup == "vectors":
        params = BlockVectors(lm.model, lm.adapter, [0, 1, 2, 3])
    elif setup == "at_place":
        params = PlaceVector(lm.model, lm.adapter, 2, "self_attn")
    else:
        params = Lora1(lm.model, lm.adapter, [1, 3])
        with torch.no_grad():  # B = 0 at init would give A no gradient; move off the identity first
            for n, p in params.named_trainable().items():
                if n.startswith("lora_B"):
                    p.fill_(0.1)
    ro = _fixed_batch(lm)
    with HookScope("t") as scope:
        params.attach(scope)
        rloo_loss_backward(lm.model, ro, rloo_advantages(torch.tensor([[1.0, -1, -1], [-1.0, 1, 1]])), temperature=1.0)
    assert all(not p.requires_grad and p.grad is None for p in lm.model.parameters())
    for n, p in params.named_trainable().items():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_rollouts_share_the_prompt_and_stop_at_eos():
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    prompts = pad_prompts([[5, 6, 7], [8, 9]], pad_id=0)
    ro = sample(
        lm.model,
        prompts,
        group_size=4,
        max_new_tokens=6,
        temperature=1.0,
        stop_ids=[2],
        pad_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    assert ro.tokens.shape[0] == 8
    for row, toks in enumerate(ro.token_lists()):
        assert 2 not in toks[:-1]  # nothing after a stop token
        assert ro.finished[row] == (len(toks) > 0 and toks[-1] == 2)
    # greedy rollouts of a group are identical and equal the HF greedy continuation
    g = sample(lm.model, prompts, group_size=2, max_new_tokens=5, temperature=0.0, stop_ids=[], pad_id=0)
    assert torch.equal(g.tokens[0], g.tokens[1])
    ref = lm.model.generate(
        input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    assert g.tokens[0].tolist() == ref[0, 3:].tolist()


def _first_token_prob(lm, vs, token: int, prompts: list[list[int]]) -> float:
    """Mean probability of `token` as the first generated token, with `vs` applied through `add`."""
    from mechsteer.interventions import steering
    from mechsteer.spec.kinds.interventions import AddSpec

    p = pad_prompts(prompts, 0)
    with steering(lm.model, lm.adapter, [AddSpec(vector="v")], {"v": vs}), torch.no_grad():
        logits = lm.model(input_ids=p.ids, attention_mask=p.mask, position_ids=p.positions()).logits[:, -1]
    return float(torch.softmax(logits.float(), -1)[:, token].mean())


def test_learnable_reward_goes_up(tmp_path):
    """Reward +1 when the first generated token is X (X = a token the base model picks ~20% of the time)."""
    from mechsteer.train.trainer import Trainer
    from mechsteer.vectors.vector_set import load_vector_set

    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB, seed=3))
    spec = train_spec(
        rloo={"group_size": 8, "prompts_per_step": 4, "steps": 8, "lr": 0.1, "max_new_tokens": 1}, checkpoint_every=100
    )
    data = rows(8)
    tr = Trainer(spec, lm=lm, output_dir=tmp_path, rows=data, reward_fn=lambda c: 0.0)
    prompts = [list(it.prompt_ids) for it in tr.pool.items]
    with torch.no_grad():
        p = pad_prompts(prompts, 0)
        probs = torch.softmax(
            lm.model(input_ids=p.ids, attention_mask=p.mask, position_ids=p.positions()).logits[:, -1].float(), -1
        ).mean(0)
    target = int((probs - 0.2).abs().argmin())
    tr.grader = __import__("mechsteer.train.rewards", fromlist=["custom_reward"]).custom_reward(
        lambda c: 1.0 if c.token_ids[:1] == (target,) else -1.0
    )
    res = tr.run()
    vs = load_vector_set(res.final_path)
    before = float(probs[target])
    after = _first_token_prob(lm, vs, target, prompts)
    rewards = [r["reward_mean"] for r in res.records if r["type"] == "step"]
    assert after > before + 0.25, (before, after)
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3
    assert all(torch.isfinite(vs.vectors).all() for _ in [0]) and vs.vectors.norm() > 0


@pytest.mark.parametrize("setup", [{"at_place": {"layer": 1, "place": "self_attn"}}, {"lora1": [1, 3]}, "full"])
def test_every_setup_trains_and_exports(tmp_path, setup):
    from safetensors.torch import load_file

    from mechsteer.train.trainer import Trainer
    from mechsteer.vectors.vector_set import load_vector_set

    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    spec = train_spec(
        setup=setup, rloo={"group_size": 4, "prompts_per_step": 2, "steps": 2, "lr": 0.05, "max_new_tokens": 2}
    )
    res = Trainer(
        spec,
        lm=lm,
        output_dir=tmp_path,
        rows=rows(4),
        reward_fn=lambda c: 1.0 if c.token_ids and c.token_ids[0] % 2 else -1.0,
    ).run()
    changed = [n for n, p in lm.model.named_parameters() if not torch.equal(p, before[n])]
    assert all(not p.requires_grad for p in lm.model.parameters())  # frozen again after training
    if setup == "full":
        assert res.final_path is None and changed
        return
    assert not changed
    if "at_place" in setup:
        vs = load_vector_set(res.final_path)
        assert vs.layers == [1] and vs.meta["place"] == "self_attn" and vs.vectors[1].norm() > 0
    else:
        t = load_file(str(res.final_path))
        assert t["layers"].tolist() == [1, 3] and t["A"].shape == (4, 64) and t["B"].shape == (4, 32)
        assert t["B"][[1, 3]].norm() > 0 and t["B"][[0, 2]].norm() == 0
