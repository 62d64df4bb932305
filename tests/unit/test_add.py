"""The `add` intervention against independent computations: an explicit down_proj bias, hand-placed
additions at exact positions, cached vs uncached generation, batch-1 vs left-padded batches."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_model
from tolerance import assert_close, assert_greedy_is_robust, logits_tolerance

from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.vectors import VectorSet

N_LAYERS, D = 4, 32


def _vectors(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return VectorSet(torch.randn(N_LAYERS, D, generator=g) * scale, list(range(N_LAYERS)))


def _with_down_proj_bias(model, rows: dict[int, torch.Tensor]):
    """Independent reference: a copy of the model whose down_proj of block l has bias = s_l (the paper's
    implementation: modeling files patched to bias=True)."""
    ref = copy.deepcopy(model)
    for l, vec in rows.items():
        old = ref.model.layers[l].mlp.down_proj
        new = torch.nn.Linear(old.in_features, old.out_features, bias=True, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(old.weight)
            new.bias.copy_(vec)
        ref.model.layers[l].mlp.down_proj = new
    return ref


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("layer", [[2], [0, 3], "all"])
def test_add_equals_down_proj_bias(arch, layer):
    m = make_tiny_model(arch, dtype=torch.float64)
    vs = _vectors()
    ids = torch.randint(3, 97, (2, 9))
    base = m(ids).logits
    rows = list(range(N_LAYERS)) if layer == "all" else layer
    ref = _with_down_proj_bias(m, {l: vs.vectors[l].double() for l in rows})(ids).logits
    with steering(m, adapter_for(m), [AddSpec(vector="v", layer=layer)], {"v": vs}):
        steered = m(ids).logits
    assert (steered - base).abs().max() > 1e-3, "steering must change the logits"
    assert_close(steered, ref, logits_tolerance(m, steered, ref))  # (r + m) + s vs r + (m + s): rounding only


def test_zero_vector_equals_baseline_and_scale_zero_too(tiny_model):
    m = tiny_model
    ids = torch.randint(3, 97, (2, 7))
    base = m(ids).logits
    zeros = VectorSet(torch.zeros(N_LAYERS, D), list(range(N_LAYERS)))
    with steering(m, adapter_for(m), [AddSpec(vector="z")], {"z": zeros}):
        assert torch.equal(m(ids).logits, base)
    with steering(m, adapter_for(m), [AddSpec(vector="v", scale=0.0)], {"v": _vectors()}):
        assert torch.equal(m(ids).logits, base)


def test_scale_is_linear_in_the_vector():
    m = make_tiny_model(dtype=torch.float64)
    vs = _vectors()
    ids = torch.randint(3, 97, (1, 6))
    doubled = VectorSet(vs.vectors * 2, vs.layers)
    with steering(m, adapter_for(m), [AddSpec(vector="v", layer=1, scale=2.0)], {"v": vs}):
        a = m(ids).logits
    with steering(m, adapter_for(m), [AddSpec(vector="v", layer=1)], {"v": doubled}):
        b = m(ids).logits
    torch.testing.assert_close(a, b)


def _gen(m, ids, mask, ctx, use_cache, n=6):
    if ctx is not None:
        ctx.begin()
    out = m.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=n,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=0,
        eos_token_id=None,
        output_scores=True,
        return_dict_in_generate=True,
    )
    return out.sequences, torch.stack(out.scores, 1)


SELECTORS = ["all", "prompt", "generated", "last_prompt", {"first_k_generated": 1}, {"first_k_generated": 3}]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("positions", SELECTORS, ids=str)
def test_cached_and_uncached_generation_agree(arch, positions):
    m = make_tiny_model(arch)
    vs = _vectors(scale=3.0)
    ids = torch.randint(3, 97, (3, 8))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[1, :1] = 0
    base_seq, base_scores = _gen(m, ids, mask, None, True)
    with steering(m, adapter_for(m), [AddSpec(vector="v", layer=[1, 2], positions=positions)], {"v": vs}) as ctx:
        s1, sc1 = _gen(m, ids, mask, ctx, True)
        s2, sc2 = _gen(m, ids, mask, ctx, False)
    assert (sc1 - base_scores).abs().max() > 1e-3, "steering must change generation"
    tol = logits_tolerance(m, sc1, sc2)
    assert_greedy_is_robust(sc1, tol)
    assert torch.equal(s1, s2)
    assert_close(sc1, sc2, tol)


def _hand_steered_logits(m, seq, mask, positions_to_add: torch.Tensor, vs, layers):
    """Independent reference: one full forward with a plain hook adding s at an explicit (b, T) mask."""
    hooks = []
    for l in layers:
        v = vs.vectors[l]
        hooks.append(
            m.model.layers[l].register_forward_hook(
                lambda mod, a, out, v=v: out + positions_to_add.unsqueeze(-1).to(out.dtype) * v
            )
        )
    try:
        return m(seq, attention_mask=mask).logits
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("positions", SELECTORS, ids=str)
def test_position_selectors_match_explicit_positions(positions):
    """Generated tokens, re-scored by one full forward with additions at hand-computed positions, must get
    exactly the logits generation saw: positions are counted per row (padding excluded) across decode steps."""
    # float32: transformers' eager padding mask yields NaN rows in float64
    m = make_tiny_model(dtype=torch.float32)
    vs = _vectors(scale=3.0)
    prompt = torch.randint(3, 97, (2, 7))
    pmask = torch.ones_like(prompt)
    pmask[0, :2] = 0
    n_new = 5
    with steering(m, adapter_for(m), [AddSpec(vector="v", layer=[0, 2], positions=positions)], {"v": vs}) as ctx:
        seq, scores = _gen(m, prompt, pmask, ctx, True, n=n_new)
    full_mask = torch.cat([pmask, torch.ones(2, n_new, dtype=pmask.dtype)], 1)
    T = seq.shape[1]
    col = torch.arange(T).unsqueeze(0).expand(2, T)
    gen_start = prompt.shape[1]
    is_gen = col >= gen_start
    valid = full_mask.bool()
    if positions == "all":
        sel = valid
    elif positions == "prompt":
        sel = valid & ~is_gen
    elif positions == "generated":
        sel = is_gen
    elif positions == "last_prompt":
        sel = col == gen_start - 1
    else:
        k = positions["first_k_generated"]
        sel = is_gen & (col < gen_start + k)
    ref = _hand_steered_logits(m, seq, full_mask, sel, vs, [0, 2])
    # scores[t] are the logits predicting token gen_start + t, computed at position gen_start + t - 1
    ref_scores = ref[:, gen_start - 1 : T - 1]
    assert_close(scores, ref_scores, logits_tolerance(m, scores, ref_scores))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_batch_of_8_equals_batch_of_1(arch):
    m = make_tiny_model(arch)
    vs = _vectors(scale=3.0)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 97, (int(n),), generator=g) for n in torch.randint(3, 10, (8,), generator=g)]
    spec = [AddSpec(vector="v", layer=[1, 3], positions={"first_k_generated": 2})]
    with steering(m, adapter_for(m), spec, {"v": vs}) as ctx:
        singles = [_gen(m, p.unsqueeze(0), torch.ones(1, len(p), dtype=torch.long), ctx, True) for p in prompts]
        width = max(len(p) for p in prompts)
        ids = torch.zeros(8, width, dtype=torch.long)
        mask = torch.zeros(8, width, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = p
            mask[i, width - len(p) :] = 1
        seqs, scores = _gen(m, ids, mask, ctx, True)
    assert_greedy_is_robust(scores, logits_tolerance(m, scores))
    for i, (s, sc) in enumerate(singles):
        assert torch.equal(seqs[i, width:], s[0, s.shape[1] - 6 :]), f"row {i} differs"
        assert_close(scores[i], sc[0], logits_tolerance(m, scores[i], sc[0]), f"row {i}")
