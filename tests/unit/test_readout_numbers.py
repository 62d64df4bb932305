"""The `first_token` and `generate` readouts against hand computations: every prompt run alone (no padding),
softmax and entropy by hand, greedy continuations from Hugging Face `generate`, and the rates and means
counted here from those continuations.

The tiny random model never answers a problem right, so the grader is replaced by a marker (a completion is
"right" when its first character has an even code, "boxed" when its length is odd): an accuracy of 0 would
pass any aggregation; these markers give rates strictly between 0 and 1."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from tolerance import forward_ops, tolerance

from mechsteer.interventions import steering
from mechsteer.measurement import MeasurementTask
from mechsteer.models.adapters import adapter_for
from mechsteer.models.loading import LoadedModel
from mechsteer.spec.models import ModelSpec

PROMPTS = ["1+1?", "what is 12 + 30?", "hi", "Compute 7*6.", "x"]


def _lm(seed=0):
    tok = make_tiny_tokenizer()
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE, max_position_embeddings=256, seed=seed)
    model.generation_config.eos_token_id = tok.eos_token_id
    adapter = adapter_for(model)
    # chat_template off: the prompts' last tokens then differ, and so do their next-token distributions
    return LoadedModel(
        "tiny",
        ModelSpec(id="tiny", dtype="float32", device="cpu", chat_template=False),
        model,
        tok,
        adapter,
        adapter.shape(model),
        torch.device("cpu"),
        torch.float32,
        "local",
        None,
    )


def _ids(lm, prompt: str) -> list[int]:
    return lm.tokenizer(prompt)["input_ids"]


def _task(lm, ctx, kind: str, options: dict):
    """A measurement task with the readout's typed spec, as the compiler makes it."""
    from mechsteer.spec.kinds import READOUT_KINDS
    from mechsteer.spec.study import StudySpec  # noqa: F401 - registers every kind

    return MeasurementTask(lm=lm, ctx=ctx, spec=READOUT_KINDS.spec(kind)(**options), seed=0)


def test_first_token_readout_matches_softmax_by_hand():
    from mechsteer.readouts.first_token import run_first_token

    lm = _lm()
    tok = lm.tokenizer
    hand, size = [], 0.0
    with torch.no_grad():
        for p in PROMPTS:
            logits = lm.model(input_ids=torch.tensor([_ids(lm, p)])).logits[0, -1].double()
            e = torch.exp(logits - logits.max())
            probs = e / e.sum()
            hand.append(probs)
            size = max(size, float(logits.abs().max()))
    # the readout's float32 logits (batched, padded) are rounding apart from these: a logit error d moves p by
    # at most p x 2d and the entropy H by at most H x 2d, so both are compared relatively
    rel = 2 * tolerance(torch.float32, size, forward_ops(lm.model))
    top1 = [int(p.argmax()) for p in hand]
    tracked = tok.convert_ids_to_tokens(top1[0])  # a token that is the top-1 of at least one prompt
    other = "Q"
    t_id, o_id = tok.convert_tokens_to_ids(tracked), tok.convert_tokens_to_ids(other)
    share = sum(t == t_id for t in top1) / len(PROMPTS)
    assert 0 < share < 1, "pick prompts whose top-1 tokens differ"
    with steering(lm.model, lm.adapter, [], {}) as ctx:
        res = run_first_token(
            _task(
                lm,
                ctx,
                "first_token",
                {"prompts": PROMPTS, "track": [tracked, other], "top_k": 3, "batch_size": 2, "template": "raw"},
            )
        )
    m = res.metrics
    assert m["n"] == len(PROMPTS)
    assert m[f"p({tracked})"] == pytest.approx(float(sum(p[t_id] for p in hand) / len(hand)), rel=rel)
    assert m[f"p({other})"] == pytest.approx(float(sum(p[o_id] for p in hand) / len(hand)), rel=rel)
    assert m[f"top1=={tracked}"] == pytest.approx(share)
    ent = [float(-(p * torch.log(p)).sum()) for p in hand]
    assert m["entropy"] == pytest.approx(sum(ent) / len(ent), rel=rel)
    for s, p in zip(res.samples, hand):
        vals, idx = p.topk(3)
        assert [t for _, t in s["top"]] == pytest.approx([float(v) for v in vals], rel=rel)
        assert s["top1_id"] == int(idx[0])


def _marked_grade(monkeypatch):
    from mechsteer.eval import grading

    real = grading.grade

    def grade(text, gold, **kw):
        g = real(text, gold, **kw)
        right = bool(text) and ord(text[0]) % 2 == 0
        return dataclasses.replace(
            g, boxed_correct=right and len(text) % 2 == 1, last_number_correct=right, has_box=len(text) % 2 == 1
        )

    monkeypatch.setattr(grading, "grade", grade)


def _hand_generate(lm, prompt, max_new):
    """Greedy continuation of one unpadded prompt, cut at the first stop token (kept in the count)."""
    from mechsteer.generation import lm_stop_token_ids

    stops = lm_stop_token_ids(lm)
    x = torch.tensor([_ids(lm, prompt)])
    with torch.no_grad():
        out = lm.model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    new = out[0, x.shape[1] :].tolist()
    for j, t in enumerate(new):
        if t in stops:
            return lm.tokenizer.decode(new[:j], skip_special_tokens=True), j + 1, True
    return lm.tokenizer.decode(new, skip_special_tokens=True), len(new), False


def test_generate_readout_matches_counts_by_hand(monkeypatch):
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.readouts.generate import run_generate

    _marked_grade(monkeypatch)
    lm = _lm(seed=1)
    with torch.no_grad():  # make the end-of-turn token likely so that some completions finish early
        lm.model.lm_head.weight[lm.tokenizer.convert_tokens_to_ids("<|im_end|>")] *= 4.0
    probs = generate_mini(split="test", n=8)
    hand = [_hand_generate(lm, p["problem"], 6) for p in probs]
    texts = [h[0] for h in hand]
    right = [bool(t) and ord(t[0]) % 2 == 0 for t in texts]
    boxed = [len(t) % 2 == 1 for t in texts]
    assert 0 < sum(right) < len(right) and 0 < sum(boxed) < len(boxed)
    with steering(lm.model, lm.adapter, [], {}) as ctx:
        res = run_generate(
            _task(
                lm,
                ctx,
                "generate",
                {
                    "task": "mini",
                    "limit": 8,
                    "template": "raw",
                    "max_new_tokens": 6,
                    "temperature": 0.0,
                    "samples": 1,
                    "batch_size": 3,
                },
            )
        )
    m = res.metrics
    assert [s["completion"] for s in res.samples] == texts
    n = len(texts)
    assert m["n"] == n
    assert m["mean_len"] == pytest.approx(sum(h[1] for h in hand) / n)
    assert m["truncated_rate"] == pytest.approx(sum(not h[2] for h in hand) / n)
    assert m["acc_lenient"] == pytest.approx(sum(right) / n)
    assert m["acc_boxed"] == pytest.approx(sum(r and b for r, b in zip(right, boxed)) / n)
    assert m["boxed_rate"] == pytest.approx(sum(boxed) / n)
    lens_right = [h[1] for h, r in zip(hand, right) if r]
    lens_wrong = [h[1] for h, r in zip(hand, right) if not r]
    assert m["mean_len_correct"] == pytest.approx(sum(lens_right) / len(lens_right))
    assert m["mean_len_incorrect"] == pytest.approx(sum(lens_wrong) / len(lens_wrong))
    eot = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    firsts = [lm.tokenizer.decode(f) if f != [eot] else "" for f in (_first(lm, p["problem"]) for p in probs)]
    assert res.info["first_tokens"] == {t: firsts.count(t) for t in set(firsts)}
    assert res.info["stop_token_ids"] == [eot] and res.info["stop_tokens"] == ["<|im_end|>"]
    assert not math.isnan(m["mean_len_correct"])


def _first(lm, prompt):
    with torch.no_grad():
        return [int(lm.model(input_ids=torch.tensor([_ids(lm, prompt)])).logits[0, -1].argmax())]
