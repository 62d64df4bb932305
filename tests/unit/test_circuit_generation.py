"""Every circuit kind under `generate` (tiny Llama, Qwen2 and Gemma3): cached and uncached greedy decoding give
the same per-step scores (float32, within rounding: tests/tolerance.py) on a left-padded batch, a second
generate call in the same condition repeats the first (side KV caches reset per call), and the padded row
matches the same prompt generated alone."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from pydantic import TypeAdapter
from safetensors.torch import save_file
from tolerance import assert_close, assert_greedy_is_robust, logits_tolerance

from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.study import InterventionSpec
from mechsteer.vectors.vector_set import VectorSet

_IV = TypeAdapter(InterventionSpec)
STEPS = 6

KINDS = {
    "skip_attn": dict(kind="skip_attn", vector="pen"),
    "skip_attn_residual": dict(kind="skip_attn", vector="pen", patch_path="residual"),
    "skip_layer": dict(kind="skip_layer", vector="pen"),
    "qkv_k_remove": dict(kind="qkv", vector="pen", proj="k", heads=[1]),
    "qkv_v_steer_only_mlp": dict(kind="qkv", vector="pen", proj="v", heads=[0], mode="steer_only", patch_path="mlp"),
    "qkv_q_middle": dict(kind="qkv", vector="pen", layer=2, proj="q", heads=[2], mode="steer_only"),
    "head_skip": dict(kind="head", vector="pen", heads=[1]),
    "head_steer_group_residual": dict(kind="head", vector="pen", groups=[0], mode="steer_only", patch_path="residual"),
    "head_middle_mlp": dict(kind="head", vector="pen", layer=1, heads=[0, 2], patch_path="mlp"),
    "add_at_place_attn": dict(kind="add_at_place", vector="pen", place="self_attn", layer=[1, 3]),
    "add_at_place_ln1": dict(kind="add_at_place", vector="pen", place="input_layernorm", layer=2),
    "compose": dict(kind="compose", parts=[{"vector": "pen", "layer": 0}, {"vector": "other", "layer": 2}]),
    "transfer": dict(kind="transfer", vector="other"),
    "lora1": dict(kind="lora1", path="LORA"),
}


@pytest.fixture(scope="module")
def lora_path(tmp_path_factory):
    gen = torch.Generator().manual_seed(5)
    path = tmp_path_factory.mktemp("lora") / "lora1.safetensors"
    save_file(
        {
            "A": torch.randn(4, 64, generator=gen) * 0.3,
            "B": torch.randn(4, 32, generator=gen) * 0.3,
            "layers": torch.tensor([1, 3]),
        },
        str(path),
    )
    return str(path)


def _generate(model, specs, vectors, ids, mask, use_cache):
    with torch.no_grad(), steering(model, adapter_for(model), specs, vectors):
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=STEPS,
            min_new_tokens=STEPS,
            do_sample=False,
            use_cache=use_cache,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    return torch.stack(out.scores, dim=1), out.sequences


def _generate_twice(model, specs, vectors, ids, mask):
    """Two cached generate calls in ONE condition: the side caches must start afresh for the second."""
    with torch.no_grad(), steering(model, adapter_for(model), specs, vectors):
        outs = [
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=STEPS,
                min_new_tokens=STEPS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=0,
            )
            for _ in range(2)
        ]
    return [torch.stack(o.scores, dim=1) for o in outs]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_cached_equals_uncached_for_every_kind(arch, lora_path):
    model = make_tiny_model(arch)
    gen = torch.Generator().manual_seed(6)
    vectors = {
        "pen": VectorSet(torch.randn(4, 32, generator=gen) * 2.0, [0, 1, 2, 3]),
        "other": VectorSet(torch.randn(4, 32, generator=gen) * 2.0, [0, 1, 2, 3]),
    }
    ids = torch.tensor([[0, 0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26, 27]])
    mask = (ids != 0).long()
    base, _ = _generate(model, [], vectors, ids, mask, use_cache=True)
    for name, fields in KINDS.items():
        fields = {k: (lora_path if v == "LORA" else v) for k, v in fields.items()}
        specs = [_IV.validate_python(fields)]
        cached, seq_c = _generate(model, specs, vectors, ids, mask, use_cache=True)
        uncached, seq_u = _generate(model, specs, vectors, ids, mask, use_cache=False)
        assert not torch.allclose(cached, base, atol=1e-3), f"{name}: no effect on generation"
        tol = logits_tolerance(model, cached, uncached)
        assert_close(cached, uncached, tol, name)
        assert_greedy_is_robust(cached, tol)
        assert torch.equal(seq_c, seq_u), name
        first, second = _generate_twice(model, specs, vectors, ids, mask)
        assert torch.equal(first, cached), f"{name} (1st call)"  # the same computation: bit for bit
        assert torch.equal(second, cached), f"{name} (2nd call)"
        alone, _ = _generate(model, specs, vectors, ids[:1, 3:], mask[:1, 3:], use_cache=True)
        assert_close(alone, cached[:1], tol, f"{name} (padded row vs alone)")


def test_reused_cache_is_reported():
    """A cache filled outside the condition cannot be followed by the vanilla pass: clear error."""
    from transformers import DynamicCache

    from mechsteer.errors import MechsteerError

    model = make_tiny_model("llama")
    vectors = {"pen": VectorSet(torch.randn(4, 32), [2])}
    ids = torch.tensor([[5, 6, 7, 8]])
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :3], cache=cache, use_cache=True)
        with steering(
            model, adapter_for(model), [_IV.validate_python(dict(kind="head", vector="pen", heads=[0]))], vectors
        ):
            with pytest.raises(MechsteerError, match="already holds 3 positions"):
                model(input_ids=ids[:, 3:], cache=cache, use_cache=True)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_the_sequence_sampler_equals_generate_for_every_kind(arch, lora_path):
    """`mechsteer.sequences.sample_rollouts` (every copy prefilled, the condition's context told `begin()`)
    gives the raw step logits and tokens of `transformers`' cached greedy `generate` under every kind."""
    from mechsteer.sequences import Prompts, SamplingSettings, sample_rollouts

    model = make_tiny_model(arch)
    gen = torch.Generator().manual_seed(6)
    vectors = {
        "pen": VectorSet(torch.randn(4, 32, generator=gen) * 2.0, [0, 1, 2, 3]),
        "other": VectorSet(torch.randn(4, 32, generator=gen) * 2.0, [0, 1, 2, 3]),
    }
    ids = torch.tensor([[0, 0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26, 27]])
    mask = (ids != 0).long()
    settings = SamplingSettings(STEPS)  # greedy, no stop ids: STEPS tokens per row
    for name, fields in KINDS.items():
        fields = {k: (lora_path if v == "LORA" else v) for k, v in fields.items()}
        specs = [_IV.validate_python(fields)]
        steps: list[torch.Tensor] = []
        with torch.no_grad(), steering(model, adapter_for(model), specs, vectors) as ctx:
            ro = sample_rollouts(
                model,
                Prompts(ids, mask),
                settings,
                pad_id=0,
                share_prefill=False,
                ctx=ctx,
                on_logits=lambda i, x, rows, steps=steps: steps.append(x.float()),
            )
            ref = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=STEPS,
                min_new_tokens=STEPS,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=0,
            )
        want = torch.stack(ref.logits, dim=1)
        tol = torch.finfo(torch.float32).eps * float(want.abs().max()) * 32**0.5
        torch.testing.assert_close(torch.stack(steps, 1), want, atol=tol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
        assert torch.equal(ro.tokens, ref.sequences[:, ids.shape[1] :]), name


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_dropping_ended_rows_changes_nothing_for_every_kind(arch, lora_path):
    """The sampler drops ended rows from its batch (KV cache, mask, positions, the condition's per-row state:
    position tracker and a spliced block's side caches). Rows that end after 2 and 4 of 6 steps, one of them in
    the middle of the batch, so the kept rows are renumbered: every row's step logits equal those of the loop
    that keeps every row to the end (`compact=False`, which equals `generate`, above), and so do its tokens."""
    from mechsteer.sequences import Prompts, SamplingSettings, sample_rollouts

    model = make_tiny_model(arch)
    gen = torch.Generator().manual_seed(6)
    vectors = {
        "pen": VectorSet(torch.randn(4, 32, generator=gen) * 2.0, [0, 1, 2, 3]),
        "other": VectorSet(torch.randn(4, 32, generator=gen) * 2.0, [0, 1, 2, 3]),
    }
    ids = torch.tensor([[0, 0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26, 27], [0, 31, 32, 33, 34, 35, 36]])
    mask = (ids != 0).long()
    budgets = torch.tensor([6, 2, 4])
    settings = SamplingSettings(STEPS)
    for name, fields in {"none": None, **KINDS}.items():
        specs = (
            []
            if fields is None
            else [_IV.validate_python({k: (lora_path if v == "LORA" else v) for k, v in fields.items()})]
        )
        runs = {}
        for compact in (True, False):
            steps = torch.full((3, STEPS, model.config.vocab_size), float("nan"))

            def keep(i, x, rows, steps=steps):
                steps[rows, i] = x.float()

            with torch.no_grad(), steering(model, adapter_for(model), specs, vectors) as ctx:
                ro = sample_rollouts(
                    model,
                    Prompts(ids, mask),
                    settings,
                    pad_id=0,
                    budgets=budgets,
                    share_prefill=False,
                    ctx=ctx,
                    on_logits=keep,
                    compact=compact,
                )
            runs[compact] = (ro, steps)
        (ro_c, got), (ro_full, want) = runs[True], runs[False]
        assert ro_c.lengths.tolist() == [6, 2, 4], name
        if fields is not None:
            base = baseline_steps  # noqa: F821 - set by the first iteration (no intervention)
            assert not torch.allclose(want[0], base[0], atol=1e-3), f"{name}: no effect"
        else:
            baseline_steps = want  # noqa: F841
        for r, n in enumerate(budgets.tolist()):
            tol = logits_tolerance(model, want[r, :n])
            assert_close(got[r, :n], want[r, :n], tol, f"{name} row {r}")
            assert_greedy_is_robust(want[r, :n], tol)
        assert torch.equal(ro_c.tokens, ro_full.tokens) and torch.equal(ro_c.mask, ro_full.mask), name
