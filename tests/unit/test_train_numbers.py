"""Training numbers against hand computations: `train/evaluate.accuracy` (behind the bundled-vector tables),
per-layer learning-rate groups (one AdamW step moves each block by its own lr), and log-probs at
temperature != 1 (logits / T, softmax by hand)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_tiny_model
from tolerance import forward_ops, tolerance
from train_helpers import VOCAB, rows, tiny_lm, train_spec

from mechsteer.hooks import HookScope
from mechsteer.sequences import SamplingSettings
from mechsteer.train.params import BlockVectors
from mechsteer.train.rloo import rloo_advantages, rloo_loss_backward
from mechsteer.train.rollout import Rollouts, pad_prompts


def _marked(text: str) -> bool:
    return bool(text) and ord(text[0]) % 2 == 0


def test_evaluate_accuracy_matches_counts_by_hand(monkeypatch):
    import mechsteer.train.evaluate as ev

    real = ev.grade_completion

    def grade(c, template="qwen_math"):  # the tiny model is never right: mark about half the completions
        g = real(c, template)
        return dataclasses.replace(
            g,
            boxed_correct=_marked(c.text) and len(c.text) % 2 == 1,
            last_number_correct=_marked(c.text),
            has_box=len(c.text) % 2 == 1,
        )

    monkeypatch.setattr(ev, "grade_completion", grade)
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB, seed=2))
    with torch.no_grad():
        lm.model.lm_head.weight[2] *= 3.0  # eos (id 2) likely enough that some completions finish
    probs = rows(8)
    ids = [lm.tokenizer(p["problem"])["input_ids"] for p in probs]
    hand = []
    for x in ids:
        t = torch.tensor([x])
        with torch.no_grad():
            out = lm.model.generate(
                input_ids=t,
                attention_mask=torch.ones_like(t),
                max_new_tokens=5,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )[0, len(x) :].tolist()
        cut = out.index(2) + 1 if 2 in out else len(out)
        toks = out[:cut]
        hand.append((lm.tokenizer.decode(toks, skip_special_tokens=True), len(toks), 2 in toks))
    texts = [h[0] for h in hand]
    n = len(hand)
    right = sum(_marked(t) for t in texts)
    assert 0 < right < n and 0 < sum(h[2] for h in hand) < n
    got = ev.accuracy(lm, probs, ids, SamplingSettings(max_new_tokens=5, batch_size=3, stop_ids=(2,)))
    assert got["n"] == n
    assert got["lenient"] == pytest.approx(right / n)
    assert got["boxed"] == pytest.approx(sum(_marked(t) and len(t) % 2 == 1 for t in texts) / n)
    assert got["boxed_rate"] == pytest.approx(sum(len(t) % 2 == 1 for t in texts) / n)
    assert got["finished"] == pytest.approx(sum(h[2] for h in hand) / n)
    assert got["mean_len"] == pytest.approx(sum(h[1] for h in hand) / n)


def test_per_layer_learning_rates_move_each_block_by_its_own_lr(tmp_path):
    """Adam's first step moves every coordinate by lr * g / (|g| + eps) ~ lr (weight decay 0): the largest
    change of each block's vector is that block's learning rate."""
    from mechsteer.train.trainer import Trainer

    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB, seed=3))
    spec = train_spec(
        setup="all_layers",
        rloo={
            "group_size": 6,
            "prompts_per_step": 3,
            "steps": 1,
            "lr": 0.05,
            "max_new_tokens": 2,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
            "lr_per_layer": {1: 0.01, -1: 0.2},
        },
        checkpoint_every=100,
    )
    tr = Trainer(
        spec,
        lm=lm,
        output_dir=tmp_path,
        rows=rows(6),
        reward_fn=lambda c: 1.0 if c.token_ids and c.token_ids[0] % 2 == 0 else -1.0,
    )
    before = {k: v.detach().clone() for k, v in tr.trainable.items()}
    with HookScope("t") as scope:  # what Trainer.run does around its steps
        tr.params.attach(scope)
        tr.step(0)
    expected = {0: 0.05, 1: 0.01, 2: 0.05, 3: 0.2}  # -1 is the last of the 4 blocks
    seen = {}
    for name, p in tr.trainable.items():
        block = tr.params.block_of(name)
        seen[block] = float((p.detach() - before[name]).abs().max())
    assert set(seen) == set(expected)
    for block, lr in expected.items():
        assert seen[block] == pytest.approx(lr, rel=1e-3), (block, seen)


_SEEN_LOGITS: list[float] = []
"""The largest |logit| of each by-hand forward (the magnitude for the loss's tolerance)."""


def _hand_logp_sum(model, prompt: list[int], resp: list[int], temperature: float) -> torch.Tensor:
    logits = model(input_ids=torch.tensor([prompt + resp])).logits[0].double() / temperature
    _SEEN_LOGITS.append(float(logits.abs().max()))
    total = torch.zeros((), dtype=torch.float64)
    for t, y in enumerate(resp):
        row = logits[len(prompt) - 1 + t]
        total = total + row[y] - (row - row.max()).exp().sum().log() - row.max()  # log softmax by hand
    return total


@pytest.mark.parametrize("temperature", [0.6, 1.7])
def test_loss_uses_logits_over_temperature(temperature):
    lm = tiny_lm(make_tiny_model("qwen2", vocab_size=VOCAB))
    params = BlockVectors(lm.model, lm.adapter, [1, 2])
    prompts = pad_prompts([[5, 6, 7, 8], [9, 10]], pad_id=0)
    G = 2
    tokens = torch.tensor([[11, 12, 13], [14, 15, 0], [16, 0, 0], [17, 18, 19]])
    mask = (tokens != 0).long()
    ro = Rollouts(prompts, G, tokens, mask, torch.ones(4, dtype=torch.bool))
    rewards = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    with HookScope("t") as scope:
        params.attach(scope)
        res = rloo_loss_backward(lm.model, ro, rloo_advantages(rewards), temperature=temperature)
        with torch.no_grad():
            adv = rloo_advantages(rewards).flatten()
            hand = 0.0
            _SEEN_LOGITS.clear()
            for row in range(4):
                p = prompts.ids[row // G][prompts.mask[row // G].bool()].tolist()
                r = tokens[row][: int(mask[row].sum())].tolist()
                hand += float(adv[row]) * float(_hand_logp_sum(lm.model, p, r, temperature))
            hand = -hand / int(mask.sum())
            size = max(_SEEN_LOGITS)  # logits / T
            at_one = 0.0
            for row in range(4):
                p = prompts.ids[row // G][prompts.mask[row // G].bool()].tolist()
                r = tokens[row][: int(mask[row].sum())].tolist()
                at_one += float(adv[row]) * float(_hand_logp_sum(lm.model, p, r, 1.0))
            at_one = -at_one / int(mask.sum())
    assert abs(hand - at_one) > 1e-3  # the temperature matters for these numbers
    # batched and padded vs one sequence at a time: float32 logits rounding apart, scaled by 1/T; each log-prob
    # moves by at most twice that, and the loss is their mean weighted by |A|
    logit_tol = tolerance(torch.float32, size, forward_ops(lm.model))
    assert res.loss == pytest.approx(hand, abs=2 * float(adv.abs().max()) * logit_tol)
