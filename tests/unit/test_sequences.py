"""The sequence toolkit on tiny models: the one sampler against Hugging Face `generate` (greedy, seeded
sampling, top-k/top-p, under a position-selective condition, on length-sorted left-padded batches), the shared
prefill against prefilling every copy (bit for bit), the cached decode loop against an uncached forward, the
vLLM seam's `Rollouts.from_token_lists`, and the `Sequence` / `SamplingSettings` values.

Before the switch to this toolkit, the same sampler was checked to give identical ids to the three old
samplers (`generation.generate`, DiffSAE's `generate_and_grade`, `train.rollout.sample`) and identical
`mean_diff` vectors and training evaluations; the old code is gone, so these tests use `transformers`'
`generate` and hand computations as the independent references."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from train_helpers import VOCAB, tiny_lm

from mechsteer.generation import encode, model_sampling, render_prompts, sample_texts
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.models.loading import LoadedModel
from mechsteer.sequences import (
    Prompts,
    Rollouts,
    SamplingSettings,
    Sequence,
    only_finished,
    pad,
    pad_id,
    pad_prompts,
    pad_right,
    sample,
    sample_rollouts,
)
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.spec.models import ModelSpec
from mechsteer.vectors.vector_set import VectorSet

PROBLEMS = ["1+1?", "what is 12 + 30?", "hi", "Compute 7*6.", "x", "a longer problem, with words", "3*3"]


def _lm(seed=0):
    tok = make_tiny_tokenizer()
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE, max_position_embeddings=256, seed=seed)
    model.generation_config.eos_token_id = tok.eos_token_id
    with torch.no_grad():  # the end-of-turn token likely enough that some rows finish early, not all
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


def _condition():
    """`add` at blocks 1 and 2 on generated positions only: wrong without `begin()` before each batch."""
    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(4)) * 3, [0, 1, 2, 3])
    return [AddSpec(vector="v", layer=[1, 2], positions="generated")], {"v": vs}


def _hf_reference(lm, ctx, prompts: list[list[int]], s: SamplingSettings) -> list[tuple[list[int], bool]]:
    """`transformers`' generate on the same batches (longest prompts first, left-padded, `num_return_sequences`
    copies, the global RNG seeded once): (generated ids cut after the first stop token, finished) per row."""
    from transformers import GenerationConfig

    cfg = GenerationConfig(
        max_new_tokens=s.max_new_tokens,
        do_sample=not s.greedy,
        temperature=s.temperature if not s.greedy else None,
        top_p=s.top_p if not s.greedy else None,
        top_k=s.top_k if not s.greedy else None,
        num_return_sequences=s.samples,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=list(s.stop_ids),
    )
    torch.manual_seed(s.seed)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: dict[int, list] = {}
    for start in range(0, len(order), s.batch_size):
        idx = order[start : start + s.batch_size]
        ids, mask = pad([prompts[i] for i in idx], lm.tokenizer.pad_token_id, "left")
        ctx.begin()
        with torch.no_grad():
            gen = lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)[:, ids.shape[1] :]
        for row, toks in enumerate(gen.tolist()):
            cut = next((j + 1 for j, t in enumerate(toks) if t in s.stop_ids), None)
            out.setdefault(idx[row // s.samples], []).append((toks[:cut], cut is not None))
    return [r for i in range(len(prompts)) for r in out[i]]


@pytest.mark.parametrize(
    "temperature,samples,top_k,top_p", [(0.0, 1, 0, 1.0), (1.0, 3, 0, 1.0), (0.7, 2, 0, 1.0), (1.0, 2, 5, 0.8)]
)
def test_sample_equals_hf_generate_under_a_position_selective_condition(temperature, samples, top_k, top_p):
    lm = _lm()
    cond, vecs = _condition()
    s = model_sampling(
        lm, max_new_tokens=7, temperature=temperature, samples=samples, top_k=top_k, top_p=top_p, seed=3, batch_size=3
    )
    with steering(lm.model, lm.adapter, cond, vecs, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, PROBLEMS, "qwen_math")
        ref = _hf_reference(lm, ctx, encode(lm, prompts), s)  # leaves the position tracker with its last batch
        got = sample_texts(lm, ctx, prompts, s)
    base = sample_texts(lm, None, prompts, s)
    assert [(list(q.generated_ids), q.finished) for q in got] == ref
    assert [q.prompt for q in got] == [i for i in range(len(PROBLEMS)) for _ in range(samples)]
    assert [q.sample for q in got] == list(range(samples)) * len(PROBLEMS)
    assert any(q.finished for q in got) and not all(q.finished for q in got)
    assert [q.generated_ids for q in got] != [q.generated_ids for q in base], "steering must change the samples"
    assert [q.prompt_ids for q in got] == [tuple(p) for p in encode(lm, prompts) for _ in range(samples)]


def test_seeded_samples_repeat_and_depend_on_the_seed():
    lm = _lm()
    prompts = render_prompts(lm, PROBLEMS, "qwen_math")
    s = model_sampling(lm, max_new_tokens=6, temperature=1.0, samples=2, seed=1, batch_size=2)
    a, b = sample_texts(lm, None, prompts, s), sample_texts(lm, None, prompts, s)
    c = sample_texts(lm, None, prompts, s.replace(seed=2))
    assert a == b and a != c


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefill_equals_prefilling_every_copy(temperature):
    """Rollouts: the prompt prefilled once and its KV cache repeated G times gives, bit for bit, the ids of
    prefilling each copy (float32), with per-prompt budgets; the same seed repeats them."""
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    prompts = pad_prompts([[5, 6, 7], [8, 9, 10, 11, 12], [13]], pad_id=0)
    budgets = torch.tensor([7, 5, 6])
    s = SamplingSettings(8, temperature, samples=4, seed=11, stop_ids=(2, 7))
    shared = sample_rollouts(lm.model, prompts, s, pad_id=0, budgets=budgets)
    copies = sample_rollouts(lm.model, prompts, s, pad_id=0, budgets=budgets, share_prefill=False)
    again = sample_rollouts(lm.model, prompts, s, pad_id=0, budgets=budgets)
    for r in (copies, again):
        assert torch.equal(shared.tokens, r.tokens) and torch.equal(shared.mask, r.mask)
        assert torch.equal(shared.finished, r.finished)
    assert shared.lengths.max() <= 7 and bool((shared.lengths.view(3, 4) <= budgets[:, None]).all())
    assert bool(shared.finished.any()) and not bool(shared.finished.all())
    if temperature:
        other = sample_rollouts(lm.model, prompts, s.replace(seed=12), pad_id=0, budgets=budgets)
        assert not torch.equal(other.tokens, shared.tokens)


@pytest.mark.parametrize("share_prefill", [True, False])
def test_cached_step_logits_equal_an_uncached_forward(share_prefill):
    """Each decode step's logits (from the KV cache) equal one uncached forward of the finished sequences at
    the position that predicts that token (left padding, per-row lengths)."""
    lm = tiny_lm(make_tiny_model("qwen2", vocab_size=VOCAB))
    prompts = pad_prompts([[5, 6, 7, 8], [9, 10]], pad_id=0)
    s = SamplingSettings(6, 1.0, samples=3, seed=2, stop_ids=(2,))
    steps: list[torch.Tensor] = []
    ro = sample_rollouts(
        lm.model, prompts, s, pad_id=0, share_prefill=share_prefill, on_logits=lambda i, x: steps.append(x.clone())
    )
    cached = torch.stack(steps, dim=1)  # [rows, steps, vocab]
    seqs = ro.sequences()
    ids, mask = pad([q.ids for q in seqs], 0, "left")
    with torch.no_grad():
        full = lm.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    d = lm.shape.d_model
    for r, q in enumerate(seqs):
        width, n = ids.shape[1], q.n_generated
        ref = full[r, width - n - 1 : width - 1]  # the positions that predicted the n generated tokens
        tol = torch.finfo(torch.float32).eps * float(ref.abs().max()) * math.sqrt(d * lm.shape.n_layers)
        torch.testing.assert_close(cached[r, :n], ref, atol=tol, rtol=0)


def test_rollouts_from_token_lists_rebuild_the_sampled_layout():
    """The vLLM seam: another engine's (token ids, finished) per row become the `Rollouts` this sampler builds."""
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    prompts = pad_prompts([[5, 6, 7], [8, 9]], pad_id=0)
    s = SamplingSettings(5, 1.0, samples=3, stop_ids=(2,))
    ro = sample_rollouts(lm.model, prompts, s, pad_id=0, budgets=torch.tensor([5, 2]))
    assert len(set(ro.lengths.tolist())) > 1  # rows of different lengths: the padding side matters
    rebuilt = Rollouts.from_token_lists(prompts, 3, ro.token_lists(), ro.finished.tolist(), pad_id=0)
    width = int(ro.lengths.max())
    assert torch.equal(rebuilt.tokens, ro.tokens[:, :width]) and torch.equal(rebuilt.mask, ro.mask[:, :width])
    assert torch.equal(rebuilt.finished, ro.finished) and rebuilt.sequences() == ro.sequences()
    with pytest.raises(ValueError, match="expected 6 rows"):
        Rollouts.from_token_lists(prompts, 3, [[1]] * 5, [True] * 5, pad_id=0)
    with pytest.raises(ValueError, match="at least one token"):
        Rollouts.from_token_lists(prompts, 3, [[1]] * 5 + [[]], [True] * 6, pad_id=0)


def test_shared_prefill_under_a_condition_is_refused():
    lm = _lm()
    cond, vecs = _condition()
    with steering(lm.model, lm.adapter, cond, vecs) as ctx, pytest.raises(ValueError, match="per-row state"):
        sample(lm.model, [[5, 6]], SamplingSettings(3, 1.0, samples=2), pad_id=0, ctx=ctx, share_prefill=True)


def test_sequence_and_settings_values():
    tok = make_tiny_tokenizer()
    eos = tok.eos_token_id
    hi = tok("hi", add_special_tokens=False)["input_ids"]
    done = Sequence([5, 6], [*hi, eos], True, prompt=1, sample=2)
    cut = Sequence([5], hi, False)
    assert done.ids == [5, 6, *hi, eos] and done.prompt_length == 2 and done.n_generated == 3
    assert done.completion_ids == tuple(hi) and cut.completion_ids == tuple(hi)
    assert done.text(tok) == "hi" == cut.text(tok) and done.first_token(tok) == "h"
    assert Sequence([5], [eos], True).first_token(tok) == ""
    assert Sequence.from_json(done.to_json()) == done
    assert only_finished([done, cut, done]) == [done, done]
    s = SamplingSettings(4, stop_ids=[2, 3])
    assert s.greedy and s.stop_ids == (2, 3) and s.key()["stop_ids"] == [2, 3] and s.replace(seed=5).seed == 5
    for bad in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(samples=0), dict(top_k=-1)):
        with pytest.raises(ValueError):
            SamplingSettings(**{"max_new_tokens": 4, **bad})


def test_one_padder_left_and_right_and_the_pad_id_rule():
    ids, mask = pad_right([[4, 5, 6], [7]], 0)
    assert ids.tolist() == [[4, 5, 6], [7, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    p = pad_prompts([[4, 5, 6], [7]], 9)
    assert p.ids.tolist() == [[4, 5, 6], [9, 9, 7]] and p.mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert p.positions().tolist() == [[0, 1, 2], [0, 0, 0]] and p.token_lists() == [[4, 5, 6], [7]]
    assert isinstance(p, Prompts)
    tok = make_tiny_tokenizer()
    assert pad_id(tok) == tok.pad_token_id == 0
    tok.pad_token = None
    assert pad_id(tok) == tok.eos_token_id
    with pytest.raises(ValueError, match="at least one token"):
        pad_prompts([[1], []], 0)


def test_teacher_forced_sequences_are_the_sampled_ids_cached_and_filtered(tmp_path):
    """The readouts' `sample_sequences`: the sampler's own ids (not decoded text encoded again), written to
    `work/sequences/` once, and `only_finished` keeps the sequences a stop token ended."""
    from mechsteer.generation import spec_sampling
    from mechsteer.measurement import MeasurementTask
    from mechsteer.readouts.teacher_forced import sample_sequences
    from mechsteer.spec.kinds import READOUT_KINDS
    from mechsteer.spec.study import StudySpec  # noqa: F401 - registers every kind

    lm = _lm()
    spec = READOUT_KINDS.spec("token_shift")(
        prompts=PROBLEMS, template="raw", max_new_tokens=6, temperature=1.0, samples=2, track=[]
    )
    task = MeasurementTask(lm=lm, ctx=None, spec=spec, seed=3, shared_work_dir=tmp_path)
    seqs = sample_sequences(task, [])
    ref = sample_texts(lm, None, render_prompts(lm, PROBLEMS, "raw"), spec_sampling(lm, spec, 3))
    assert seqs == ref and len(list((tmp_path / "sequences").glob("*.json"))) == 1
    kept = sample_sequences(task, [], only_finished=True)  # read back from the cache
    assert kept == [q for q in ref if q.finished] and 0 < len(kept) < len(ref)
    assert all(q.generated_ids[-1] in spec_sampling(lm, spec, 3).stop_ids for q in kept)
