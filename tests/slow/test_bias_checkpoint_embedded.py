"""The bias-compiled checkpoint of the embedded SmolLM2-135M-Instruct, loaded by plain transformers (no hooks),
against the hooked `add` (all layers, plus a second `add` summed into two layers).

float64: equal up to float64 rounding (the bias is the hooked terms' exact sum; only the order of additions
differs). float32: the two differ only by that order (residual + (mlp + s) vs (residual + mlp) + s); through 30
layers with logits near 30 that order alone moves logits by about as much as float32 itself moves the hooked
logits away from the float64 ones (~6e-5 here, measured in benchmarks/bias_checkpoint.py), so the float32
checks use that measured error of float32 on this machine as the yardstick: the compiled model is no further
from the float64 truth than the hooked model is, and the two float32 models are no further apart than twice
float32's own error."""

from __future__ import annotations

import pytest
import torch
from conftest import register_model
from tolerance import logits_tolerance

from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint, condition_bias
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.models.embedded import embedded_dir
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.vectors import VectorSet, load_vector_set

pytestmark = pytest.mark.slow


def test_embedded_compiled_checkpoint_equals_hooked_add(tmp_path, monkeypatch):
    from importlib.resources import files

    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = embedded_dir()
    monkeypatch.setenv("MECHSTEER_CACHE", str(tmp_path))  # compiled folder in tmp; the source stays cached
    trained = load_vector_set(files("mechsteer") / "data/vectors/smollm2-135m/all_layers.safetensors")
    g = torch.Generator().manual_seed(0)
    rand = VectorSet(torch.randn(30, 576, generator=g) * 0.5, list(range(30)))
    vecs = {"trained": trained, "rand": rand}
    cond = [AddSpec(vector="trained", scale=1.5), AddSpec(vector="rand", layer=[5, 20], scale=-2.0)]
    out = compile_bias_checkpoint(src, condition_bias(cond, vecs, 30, 576))
    ids = AutoTokenizer.from_pretrained(src)(
        ["Tell me a story about a cat and a very long river."], return_tensors="pt"
    )["input_ids"]
    logits = {}
    for dtype in (torch.float64, torch.float32):
        load = dict(dtype=dtype, attn_implementation="eager")
        model = register_model(AutoModelForCausalLM.from_pretrained(src, **load).eval())
        compiled = register_model(AutoModelForCausalLM.from_pretrained(out, **load).eval())
        assert type(compiled).__name__ == "LlamaForCausalLM" and compiled.config.mlp_bias
        with torch.no_grad():
            base = model(ids).logits
            with steering(model, adapter_for(model), cond, vecs):
                hooked = model(ids).logits
            logits[dtype] = (hooked.double(), compiled(ids).logits.double())
        assert (hooked - base).abs().max() > 0.1, "the condition must change the logits"
    hooked64, compiled64 = logits[torch.float64]
    assert (compiled64 - hooked64).abs().max().item() <= logits_tolerance(model, hooked64, dtype=torch.float64)
    hooked32, compiled32 = logits[torch.float32]
    err_hooked = (hooked32 - hooked64).abs().max().item()
    err_compiled = (compiled32 - hooked64).abs().max().item()
    assert err_compiled <= 1.5 * err_hooked, (err_compiled, err_hooked)
    assert (compiled32 - hooked32).abs().max().item() <= 2 * err_hooked
