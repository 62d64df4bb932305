"""Block surgery (skip_attn, skip_layer, qkv, head, patch paths) against the by-hand two-copy block of
`circuit_reference`, on tiny Llama, Qwen2 and Gemma3 models with GQA (4 query heads, 2 KV heads, head_dim 8).
On Gemma3 the block is sandwich-normed: the by-hand block normalises the attention output before each use
(post_attention_layernorm), so every patch path is checked there too."""

from __future__ import annotations

import pytest
import torch
from circuit_reference import reference_for, steered_logits, surgery_block
from conftest import make_tiny_model, register_model
from pydantic import TypeAdapter
from tolerance import assert_close, logits_tolerance

from mechsteer.spec.study import InterventionSpec
from mechsteer.vectors.vector_set import VectorSet

ALL_Q, ALL_KV = (0, 1, 2, 3), (0, 1)
_IV = TypeAdapter(InterventionSpec)


def iv(**kw):
    return _IV.validate_python(kw)


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3"])
def _built(request):
    model = make_tiny_model(request.param)
    ids = torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    vs = VectorSet(torch.randn(4, 32, generator=gen) * 2.0, [0, 1, 2, 3])
    with torch.no_grad():
        base = model(input_ids=ids).logits
    return model, ids, {"pen": vs}, base


@pytest.fixture
def setup(_built):
    register_model(_built[0])  # the hook-leak guard checks the shared model after every test
    return _built


def _close(model, a, b) -> bool:
    """Equal up to the rounding of two float32 forwards."""
    return bool((a - b).abs().max() <= logits_tolerance(model, a, b))


def _check(setup, spec, reference, block: int = 3, name: str = ""):
    """The intervention changes the logits (vs unsteered and vs plain steering), then equals the by-hand
    reference."""
    model, ids, vectors, base = setup
    got = steered_logits(model, [spec], vectors, ids)
    steered = steered_logits(model, [iv(kind="add", vector="pen", layer=block - 1)], vectors, ids)
    assert not _close(model, got, base), f"{name}: the intervention did not change the logits"
    assert not _close(model, got, steered), f"{name}: the splice made no difference to plain steering"
    with torch.no_grad():
        ref = reference_for(model, ids)
        s = vectors["pen"].row(block - 1)
        want = ref.run({block: lambda r, i, h: reference(r, i, h, s)})
    assert_close(got, want, logits_tolerance(model, got, want), name)


# (spec fields, reference kwargs) from the paper's proj_type table (section 4.6)
CASES = {
    "skip_attn": (dict(kind="skip_attn"), dict(van_q=ALL_Q, van_k=ALL_KV, van_v=ALL_KV)),
    "q_remove_head1": (dict(kind="qkv", proj="q", heads=[1]), dict(van_q=(1,))),
    "q_steer_only_head2": (
        dict(kind="qkv", proj="q", heads=[2], mode="steer_only"),
        dict(van_q=(0, 1, 3), van_k=ALL_KV, van_v=ALL_KV),
    ),
    "k_remove_kvhead1": (dict(kind="qkv", proj="k", heads=[1]), dict(van_k=(1,))),
    "v_steer_only_kvhead0": (
        dict(kind="qkv", proj="v", heads=[0], mode="steer_only"),
        dict(van_q=ALL_Q, van_k=ALL_KV, van_v=(1,)),
    ),
    "all_v_proj": (dict(kind="qkv", proj="v"), dict(van_v=ALL_KV)),
    "inverse_all_v_proj": (dict(kind="qkv", proj="v", mode="steer_only"), dict(van_q=ALL_Q, van_k=ALL_KV)),
    "kv_remove_all": (dict(kind="qkv", proj=["k", "v"]), dict(van_k=ALL_KV, van_v=ALL_KV)),
    "skip_head1": (dict(kind="head", heads=[1]), dict(van_o=(1,))),
    "steer_group1": (dict(kind="head", groups=[1], mode="steer_only"), dict(van_o=(0, 1))),
    "skip_group0_and3": (dict(kind="head", groups=[0], heads=[3]), dict(van_o=(0, 1, 3))),
    "skip_head0_residual": (dict(kind="head", heads=[0], patch_path="residual"), dict(van_o=(0,), path="residual")),
    "steer_head3_mlp": (
        dict(kind="head", heads=[3], mode="steer_only", patch_path="mlp"),
        dict(van_o=(0, 1, 2), path="mlp"),
    ),
    "k_remove_mlp": (dict(kind="qkv", proj="k", heads=[0], patch_path="mlp"), dict(van_k=(0,), path="mlp")),
    "skip_attn_residual": (
        dict(kind="skip_attn", patch_path="residual"),
        dict(van_q=ALL_Q, van_k=ALL_KV, van_v=ALL_KV, path="residual"),
    ),
}


def test_splice_matches_two_copy_block(setup):
    """Every row of the table (one test, many cases: each case is a few millisecond forwards)."""
    for name, (fields, ref_kw) in CASES.items():
        spec = iv(vector="pen", layer="last", **fields)
        _check(setup, spec, lambda r, i, h, s, kw=ref_kw: surgery_block(r, i, h, s, **kw), name=name)


def test_skip_layer_is_vanilla_block_plus_s(setup):
    _check(setup, iv(kind="skip_layer", vector="pen", layer="last"), lambda r, i, h, s: r.block(i, h) + s)


def test_skip_attn_by_hand(setup):
    """The issue's wording: attention on the vanilla input, the MLP on the steered residual."""

    def by_hand(r, i, h, s):
        a = r.o(i, r.attend(*r.qkv(i, h), i))
        res = h + s + a
        return res + r.mlp(i, res)

    _check(setup, iv(kind="skip_attn", vector="pen", layer=-1), by_hand)


def test_any_block(setup):
    """A middle block (2, s = row 1): the later block runs on the spliced output."""
    spec = iv(kind="qkv", vector="pen", layer=2, proj="q", heads=[0, 3], mode="steer_only")
    _check(setup, spec, lambda r, i, h, s: surgery_block(r, i, h, s, van_q=(1, 2), van_k=ALL_KV, van_v=ALL_KV), block=2)
    _check(
        setup,
        iv(kind="head", vector="pen", layer={"depth": 0.5}, heads=[2]),
        lambda r, i, h, s: surgery_block(r, i, h, s, van_o=(2,)),
        block=2,
    )


EQUIVALENT = {
    # spec fields -> "steered" (= add of row B-1) or "skip_attn"
    "all_three_steered": (dict(kind="qkv", proj=["q", "k", "v"], mode="steer_only"), "steered"),
    "remove_from_no_heads": (dict(kind="qkv", proj="q", heads=[]), "steered"),
    "steer_only_no_heads": (dict(kind="qkv", proj="v", heads=[], mode="steer_only"), "skip_attn"),
    "skip_head_none": (dict(kind="head", heads=[]), "steered"),
    "steer_head_none": (dict(kind="head", heads=[], mode="steer_only"), "skip_attn"),
    "skip_all_heads": (dict(kind="head", heads="all"), "skip_attn"),
    "remove_all_qkv": (dict(kind="qkv", proj=["q", "k", "v"]), "skip_attn"),
}


def test_equivalences(setup):
    model, ids, vectors, base = setup
    targets = {
        "steered": steered_logits(model, [iv(kind="add", vector="pen", layer="penultimate")], vectors, ids),
        "skip_attn": steered_logits(model, [iv(kind="skip_attn", vector="pen", layer="last")], vectors, ids),
    }
    assert not _close(model, targets["steered"], targets["skip_attn"])
    for name, (fields, other) in EQUIVALENT.items():
        got = steered_logits(model, [iv(vector="pen", layer="last", **fields)], vectors, ids)
        assert not _close(model, got, base), name
        assert_close(got, targets[other], logits_tolerance(model, got, targets[other]), name)


def test_surgery_in_bfloat16_matches_add():
    """Steering everything through the splice machinery equals plain steering in the paper's dtype."""
    model = make_tiny_model("qwen2", dtype=torch.bfloat16)
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(3))
    vectors = {"pen": VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(4)), [2])}
    got = steered_logits(model, [iv(kind="qkv", vector="pen", proj=["q", "k", "v"], mode="steer_only")], vectors, ids)
    want = steered_logits(model, [iv(kind="add", vector="pen", layer=2)], vectors, ids)
    assert torch.equal(got, want)
