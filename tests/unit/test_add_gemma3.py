"""`add` on Gemma3 against a by-hand computation. Gemma3 normalises the MLP output
(`post_feedforward_layernorm`) before adding it to the residual, so `add` (the vector added to the block's
output, i.e. to the next block's input) is NOT the same as a bias on `mlp.down_proj` there, unlike Llama/Qwen2
(tests/unit/test_add.py). The by-hand reference runs the blocks after the steered one itself, on
block_output + v, with the arguments the model passed them in an unsteered run."""

from __future__ import annotations

import copy

import torch
from conftest import register_model
from tolerance import assert_close, logits_tolerance

from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for, decoder_output_tensor
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.vectors import VectorSet

N_LAYERS, D, STEERED = 4, 32, 1


def _tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=97,
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=8,
        max_position_embeddings=128,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * 2,
        initializer_range=0.3,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).to(torch.float64).eval()
    with torch.no_grad():  # Gemma norms scale by (1 + weight); give them weights so the norms matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
    return register_model(model)


def _by_hand(model, ids, v: torch.Tensor) -> torch.Tensor:
    """Logits with v added to block STEERED's output, computed by running the later blocks by hand."""
    layers = model.model.layers
    calls: dict[int, tuple] = {}
    out: dict[str, torch.Tensor] = {}
    hooks = [
        layers[j].register_forward_pre_hook(lambda m, a, k, j=j: calls.__setitem__(j, (a, k)), with_kwargs=True)
        for j in range(STEERED + 1, N_LAYERS)
    ]
    hooks.append(layers[STEERED].register_forward_hook(lambda m, a, o: out.__setitem__("h", decoder_output_tensor(o))))
    try:
        model(ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    h = out["h"] + v
    for j in range(STEERED + 1, N_LAYERS):
        args, kwargs = calls[j]
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": h}
        else:
            args = (h,) + tuple(args[1:])
        h = decoder_output_tensor(layers[j](*args, **kwargs))
    logits = model.lm_head(model.model.norm(h))
    cap = model.config.final_logit_softcapping
    return torch.tanh(logits / cap) * cap if cap else logits


def test_gemma3_add_is_block_output_plus_v_and_not_a_down_proj_bias():
    m = _tiny_gemma3()
    ids = torch.randint(3, 97, (2, 9))
    g = torch.Generator().manual_seed(1)
    vs = VectorSet(torch.randn(N_LAYERS, D, generator=g, dtype=torch.float64) * 2.0, list(range(N_LAYERS)))
    v = vs.vectors[STEERED]
    with torch.no_grad():
        base = m(ids, use_cache=False).logits
        unsteered = _by_hand(m, ids, torch.zeros(D, dtype=torch.float64))
        assert_close(unsteered, base, logits_tolerance(m, base))
        with steering(m, adapter_for(m), [AddSpec(vector="v", layer=[STEERED])], {"v": vs}):
            steered = m(ids, use_cache=False).logits
        assert (steered - base).abs().max() > 1e-3, "steering must change the logits"
        by_hand = _by_hand(m, ids, v)
        assert_close(steered, by_hand, logits_tolerance(m, steered, by_hand))

        # a down_proj bias on the same block is a different intervention on Gemma3
        ref = copy.deepcopy(m)
        old = ref.model.layers[STEERED].mlp.down_proj
        new = torch.nn.Linear(old.in_features, old.out_features, bias=True, dtype=old.weight.dtype)
        new.weight.copy_(old.weight)
        new.bias.copy_(v)
        ref.model.layers[STEERED].mlp.down_proj = new
        biased = register_model(ref)(ids, use_cache=False).logits
    assert (biased - base).abs().max() > 1e-3
    assert (biased - steered).abs().max() > 1e-2, "on Gemma3 add must differ from a down_proj bias"
