"""add_at_place, compose, transfer and lora1 against by-hand computations (circuit_reference) and, for lora1,
against the merged weight W + B A^T, on tiny Llama and Qwen2 models."""

from __future__ import annotations

import copy

import pytest
import torch
from circuit_reference import Reference, steered_logits
from conftest import make_tiny_model
from pydantic import TypeAdapter
from safetensors.torch import save_file
from tolerance import assert_close, forward_ops, logits_tolerance, tolerance

from mechsteer.errors import CompileError, VectorError
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.study import InterventionSpec
from mechsteer.vectors.vector_set import VectorSet

_IV = TypeAdapter(InterventionSpec)


def iv(**kw):
    return _IV.validate_python(kw)


def _ids(seed=1):
    return torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(seed))


def _vs(seed, rows=(0, 1, 2, 3), n=4, d=32, scale=2.0):
    return VectorSet(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * scale, list(rows))


def _assert_changes_then_equals(model, got, want, ids):
    with torch.no_grad():
        base = model(input_ids=ids).logits
    tol = logits_tolerance(model, got, want, base)
    assert (got - base).abs().max() > 10 * tol, "the intervention did not change the logits"
    assert_close(got, want, tol)


# ---------------------------------------------------------------- add_at_place
def _place_block(place):
    def block(r, i, h, v):
        L = r.layers[i]
        x = L.input_layernorm(h)
        if place == "input_layernorm":
            x = x + v
        a = r.o(i, r.attend(*r.qkv_from_ln(i, x)))
        if place == "self_attn":
            a = a + v
        res = h + a
        y = L.post_attention_layernorm(res)
        if place == "post_attention_layernorm":
            y = y + v
        m = L.mlp(y)
        if place == "mlp":
            m = m + v
        return res + m

    return block


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_add_at_place_by_hand(arch):
    model = make_tiny_model(arch)
    ids, vs = _ids(), _vs(3)
    for place in ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"):
        got = steered_logits(model, [iv(kind="add_at_place", vector="v", place=place, layer=[1, 3])], {"v": vs}, ids)
        blk = _place_block(place)
        with torch.no_grad():
            want = Reference(model, ids).run({i: (lambda r, j, h, f=blk: f(r, j, h, vs.row(j))) for i in (1, 3)})
        _assert_changes_then_equals(model, got, want, ids)
    # after the MLP is exactly `add` (a down_proj bias)
    at_mlp = steered_logits(model, [iv(kind="add_at_place", vector="v", place="mlp")], {"v": vs}, ids)
    add = steered_logits(model, [iv(kind="add", vector="v")], {"v": vs}, ids)
    assert_close(at_mlp, add, logits_tolerance(model, at_mlp, add))  # (r + m) + v vs r + (m + v)


def test_add_at_place_place_from_metadata_and_errors():
    model = make_tiny_model("llama")
    ids = _ids()
    trained = _vs(3, rows=[2])
    trained.meta["place"] = "self_attn"  # what `mechsteer train` writes for an at_place setup
    got = steered_logits(model, [iv(kind="add_at_place", vector="v")], {"v": trained}, ids)
    want = steered_logits(model, [iv(kind="add_at_place", vector="v", place="self_attn")], {"v": trained}, ids)
    _assert_changes_then_equals(model, got, want, ids)
    with pytest.raises(CompileError, match="no `place` given"):
        steered_logits(model, [iv(kind="add_at_place", vector="v")], {"v": _vs(3)}, ids)
    with pytest.raises(CompileError, match="no place 'pre_feedforward_layernorm'"):
        with steering(
            model,
            adapter_for(model),
            [iv(kind="add_at_place", vector="v", place="pre_feedforward_layernorm")],
            {"v": _vs(3)},
        ):
            pass


# ---------------------------------------------------------------- compose
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_compose_adds_each_single_layer_vector(arch):
    model = make_tiny_model(arch)
    ids = _ids()
    vectors = {"single_1": _vs(4, rows=[1]), "single_3": _vs(5, rows=[3])}
    spec = iv(
        kind="compose",
        parts=[{"vector": "single_1", "layer": 1}, {"vector": "single_3", "layer": "last", "scale": 0.5}],
    )
    got = steered_logits(model, [spec], vectors, ids)
    with torch.no_grad():
        want = Reference(model, ids).add_after({1: vectors["single_1"].row(1), 3: 0.5 * vectors["single_3"].row(3)})
    _assert_changes_then_equals(model, got, want, ids)
    with pytest.raises(CompileError, match="has no row for layer 2"):
        steered_logits(model, [iv(kind="compose", parts=[{"vector": "single_1", "layer": 2}])], vectors, ids)


# ---------------------------------------------------------------- transfer
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_transfer_same_shape_and_relative_depth(arch):
    model = make_tiny_model(arch)
    ids = _ids()
    donor = _vs(6)
    donor.meta["model"] = "donor/model"
    got = steered_logits(model, [iv(kind="transfer", vector="d")], {"d": donor}, ids)
    with torch.no_grad():
        want = Reference(model, ids).add_after({i: donor.row(i) for i in range(4)})
    _assert_changes_then_equals(model, got, want, ids)

    deep = _vs(7, rows=[0, 3, 6], n=7)  # a 7-layer donor: 0 -> 0, 3 -> round(1.5) = 2, 6 -> 3
    with (
        torch.no_grad(),
        steering(
            model, adapter_for(model), [iv(kind="transfer", vector="d", layer_map="relative_depth")], {"d": deep}
        ) as ctx,
    ):
        got = model(input_ids=ids).logits
        assert ctx.extras["transfer"][0]["layer_map"] == {0: 0, 3: 2, 6: 3}
    with torch.no_grad():
        want = Reference(model, ids).add_after({0: deep.row(0), 2: deep.row(3), 3: deep.row(6)})
    _assert_changes_then_equals(model, got, want, ids)


def test_transfer_shape_errors_name_both_shapes():
    model = make_tiny_model("llama")
    cases = [
        (_vs(1, n=4, d=16), "same_index", r"donor/x \[4 layers x d_model 16\].*\[4 layers x d_model 32\].*widths"),
        (_vs(1, n=6), "same_index", r"\[6 layers x d_model 32\].*\[4 layers x d_model 32\].*relative_depth"),
        (_vs(1, rows=[0, 1], n=8), "relative_depth", "donor rows 0 and 1 both map to recipient block 0"),
    ]
    for vs, layer_map, pattern in cases:
        vs.meta["model"] = "donor/x"
        with pytest.raises(CompileError, match=pattern):
            with steering(model, adapter_for(model), [iv(kind="transfer", vector="d", layer_map=layer_map)], {"d": vs}):
                pass


# ---------------------------------------------------------------- lora1
def _lora_file(tmp_path, rows=(1, 3), d_ff=64, seed=8):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(4, d_ff, generator=gen) * 0.5, torch.randn(4, 32, generator=gen) * 0.5
    path = tmp_path / "lora1.safetensors"
    save_file({"A": a, "B": b, "layers": torch.tensor(list(rows))}, str(path))
    return str(path), a, b


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora1_equals_merged_weight_and_exposes_alpha(arch, tmp_path):
    model = make_tiny_model(arch)
    ids = _ids()
    path, a, b = _lora_file(tmp_path)
    scale = 0.7
    with torch.no_grad(), steering(model, adapter_for(model), [iv(kind="lora1", path=path, scale=scale)], {}) as ctx:
        got = model(input_ids=ids).logits
        rec = {i: dict(r) for i, r in ctx.extras["lora1"].items()}
    merged = copy.deepcopy(model)
    with torch.no_grad():
        for i in (1, 3):
            merged.model.layers[i].mlp.down_proj.weight += scale * torch.outer(b[i], a[i])
        want = merged(input_ids=ids).logits
    _assert_changes_then_equals(model, got, want, ids)

    # alpha_t by hand from the merged model's down_proj input z_t (upstream of layer i's own adapter)
    zs = {}

    def record_z(r, i, h):
        L = r.layers[i]
        res = h + r.o(i, r.attend(*r.qkv(i, h)))
        y = L.post_attention_layernorm(res)
        zs[i] = L.mlp.act_fn(L.mlp.gate_proj(y)) * L.mlp.up_proj(y)
        return res + L.mlp.down_proj(zs[i])

    with torch.no_grad():
        Reference(merged, ids).run({1: record_z, 3: record_z})
        n = forward_ops(model)  # z_t comes from a forward through the blocks before
        for i in (1, 3):
            alpha = scale * (zs[i] @ a[i]) * b[i].norm()
            w = model.model.layers[i].mlp.down_proj.weight
            m = model.model.layers[i].mlp.down_proj(zs[i])
            m_terms = (zs[i].abs() @ w.abs().T).norm(dim=-1)  # |m| before cancellation
            alpha_terms = scale * (zs[i].abs() @ a[i].abs()) * b[i].norm()
            assert_close(rec[i]["alpha"], alpha, tolerance(torch.float32, alpha_terms.max(), n), "alpha")
            assert_close(rec[i]["mlp_norm"], m.norm(dim=-1), tolerance(torch.float32, m_terms.max(), n), "mlp_norm")
            cos = torch.nn.functional.cosine_similarity(m, b[i].expand_as(m), dim=-1)
            # |cos| <= 1, its error is m's relative error: the terms' size over |m|
            assert_close(rec[i]["cos"], cos, tolerance(torch.float32, (m_terms / m.norm(dim=-1)).max(), n), "cos")
            assert rec[i]["alpha"].shape == ids.shape


def test_lora1_errors(tmp_path):
    model = make_tiny_model("llama")
    bad = tmp_path / "bad.safetensors"
    save_file({"A": torch.zeros(4, 64)}, str(bad))
    with pytest.raises(VectorError, match="no tensor B"):
        with steering(model, adapter_for(model), [iv(kind="lora1", path=str(bad))], {}):
            pass
    path, _, _ = _lora_file(tmp_path, d_ff=48)
    with pytest.raises(CompileError, match="A has d_ff 48"):
        with steering(model, adapter_for(model), [iv(kind="lora1", path=path)], {}):
            pass


def test_lora1_on_architecture_without_down_proj(tmp_path):
    from conftest import register_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from mechsteer.models.adapters import ADAPTERS

    gpt2 = register_model(GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=4, n_inner=64, vocab_size=97)))
    path, _, _ = _lora_file(tmp_path)
    with pytest.raises(CompileError, match="lora1 needs mlp.down_proj, which GPT2LMHeadModel does not have"):
        with steering(gpt2, ADAPTERS.get("LlamaForCausalLM"), [iv(kind="lora1", path=path)], {}):
            pass


def test_lora1_untrained_adapter_is_a_no_op(tmp_path):
    """`mechsteer train` starts lora1 with B = 0: the adapter changes nothing and the readout values are finite."""
    model = make_tiny_model("qwen2")
    ids = _ids()
    path = tmp_path / "zero.safetensors"
    save_file({"A": torch.randn(4, 64), "B": torch.zeros(4, 32), "layers": torch.tensor([2])}, str(path))
    with torch.no_grad(), steering(model, adapter_for(model), [iv(kind="lora1", path=str(path))], {}) as ctx:
        got = model(input_ids=ids).logits
        rec = ctx.extras["lora1"][2]
        assert all(torch.isfinite(v).all() for v in rec.values())
        assert torch.equal(rec["alpha"], torch.zeros_like(rec["alpha"]))
    with torch.no_grad():
        torch.testing.assert_close(got, model(input_ids=ids).logits, atol=0, rtol=0)
