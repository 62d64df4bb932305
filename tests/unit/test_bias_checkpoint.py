"""Bias-compiled checkpoints against the hooked `add`: the compiled folder, loaded by plain transformers with
no hooks, gives the hooked model's logits, for tiny Llama and tiny Qwen2 (GQA, carried as Llama); conditions
a checkpoint cannot express are refused with their reason."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model, register_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from tolerance import logits_tolerance, tolerance

from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint, condition_bias, vllm_expressible
from mechsteer.errors import CompileError, MechsteerError
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.kinds.circuit import SkipAttnSpec
from mechsteer.spec.kinds.interventions import AddSpec, FirstKGenerated
from mechsteer.spec.kinds.placement import Lora1Spec
from mechsteer.spec.kinds.prompting import PrefixTokenSpec
from mechsteer.vectors import VectorSet

N_LAYERS, D = 4, 32


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSTEER_CACHE", str(tmp_path / "cache"))


def _save(tmp_path, arch, **over):
    m = make_tiny_model(arch, vocab_size=VOCAB_SIZE, **over)
    if arch == "qwen2":  # Qwen2 initialises its q/k/v biases to zero: make them matter
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for block in m.model.layers:
                for lin in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj):
                    lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.3)
    d = tmp_path / arch
    m.save_pretrained(d)
    make_tiny_tokenizer().save_pretrained(d)
    return m, d


def _vectors():
    g = torch.Generator().manual_seed(1)
    return {
        "v": VectorSet(torch.randn(N_LAYERS, D, generator=g), list(range(N_LAYERS))),
        "w": VectorSet(torch.randn(N_LAYERS, D, generator=g), [1, 3]),
    }


CONDITION = [AddSpec(vector="v", scale=1.5), AddSpec(vector="w", scale=-0.7), AddSpec(vector="v", layer=[2], scale=0.3)]


def _load(path):
    from transformers import AutoModelForCausalLM

    return register_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    )


@pytest.mark.parametrize(
    "arch,over",
    [("llama", {}), ("llama", {"tie_word_embeddings": True}), ("qwen2", {"rope_theta": 5000.0, "rms_norm_eps": 1e-5})],
)
def test_compiled_checkpoint_equals_hooked_add(tmp_path, arch, over):
    if arch == "qwen2" and "rope_theta" in over:
        over = {"rope_parameters": {"rope_type": "default", "rope_theta": over.pop("rope_theta")}, **over}
    model, src = _save(tmp_path, arch, **over)
    vecs = _vectors()
    bias = condition_bias(CONDITION, vecs, N_LAYERS, D)
    out = compile_bias_checkpoint(src, bias)
    compiled = _load(out)
    assert type(compiled).__name__ == "LlamaForCausalLM"
    assert compiled.config.mlp_bias is True
    ids = torch.randint(3, VOCAB_SIZE, (3, 11))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    with torch.no_grad():
        base = model(ids, attention_mask=mask).logits
        with steering(model, adapter_for(model), CONDITION, vecs):
            hooked = model(ids, attention_mask=mask).logits
        got = compiled(ids, attention_mask=mask).logits
    assert (hooked - base).abs().max() > 1e-2, "the condition must change the logits"
    diff = (got - hooked).abs().max().item()
    assert diff <= logits_tolerance(model, got, hooked), diff  # (r + m) + s vs r + (m + s)


def test_condition_bias_is_the_scaled_sum_of_rows():
    vecs = _vectors()
    bias = condition_bias(CONDITION, vecs, N_LAYERS, D)
    v, w = vecs["v"].vectors, vecs["w"].vectors
    expected = 1.5 * v.double()
    expected[1] += -0.7 * w[1].double()
    expected[3] += -0.7 * w[3].double()
    expected[2] += 0.3 * v[2].double()
    # each term is rounded to float32 (as the hooked add forms it), then summed: 3 roundings of terms <= 2.5 |row|
    magnitude = 2.5 * max(v.abs().max(), w.abs().max())
    torch.testing.assert_close(bias, expected, rtol=0, atol=tolerance(torch.float32, magnitude, 3))
    assert torch.equal(condition_bias([], vecs, N_LAYERS, D), torch.zeros(N_LAYERS, D, dtype=torch.float64))
    with pytest.raises(CompileError, match="no rows for layers"):
        condition_bias([AddSpec(vector="w", layer=[0])], vecs, N_LAYERS, D)


def test_qwen2_conversion_keeps_config_and_biases(tmp_path):
    model, src = _save(tmp_path, "qwen2", rms_norm_eps=3e-5, tie_word_embeddings=True)
    out = compile_bias_checkpoint(src, torch.zeros(N_LAYERS, D))
    cfg = json.loads((out / "config.json").read_text())
    qcfg = json.loads((src / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["attention_bias"] is True and cfg["mlp_bias"] is True
    assert cfg["rms_norm_eps"] == qcfg["rms_norm_eps"] and cfg["tie_word_embeddings"] is True
    assert cfg["rope_parameters"] == qcfg["rope_parameters"]
    assert cfg["head_dim"] == D // 4 and cfg["num_key_value_heads"] == 2
    compiled = _load(out)
    for layer in range(N_LAYERS):
        a, b = model.model.layers[layer].self_attn, compiled.model.layers[layer].self_attn
        assert torch.equal(a.q_proj.bias, b.q_proj.bias) and torch.equal(a.k_proj.bias, b.k_proj.bias)
        assert torch.count_nonzero(b.o_proj.bias) == 0
        assert torch.count_nonzero(compiled.model.layers[layer].mlp.gate_proj.bias) == 0
    assert a.q_proj.bias.abs().max() > 0  # the kept biases are not trivially zero
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    chat = sorted(p.name for p in src.iterdir() if "chat_template" in p.name)
    assert chat and all((out / n).read_bytes() == (src / n).read_bytes() for n in chat)


def test_cache_is_content_addressed(tmp_path):
    _, src = _save(tmp_path, "llama")
    b1 = condition_bias([AddSpec(vector="v")], _vectors(), N_LAYERS, D)
    first = compile_bias_checkpoint(src, b1)
    assert compile_bias_checkpoint(src, b1.clone()) == first
    assert compile_bias_checkpoint(src, b1 * 2) != first
    assert first.parent == tmp_path / "cache" / "compiled"
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".compile-")]


def test_refuses_gemma_sliding_window_and_recompilation(tmp_path):
    _, src = _save(tmp_path, "llama")
    out = compile_bias_checkpoint(src, torch.zeros(N_LAYERS, D))
    with pytest.raises(CompileError, match="already has MLP biases"):
        compile_bias_checkpoint(out, torch.zeros(N_LAYERS, D))
    gemma = tmp_path / "gemma"
    gemma.mkdir()
    (gemma / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    with pytest.raises(CompileError, match="post-feed-forward norm"):
        compile_bias_checkpoint(gemma, torch.zeros(N_LAYERS, D))
    _, qsrc = _save(tmp_path, "qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=2)
    with pytest.raises(CompileError, match="sliding-window"):
        compile_bias_checkpoint(qsrc, torch.zeros(N_LAYERS, D))


@pytest.mark.parametrize(
    "condition,reason",
    [
        ([AddSpec(vector="v", positions="generated")], "position-selective"),
        (
            [AddSpec(vector="v"), AddSpec(vector="v", positions=FirstKGenerated(first_k_generated=2))],
            "first_k_generated",
        ),
        ([SkipAttnSpec(vector="v", layer=2)], "circuit surgery"),
        ([PrefixTokenSpec(token="To")], "prompt-text suffix"),
        ([Lora1Spec(path="x.safetensors", layer=1)], "rank-1"),
    ],
)
def test_non_expressible_conditions_name_why(condition, reason):
    ok, why = vllm_expressible(condition)
    assert ok is False
    assert reason in why
    with pytest.raises(CompileError, match="backend: hf"):
        condition_bias(condition, _vectors(), N_LAYERS, D)


def test_expressible_conditions():
    assert vllm_expressible([]) == (True, "no intervention: the base model")
    ok, why = vllm_expressible([AddSpec(vector="v", scale=-3.0), AddSpec(vector="w", layer=[1])])
    assert ok and "down_proj" in why


def test_loaded_model_compiles_from_its_directory(tmp_path):
    from mechsteer.eval.vllm_backend import compile_condition
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec

    _, src = _save(tmp_path, "qwen2")
    lm = load_model("q", ModelSpec(id=str(src), device="cpu", dtype="float32"))
    register_model(lm.model)
    vecs = _vectors()
    out = compile_condition(lm, CONDITION, vecs)
    assert str(compile_bias_checkpoint(src, condition_bias(CONDITION, vecs, N_LAYERS, D))) == out
    with pytest.raises(MechsteerError, match="cannot run on vLLM: add with positions 'prompt' is position-selective"):
        compile_condition(lm, [AddSpec(vector="v", positions="prompt")], vecs)
