"""lm-eval end to end on a tiny model through mechsteer's bridge: steering is active in every lm-eval forward
(outputs differ), a zero vector reproduces the unsteered run exactly, prompts are the paper's, position
tracking is right for generation (left padding, KV cache) and for teacher-forced loglikelihood, seeds and
samples per problem behave, and conditions never share lm-eval cached outputs."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model, register_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer.interventions import steering
from mechsteer.measurement import MeasurementTask
from mechsteer.models.adapters import adapter_for
from mechsteer.models.loading import LoadedModel
from mechsteer.spec.kinds.eval_task import EvalTaskSpec
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.spec.models import ModelSpec
from mechsteer.vectors import VectorSet

N_LAYERS, D = 4, 32


def tiny_lm(dtype=torch.float32, chat: bool | None = None, max_length: int | None = None) -> LoadedModel:
    tok = make_tiny_tokenizer()
    model = make_tiny_model("llama", dtype=dtype, vocab_size=VOCAB_SIZE, max_position_embeddings=512)
    adapter = adapter_for(model)
    spec = ModelSpec(id="tiny", dtype="float32", chat_template=chat, max_length=max_length)
    return LoadedModel(
        "tiny", spec, model, tok, adapter, adapter.shape(model), torch.device("cpu"), dtype, "local", None
    )


def options(**over) -> EvalTaskSpec:
    o = {
        "task": "mini",
        "protocol": "greedy",
        "samples": 1,
        "limit": 6,
        "max_new_tokens": 5,
        "batch_size": 4,
        "template": "qwen_math",
        "data_dir": None,
    }
    o.update(over)
    return EvalTaskSpec(**o)


def random_vs(seed: int = 0, scale: float = 3.0) -> VectorSet:
    g = torch.Generator().manual_seed(seed)
    return VectorSet(torch.randn(N_LAYERS, D, generator=g) * scale, list(range(N_LAYERS)))


ZEROS = VectorSet(torch.zeros(N_LAYERS, D), list(range(N_LAYERS)))


def run(lm, interventions=(), vectors=None, seed: int = 0, suffix: str = "", **opts):
    from mechsteer.eval.runner import run_eval

    with steering(lm.model, lm.adapter, list(interventions), vectors or {}, tokenizer=lm.tokenizer) as ctx:
        ctx.prompt_suffix = suffix
        return run_eval(MeasurementTask(lm=lm, ctx=ctx, spec=options(**opts), seed=seed))


def completions(result) -> list[list[str]]:
    return [s["filtered_resps"][0] for s in result.samples]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


@pytest.fixture(autouse=True)
def _guard_module_model(lm):
    """The module-scoped model is shared; put it under the hook-leak guard in every test."""
    register_model(lm.model)


# ----------------------------------------------------------------------------------------------- steering


@pytest.mark.parametrize("protocol", ["greedy", "paper"])
def test_steering_changes_outputs_and_zero_vector_reproduces_them(lm, protocol):
    base = run(lm, protocol=protocol, samples=2 if protocol == "paper" else 1)
    steered = run(
        lm,
        [AddSpec(vector="v", layer=[1])],
        {"v": random_vs()},
        protocol=protocol,
        samples=2 if protocol == "paper" else 1,
    )
    zero = run(lm, [AddSpec(vector="z")], {"z": ZEROS}, protocol=protocol, samples=2 if protocol == "paper" else 1)
    assert completions(zero) == completions(base), "a zero vector must reproduce the unsteered run exactly"
    assert completions(steered) != completions(base), "the steering hook was not active during lm-eval generation"
    assert len(base.samples) == 6


def test_scale_zero_equals_base_and_hooks_removed_after(lm):
    base = run(lm)
    scaled = run(lm, [AddSpec(vector="v", layer="all", scale=0.0)], {"v": random_vs()})
    assert completions(scaled) == completions(base)
    assert sum(len(m._forward_hooks) for m in lm.model.modules()) == 0


def test_metrics_files_and_logs(lm):
    r = run(lm, protocol="paper", samples=3, limit=4)
    for key in (
        "acc_boxed",
        "acc_boxed_pass1",
        "acc_lenient",
        "acc_lenient_pass1",
        "boxed_rate",
        "mean_len",
        "mean_len_correct",
        "mean_len_incorrect",
        "n_samples",
        "n_problems",
        "samples_per_problem",
    ):
        assert key in r.metrics, key
    assert r.metrics["n_problems"] == 4 and r.metrics["n_samples"] == 12 and r.metrics["samples_per_problem"] == 3
    assert 0 < r.metrics["mean_len"] <= 5
    for s in r.samples:  # lm-eval's per-problem logs, every sample kept and graded
        assert len(s["filtered_resps"][0]) == 3 and len(s["graded"]) == 3
        assert s["acc_boxed"] == pytest.approx(sum(g["boxed"] for g in s["graded"]) / 3)
    assert b'"mechsteer_mini"' in r.files["lm_eval_results.json"]
    assert r.info["generation_kwargs"] == {
        "until": [],
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_gen_toks": 5,
    }


def test_seed_drives_sampling(lm):
    a = run(lm, protocol="paper", seed=1, limit=4)
    b = run(lm, protocol="paper", seed=1, limit=4)
    c = run(lm, protocol="paper", seed=2, limit=4)
    assert completions(a) == completions(b)
    assert completions(a) != completions(c)


# ----------------------------------------------------------------------------------------------- prompts


def test_prompt_is_the_papers_chat_prompt_plus_forced_opening(lm):
    from mechsteer.eval.templates import build_prompt

    r = run(lm, limit=2, suffix="To", protocol="paper", samples=3)  # repeats share one request object
    for s in r.samples:
        assert s["arguments"][0][0] == build_prompt(lm.tokenizer, s["doc"]["problem"]) + "To"
    assert r.info["chat_template"] is True


def test_plain_template_when_chat_template_is_off():
    from mechsteer.eval.templates import plain_prompt

    lm = tiny_lm(chat=False)
    r = run(lm, limit=2)
    for s in r.samples:
        assert s["arguments"][0][0] == plain_prompt(s["doc"]["problem"], "qwen_math")
    assert r.info["chat_template"] is False


def test_length_budget_is_per_row_prompt_plus_generation():
    """max_length caps prompt + generation per sequence (the paper's rule), without cutting prompts."""
    from mechsteer.eval.lm_eval_tasks import load_problems
    from mechsteer.eval.templates import build_prompt

    probe = tiny_lm()
    lengths = [
        len(probe.tokenizer(build_prompt(probe.tokenizer, p["problem"]), add_special_tokens=False)["input_ids"])
        for p in load_problems("mini", None, 6)
    ]
    assert len(set(lengths)) > 1, "the test needs prompts of different lengths"
    budget = max(lengths) + 3  # the longest prompt may generate 3 tokens, shorter ones more
    lm = tiny_lm(max_length=budget)
    r = run(lm, limit=6, max_new_tokens=200, batch_size=6)
    totals = []
    for s in r.samples:
        prompt = s["arguments"][0][0]
        assert prompt == build_prompt(lm.tokenizer, s["doc"]["problem"])
        n_prompt = len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        totals.append(n_prompt + s["graded"][0]["n_tokens"])
    assert max(totals) <= budget
    assert max(s["graded"][0]["n_tokens"] for s in r.samples) > 3, "shorter prompts must get a larger budget"


# ----------------------------------------------------------------------------------------------- positions


def test_bridge_generation_matches_mechsteer_generate_with_position_selective_steering(monkeypatch):
    """`positions: generated` steering through lm-eval (left-padded batches of 4) equals mechsteer's own
    generation one prompt at a time, and the bridge calls begin() before every generate batch.
    (float32: transformers 5 returns NaN logits for left-padded float64 batches.)"""
    from mechsteer.eval.lm_eval_tasks import load_problems
    from mechsteer.generation import model_sampling, render_prompts, sample_texts
    from mechsteer.interventions.base import SteeringContext

    lm = tiny_lm(dtype=torch.float32)
    ivs = [AddSpec(vector="v", layer=[1, 2], positions="generated")]
    vecs = {"v": random_vs(scale=4.0)}
    begins = []
    real_begin = SteeringContext.begin
    monkeypatch.setattr(
        SteeringContext, "begin", lambda self, lengths=None: begins.append(lengths) or real_begin(self, lengths)
    )
    via_lm_eval = run(lm, ivs, vecs, limit=6, batch_size=4)
    assert begins == [None, None], "one begin() per generate batch (6 prompts in batches of 4)"
    monkeypatch.undo()
    problems = load_problems("mini", None, 6)
    with steering(lm.model, lm.adapter, ivs, vecs, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, [p["problem"] for p in problems], "qwen_math")
        direct = sample_texts(lm, ctx, prompts, model_sampling(lm, max_new_tokens=5, batch_size=1))
    by_id = {s["doc"]["id"]: s["filtered_resps"][0][0] for s in via_lm_eval.samples}
    assert [by_id[p["id"]] for p in problems] == [q.text(lm.tokenizer) for q in direct]
    unsteered = run(lm, limit=6, batch_size=4)
    assert completions(unsteered) != completions(via_lm_eval)


def _loglikelihoods(lm, interventions, vectors, requests, suffix=""):
    from lm_eval.api.instance import Instance

    from mechsteer.eval.lm_eval_bridge import SteeredHFLM

    with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
        ctx.prompt_suffix = suffix
        bridge = SteeredHFLM(lm.model, lm.tokenizer, ctx, batch_size=4, max_length=256)
        inst = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=0) for r in requests]
        return [ll for ll, _ in bridge.loglikelihood(inst, disable_tqdm=True)]


def test_loglikelihood_sees_context_as_prompt_and_continuation_as_generated():
    """Teacher forcing: with `positions: generated` steering, a one-token continuation (predicted at the last
    context position) scores exactly as unsteered, a longer one does not; `all` changes both."""
    lm = tiny_lm(dtype=torch.float64)  # right padding, no attention mask: float64 is safe here
    reqs = [("What is 2 + 3?", "5"), ("Calculate 4 * 4.", " 16 is it"), ("Hi", "!")]
    base = _loglikelihoods(lm, [], {}, reqs)
    gen = _loglikelihoods(lm, [AddSpec(vector="v", positions="generated")], {"v": random_vs()}, reqs)
    allpos = _loglikelihoods(lm, [AddSpec(vector="v")], {"v": random_vs()}, reqs)
    assert gen[0] == base[0] and gen[2] == base[2]  # the same computation for the context: bit for bit
    assert abs(gen[1] - base[1]) > 1e-6
    assert all(abs(a - b) > 1e-6 for a, b in zip(allpos, base))


def test_forced_opening_precedes_scored_continuations():
    lm = tiny_lm(dtype=torch.float64)
    with_suffix = _loglikelihoods(lm, [], {}, [("What is 2 + 3?", " 5")], suffix="To")
    spelled_out = _loglikelihoods(lm, [], {}, [("What is 2 + 3?To", " 5")])
    plain = _loglikelihoods(lm, [], {}, [("What is 2 + 3?", " 5")])
    assert with_suffix == spelled_out and with_suffix != pytest.approx(plain)  # the same token ids: bit for bit


# ----------------------------------------------------------------------------------------------- caching


def test_conditions_never_share_lm_eval_cached_outputs(lm, monkeypatch):
    import lm_eval

    calls = []
    real = lm_eval.simple_evaluate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    generated = []
    real_generate = lm.model.generate
    monkeypatch.setattr(lm.model, "generate", lambda *a, **k: generated.append(1) or real_generate(*a, **k))
    first = run(lm, limit=4)
    second = run(lm, [AddSpec(vector="v", layer=[2])], {"v": random_vs(seed=5)}, limit=4)
    again = run(lm, limit=4)
    assert len(calls) == 3
    for kw in calls:
        assert kw.get("use_cache") is None and kw.get("cache_requests") is False
    assert len(generated) == 3, "every condition must run its own generate calls (4 prompts, batch 4)"
    assert completions(second) != completions(first)
    assert completions(again) == completions(first)


# ----------------------------------------------------------------------------------------------- data


def test_missing_hub_data_offline_is_a_clear_error(lm):
    from mechsteer.errors import MechsteerError

    with pytest.raises(MechsteerError, match="data-dir|data_dir"):
        run(lm, task="aime24", limit=2)


# ----------------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_embedded_model_through_lm_eval_prompt_zero_vector_and_steering():
    """The embedded SmolLM2-135M-Instruct (its own ChatML template with a default system prompt, eos = pad =
    <|im_end|>): lm-eval renders exactly the paper's prompt, a zero vector reproduces the unsteered run and a
    random vector after block 15 changes it."""
    from mechsteer.eval.templates import QWEN_MATH_SYSTEM, build_prompt
    from mechsteer.models.loading import load_model

    lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype="float32", device="cpu"))
    register_model(lm.model)
    n_layers, d = lm.shape.n_layers, lm.shape.d_model
    g = torch.Generator().manual_seed(0)
    rows = torch.zeros(n_layers, d)
    rows[15] = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0) * 32.0
    steer_vs = VectorSet(rows, [15])
    zero_vs = VectorSet(torch.zeros(n_layers, d), list(range(n_layers)))
    opts = dict(limit=3, max_new_tokens=12, batch_size=3)
    base = run(lm, **opts)
    zero = run(lm, [AddSpec(vector="z")], {"z": zero_vs}, **opts)
    steered = run(lm, [AddSpec(vector="v", layer=[15])], {"v": steer_vs}, **opts)
    for s in base.samples:
        prompt = s["arguments"][0][0]
        assert prompt == build_prompt(lm.tokenizer, s["doc"]["problem"]) and QWEN_MATH_SYSTEM in prompt
    assert completions(zero) == completions(base)
    assert completions(steered) != completions(base)
