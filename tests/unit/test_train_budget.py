"""Training rollouts budget each prompt by its own length (max_length - len(prompt)), as the authors' code
does, not by the padded batch width; prompts that leave no room to generate are filtered with a warning."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from train_helpers import VOCAB, rows, tiny_lm, train_spec

from mechsteer.train.rollout import pad_prompts, row_budgets, sample


def test_row_budgets_by_own_length():
    p = pad_prompts([[5, 6, 7], [8, 9, 10, 11, 12]], pad_id=0)  # padded width 5
    assert row_budgets(p, 10, None).tolist() == [7, 5]
    assert row_budgets(p, 10, 6).tolist() == [6, 5]
    assert row_budgets(p, None, 4).tolist() == [4, 4]


def test_sample_honours_per_row_budgets():
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    p = pad_prompts([[5, 6, 7], [8, 9, 10, 11, 12]], pad_id=0)
    ro = sample(lm.model, p, group_size=2, max_new_tokens=torch.tensor([7, 5]), temperature=0.0, stop_ids=[], pad_id=0)
    assert ro.lengths.tolist() == [7, 7, 5, 5]
    assert not bool(ro.finished.any())
    # the short prompt's extra tokens are its real greedy continuation, not padding artefacts
    ref = lm.model.generate(
        input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=7, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    assert ro.token_lists()[0] == ref[0, 3:].tolist()
    assert ro.tokens[2, 5:].tolist() == [0, 0]  # the long prompt's rows stop at their budget (padded after)


def test_trainer_gives_each_prompt_its_own_budget(tmp_path, monkeypatch):
    import mechsteer.train.trainer as trainer_mod
    from mechsteer.train.trainer import Trainer

    seen = []
    real = trainer_mod.sample_rollouts

    def spy(model, prompts, settings, **kw):
        seen.append((prompts.lengths.tolist(), torch.as_tensor(kw["budgets"]).tolist()))
        return real(model, prompts, settings, **kw)

    monkeypatch.setattr(trainer_mod, "sample_rollouts", spy)
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB, max_position_embeddings=128))
    data = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "what is 12 + 30?", "answer": "42"}]
    spec = train_spec(
        model={"max_length": 24},
        rloo={"max_new_tokens": None, "prompts_per_step": 2, "steps": 1, "group_size": 2},
        checkpoint_every=100,
    )
    tr = Trainer(spec, lm=lm, output_dir=tmp_path, rows=data, reward_fn=lambda c: 0.0)
    tr.step(0)
    lengths, budgets = seen[0]
    assert sorted(lengths) != [lengths[0]] * 2  # two different prompt lengths in one batch
    assert budgets == [24 - n for n in lengths]


def test_prompt_filling_max_length_is_dropped_with_a_warning():
    from mechsteer.train.data import build_pool, encode_prompts

    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    data = rows(4)
    spec = train_spec()
    n = [len(t) for t in encode_prompts(lm, [r["problem"] for r in data], "raw", None)]
    assert len(set(n)) == 1  # all prompts here have the same length n0
    n0 = n[0]
    short = {"id": "short", "problem": "1+1?", "answer": "2"}
    # the trainer's default: max_prompt_tokens = max_length; prompts exactly max_length long pass that filter
    with pytest.warns(UserWarning, match="4 training prompt.*fill model.max_length.*leave no room to generate"):
        pool = build_pool(
            lm,
            spec.data,
            lambda p: p,
            prompts_per_step=1,
            seed=0,
            max_prompt_tokens=n0,
            rows=data + [short],
            max_length=n0,
        )
    assert [it.id for it in pool.items] == ["short"]
    pool = build_pool(
        lm, spec.data, lambda p: p, prompts_per_step=2, seed=0, max_prompt_tokens=n0 + 1, rows=data, max_length=n0 + 1
    )
    assert len(pool.items) == 4
