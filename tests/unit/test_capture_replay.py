"""Site capture (against a by-hand forward) and teacher-forced replay (against a full forward under the same
condition), on tiny Llama and Qwen2 models with GQA, right and left padding."""

from __future__ import annotations

import pytest
import torch
from circuit_reference import Reference
from conftest import make_tiny_model
from pydantic import TypeAdapter
from tolerance import assert_close, forward_ops, logits_tolerance, tolerance

from mechsteer.capture import Capture, LastPosition, LayerMean, PositionStats, layer_sites, token_index
from mechsteer.hooks import HookScope, count_hooks
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.replay import NotReplayable, earliest_block, record, replay
from mechsteer.spec.study import InterventionSpec
from mechsteer.vectors.vector_set import VectorSet

_IV = TypeAdapter(InterventionSpec)


def iv(**kw):
    return _IV.validate_python(kw)


def _batch(padding: str):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 97, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    lengths = [9, 6, 4]
    for r, n in enumerate(lengths):
        if padding == "right":
            mask[r, n:] = 0
        else:
            mask[r, : 9 - n] = 0
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    return ids, mask


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_capture_resid_post_equals_by_hand_forward(arch):
    model = make_tiny_model(arch)
    ad = adapter_for(model)
    ids = torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    seen = []
    with torch.no_grad(), HookScope("cap") as scope:
        cap = Capture(
            model,
            ad,
            layer_sites("resid_post", range(4)) + [("mlp.down_in", 2), ("final_norm", None)],
            on_chunk=seen.append,
        ).attach(scope)
        model(input_ids=ids)
        model(input_ids=ids[:1])
        assert count_hooks(model) == scope.n_hooks
    assert count_hooks(model) == 0
    assert cap.n_chunks == 2 and [v[("resid_post", 0)].shape[0] for v in seen] == [2, 1]
    with torch.no_grad():
        ref = Reference(model, ids)
        h = ref.h0
        for i in range(4):
            h = ref.block(i, h)
            assert_close(seen[0][("resid_post", i)], h, _act_tol(model, h), f"resid_post {i}")
        normed = model.model.norm(h)
        assert_close(seen[0][("final_norm", None)], normed, _act_tol(model, h, normed))
        mlp = model.model.layers[2].mlp
        x = model.model.layers[2].post_attention_layernorm(
            seen[0][("resid_post", 1)] + ref.o(2, ref.attend(*ref.qkv(2, seen[0][("resid_post", 1)])))
        )
        want = torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x)
        assert_close(seen[0][("mlp.down_in", 2)], want, _act_tol(model, want))


def _act_tol(model, *acts):
    """Two float32 computations of activations (through at most all blocks)."""
    return tolerance(torch.float32, max(float(a.abs().max()) for a in acts), forward_ops(model))


def test_capture_sees_the_condition_and_leaks_no_hooks_on_error():
    model = make_tiny_model("llama")
    ad = adapter_for(model)
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(1))
    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(2)), [0, 1, 2, 3])
    with torch.no_grad():
        cap0 = Capture(model, ad, layer_sites("resid_post", [1]))
        with HookScope() as scope:
            cap0.attach(scope)
            model(input_ids=ids)
        with steering(model, ad, [iv(kind="add", vector="v", layer=1)], {"v": vs}) as ctx:
            cap1 = Capture(model, ad, layer_sites("resid_post", [1])).attach(ctx.scope)
            model(input_ids=ids)
    diff = cap1.last[("resid_post", 1)] - cap0.last[("resid_post", 1)]
    # the same h either way, so diff = fl(h + v) - h: one rounding at the size of h + v
    assert_close(diff, vs.row(1).expand_as(diff), tolerance(torch.float32, cap1.last[("resid_post", 1)].abs().max()))

    def boom(acts):
        raise ValueError("reducer failed")

    with pytest.raises(ValueError, match="reducer failed"), HookScope() as scope:
        Capture(model, ad, layer_sites("resid_post", [0, 3]), on_chunk=boom).attach(scope)
        model(input_ids=ids)
    assert count_hooks(model) == 0


def test_reductions_against_direct_computation():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    assert token_index(mask).tolist() == [[-1, 0, 1, 2], [0, 1, -1, -1]]
    t = torch.randn(2, 4, 3, generator=g)
    lm = LayerMean()
    lm.update("a", t, mask)
    lm.update("a", t[:1], mask[:1])
    real = [t[0, 1], t[0, 2], t[0, 3], t[1, 0], t[1, 1], t[0, 1], t[0, 2], t[0, 3]]
    torch.testing.assert_close(lm.mean("a"), torch.stack(real).double().mean(0))
    lp = LastPosition()
    lp.update("a", t, mask)
    torch.testing.assert_close(lp.get("a"), torch.stack([t[0, 3], t[1, 1]]))
    ps = PositionStats()
    v = torch.tensor([[9.0, 1.0, 2.0, 3.0], [5.0, 7.0, 9.0, 9.0]])
    ps.update("n", v, mask)
    ps.update("n", torch.tensor([[4.0, 4.0]]), torch.tensor([[1, 1]]))
    f = ps.frame("n")
    assert f["n"].tolist() == [3, 3, 1]
    assert f["mean"].tolist() == pytest.approx([(1 + 5 + 4) / 3, (2 + 7 + 4) / 3, 3.0])
    import numpy as np

    assert f["std"][0] == pytest.approx(np.std([1, 5, 4]))


# ------------------------------------------------------------------------------------------------ replay

CONDITIONS = {
    "add_at_l": ([dict(kind="add", vector="v", layer=1)], 1),
    "add_later_than_l": ([dict(kind="add", vector="v", layer=[2, 3])], 1),
    "skip_attn": ([dict(kind="skip_attn", vector="v", layer=3)], 3),
    "head": ([dict(kind="head", vector="v", layer=2, heads=[1])], 2),
    "head_from_earlier_l": ([dict(kind="head", vector="v", layer=3, heads=[2], mode="steer_only")], 1),
}


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def _replay_model(request):
    return make_tiny_model(request.param)


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("case", list(CONDITIONS))
def test_replay_equals_full_forward(_replay_model, padding, case):
    from conftest import register_model

    model = register_model(_replay_model)
    ad = adapter_for(model)
    ids, mask = _batch(padding)
    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(3)) * 2.0, [0, 1, 2, 3])
    specs_kw, l = CONDITIONS[case]
    specs = [iv(**kw) for kw in specs_kw]
    assert earliest_block(specs, 4, {"v": vs}) >= l  # replay from l is allowed
    base_logits, states = record(model, ad, [l], input_ids=ids, attention_mask=mask)
    real = mask.bool()
    with torch.no_grad(), steering(model, ad, specs, {"v": vs}):
        full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        got, post = replay(model, ad, states[l], resid=True)
    assert (full[real] - base_logits[real]).abs().max() > 1e-2, "the condition does not change the logits"
    tol = logits_tolerance(model, full)
    assert (got[real] - full[real]).abs().max() <= tol
    assert sorted(post) == list(range(l, 4))
    with torch.no_grad(), steering(model, ad, specs, {"v": vs}):  # only the scored (last) positions
        kept = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=3).logits
        got_kept = replay(model, ad, states[l], keep_last=3)
    assert got_kept.shape == kept.shape == (ids.shape[0], 3, full.shape[-1])
    assert (got_kept - full[:, -3:]).abs().max() <= tol and (kept - full[:, -3:]).abs().max() <= tol
    with torch.no_grad(), steering(model, ad, specs, {"v": vs}) as ctx:
        cap = Capture(model, ad, layer_sites("resid_post", range(l, 4))).attach(ctx.scope)  # after the condition
        model(input_ids=ids, attention_mask=mask, use_cache=False)
        none, post2 = replay(model, ad, states[l], resid=True, logits=False)
    assert none is None
    for j in range(l, 4):
        want = cap.last[("resid_post", j)][real]
        assert (post2[j][real] - want).abs().max() <= _act_tol(model, want), j
    assert count_hooks(model) == 0


def test_replay_of_no_condition_equals_base_and_earliest_block_rules():
    model = make_tiny_model("qwen2")
    ad = adapter_for(model)
    ids, mask = _batch("left")
    base, states = record(model, ad, [0, 2], input_ids=ids, attention_mask=mask)
    real = mask.bool()
    for l in (0, 2):
        assert (replay(model, ad, states[l])[real] - base[real]).abs().max() <= logits_tolerance(model, base)
    vs = VectorSet(torch.zeros(4, 32), [2, 3])
    assert earliest_block([], 4) == 4
    assert earliest_block([iv(kind="add", vector="v")], 4, {"v": vs}) == 2
    assert earliest_block([iv(kind="add", vector="v")], 4) == 0
    assert earliest_block([iv(kind="skip_layer", vector="v", layer=-1), iv(kind="add", vector="v", layer=3)], 4) == 3
    assert (
        earliest_block([iv(kind="compose", parts=[{"vector": "v", "layer": 3}, {"vector": "v", "layer": 2}])], 4) == 2
    )
    assert earliest_block([iv(kind="transfer", vector="v")], 4, {"v": vs}) == 2
    with pytest.raises(NotReplayable, match="prefix_token"):
        earliest_block([iv(kind="prefix_token", token="To")], 4)
    with pytest.raises(NotReplayable, match="positions"):
        earliest_block([iv(kind="add", vector="v", layer=3, positions="generated")], 4)
