"""The paper's cross-architecture caveat on the real models. On Llama (SmolLM2) adding s_l after block l and
a bias s_l on block l's down_proj are the same intervention; on Gemma3 they are not, because
`post_feedforward_layernorm` normalises the MLP output (bias included) before the residual add. So vLLM bias
compilation refuses Gemma3 with that reason; transfer between the two widths is a clear error naming both
shapes; and the three relative-depth maps (layer references, transfer's `layer_map`, `mechsteer diff`'s
sweep matching) agree on the two real depths."""

from __future__ import annotations

import math
import re

import pytest
import torch
from gemma_model import TIER, gemma, smol  # noqa: F401 - fixtures

from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint
from mechsteer.backends.expressible import vllm_expressible
from mechsteer.errors import CompileError, MechsteerError
from mechsteer.hooks import HookScope
from mechsteer.interventions import steering
from mechsteer.spec.kinds.combine import TransferSpec, depth_map
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.spec.layers import DepthRef, resolve_layers
from mechsteer.vectors import VectorSet, load_vector_set

pytestmark = TIER
PROMPT = "Question: What is 3 + 4?\nAnswer:"


@torch.no_grad()
def _add_vs_down_proj_bias(lm) -> dict:
    """Logits of the unsteered model, of `add` after the middle block, and of the same vector as a bias on
    that block's down_proj (a plain output hook, independent of mechsteer's `add`); the vector is a fixed
    random direction with a quarter of the block's median residual norm."""
    model, n, d = lm.model, lm.shape.n_layers, lm.shape.d_model
    layer = n // 2
    ids = lm.tokenizer([PROMPT], return_tensors="pt")["input_ids"]
    seen = {}
    with HookScope() as scope:
        scope.forward_hook(lm.adapter.layer(model, layer), lambda m, a, o: seen.__setitem__("h", o))
        base = model(ids).logits
    h = seen["h"][0] if isinstance(seen["h"], tuple) else seen["h"]
    v = torch.randn(d, generator=torch.Generator().manual_seed(0))
    v = v / v.norm() * 0.25 * h[0, 1:].norm(dim=-1).median()  # position 0 (BOS) has outsized norms on Gemma
    rows = torch.zeros(n, d)
    rows[layer] = v
    with steering(model, lm.adapter, [AddSpec(vector="v", layer=[layer])], {"v": VectorSet(rows, list(range(n)))}):
        add = model(ids).logits
    with HookScope() as scope:
        scope.forward_hook(model.model.layers[layer].mlp.down_proj, lambda m, a, o: o + v)
        bias = model(ids).logits
    # float32 rounding through n blocks of width d, at the logits' magnitude
    tol = torch.finfo(torch.float32).eps * base.abs().max().item() * math.sqrt(n * d)
    return {
        "tol": tol,
        "effect": (add - base).abs().max().item(),
        "bias_effect": (bias - base).abs().max().item(),
        "gap": (add - bias).abs().max().item(),
    }


def test_add_is_a_down_proj_bias_on_llama_but_not_on_gemma3(gemma, smol):  # noqa: F811
    llama = _add_vs_down_proj_bias(smol)
    g = _add_vs_down_proj_bias(gemma)
    assert llama["effect"] > 1e3 * llama["tol"] and g["effect"] > 1e3 * g["tol"], "the vector must matter"
    assert llama["gap"] <= llama["tol"], f"Llama: add and down_proj bias should agree to rounding: {llama}"
    assert g["bias_effect"] > 1e3 * g["tol"], "the bias must matter on Gemma3 too"
    assert g["gap"] > 1e3 * g["tol"], f"Gemma3: add and down_proj bias must differ far beyond rounding: {g}"
    assert g["gap"] > 0.1 * g["effect"], f"the difference is a large part of the steering effect itself: {g}"


def test_vllm_compilation_refuses_gemma3_with_the_reason(gemma, smol):  # noqa: F811
    from mechsteer.eval.vllm_backend import compile_condition

    cond = [AddSpec(vector="v")]
    ok, why = vllm_expressible(cond, gemma.shape.architecture)
    assert not ok and why.startswith("Gemma3ForCausalLM:") and "post_feedforward_layernorm" in why
    assert vllm_expressible(cond, smol.shape.architecture)[0]  # the same condition compiles on Llama
    vs = {"v": VectorSet(torch.zeros(gemma.shape.n_layers, gemma.shape.d_model), list(range(gemma.shape.n_layers)))}
    with pytest.raises(MechsteerError, match=r"cannot run on vLLM: Gemma3ForCausalLM: .*post_feedforward_layernorm"):
        compile_condition(gemma, cond, vs)
    # the compiler itself, on the real converted folder (refused before anything is written)
    with pytest.raises(CompileError, match=r"model_type 'gemma3_text' \(.*post_feedforward_layernorm"):
        compile_bias_checkpoint(gemma, torch.zeros(gemma.shape.n_layers, gemma.shape.d_model))


@torch.no_grad()
def test_transfer_from_smollm2_vectors_is_a_clear_error_on_gemma(gemma):  # noqa: F811
    from importlib.resources import files

    donor = load_vector_set(files("mechsteer") / "data/vectors/smollm2-135m/all_layers.safetensors")
    assert (donor.n_layers, donor.d_model) == (30, 576)
    ids = gemma.tokenizer([PROMPT], return_tensors="pt")["input_ids"]
    before = gemma.model(ids).logits
    for layer_map in ("relative_depth", "same_index"):
        spec = TransferSpec(vector="donor", donor="smollm2-135m", layer_map=layer_map)
        with pytest.raises(CompileError) as e:
            with steering(gemma.model, gemma.adapter, [spec], {"donor": donor}):
                pass
        msg = str(e.value)
        assert "[30 layers x d_model 576]" in msg and "[18 layers x d_model 640]" in msg and "widths differ" in msg
    assert torch.equal(gemma.model(ids).logits, before), "a refused transfer leaves the model as it was"


def test_relative_depth_agrees_everywhere_on_the_two_real_shapes(gemma, smol):  # noqa: F811
    from mechsteer.comparison import match_conditions, relative_layer, template_regex

    n_s, n_g = smol.shape.n_layers, gemma.shape.n_layers
    assert (n_s, n_g) == (30, 18)
    for ref, want in {"first": (0, 0), "last": (29, 17), "penultimate": (28, 16), -3: (27, 15)}.items():
        assert (resolve_layers(ref, n_s)[0], resolve_layers(ref, n_g)[0]) == want
    for a, b in ((n_s, n_g), (n_g, n_s)):
        mapped = [depth_map(a, b, i) for i in range(a)]
        assert mapped[0] == 0 and mapped[-1] == b - 1 and mapped == sorted(mapped)
        for i in range(a):  # transfer's layer_map, diff's matching and {depth: i/(a-1)} name one block
            assert mapped[i] == relative_layer(i, a, b) == resolve_layers(DepthRef(depth=i / (a - 1)), b)[0]
    up = [depth_map(n_g, n_s, i) for i in range(n_g)]
    assert len(set(up)) == n_g and all(depth_map(n_s, n_g, j) == i for i, j in enumerate(up)), "18 -> 30 -> 18"
    # every sixth SmolLM2 block plus the last two land on distinct Gemma blocks, and diff pairs them
    singles = [0, 6, 12, 18, 24, 28, 29]
    rx = template_regex("single_{layer}", {"layer": r"-?\d+"})
    pairs = match_conditions(
        [f"single_{i}" for i in singles],
        [f"single_{j}" for j in range(n_g)],
        n_s,
        n_g,
        [("single_{layer}", rx, ["layer"])],
    )
    got = {int(re.sub(r"\D", "", a)): int(re.sub(r"\D", "", b)) for a, b, _ in pairs}
    assert got == {i: depth_map(n_s, n_g, i) for i in singles} and len(set(got.values())) == len(singles)
    assert got[29] == 17 and got[28] == 16
