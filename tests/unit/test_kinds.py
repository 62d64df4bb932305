"""Every registered kind has a working implementation: the implementation target of each intervention, vector
source and measurement kind imports and is callable, and each kind runs on a tiny model.

A new kind registered without an implementation fails `test_every_implementation_resolves`; a new kind
without an entry in the factories below fails `test_every_kind_is_exercised` (add one: it is the smallest
spec that must work)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import save_file
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from tolerance import tolerance

from mechsteer.spec.kinds import INTERVENTION_KINDS, MEASUREMENT_KINDS, READOUT_KINDS, VECTOR_KINDS
from mechsteer.spec.study import StudySpec  # noqa: F401 - loads every kind module
from mechsteer.vectors.vector_set import VectorSet, save_vector_set

N, D, D_FF = 4, 32, 64

INTERVENTIONS = {
    "add": lambda p: {"vector": "v", "layer": 2},
    "add_at_place": lambda p: {"vector": "v", "layer": 1, "place": "self_attn"},
    "compose": lambda p: {"parts": [{"vector": "v", "layer": 1}, {"vector": "v", "layer": 3}]},
    "head": lambda p: {"vector": "v", "layer": 3, "heads": [0, 2]},
    "lora1": lambda p: {"path": str(p)},
    "prefix_token": lambda p: {"token": "T"},
    "qkv": lambda p: {"vector": "v", "layer": 3, "proj": ["v"], "heads": "all"},
    "skip_attn": lambda p: {"vector": "v", "layer": 3},
    "skip_layer": lambda p: {"vector": "v", "layer": 3},
    "transfer": lambda p: {"vector": "v"},
}

VECTORS = {
    "bundled": None,  # needs the embedded model's shape: tests/integration/test_train_bundled.py
    "file": lambda p: {"path": str(p / "v.safetensors")},
    "gguf_control": None,  # tests/integration/test_train_vector_sources.py (GGUF round trip)
    "lm_eval_steered": None,  # tests/integration/test_train_vector_sources.py (.pt round trip)
    "mean_diff": None,  # tests/integration/test_train_vector_sources.py (hand computation on a tiny model)
    "random": lambda p: {"seed": 0, "norm": 2.0},
    "scaled": lambda p: {"of": "base", "factor": -2.0},
    "trained": None,  # tests/unit/test_trained_vectors.py (reads a training run's output)
    "zeros": lambda p: {},
}

MEASUREMENTS = {
    "eval": "tests/integration/test_eval_lm_eval.py (lm-eval end to end on a tiny model)",
    "first_token": "tests/integration/test_engine.py",
    "diffsae": "tests/integration/test_diffsae_readout.py",
    "generate": "tests/integration/test_engine.py",
    "logit_lens": "tests/integration/test_readouts_study.py (top tokens and u_l vs own forwards)",
    "non_english": "tests/integration/test_readouts_study.py (script counts of the top-k)",
    "persistence": "tests/integration/test_readouts_study.py (DV/DD/LM vs own hooks)",
    "token_shift": "tests/integration/test_readouts_study.py (KL, dp vs full forwards; 0 against itself)",
    "tokenwise": "tests/integration/test_readouts_study.py (alpha_t vs a hand-written LoRA)",
    "vector_stats": "tests/integration/test_readouts_study.py (stable rank, norms, alignment)",
}


@pytest.mark.parametrize(
    "registry", [INTERVENTION_KINDS, VECTOR_KINDS, MEASUREMENT_KINDS, READOUT_KINDS], ids=lambda r: r.what
)
def test_every_implementation_resolves(registry):
    for name in registry.names():
        assert callable(registry.impl(name)), f"{registry.what} {name!r}: implementation is not callable"
        if registry.kind(name).report:
            assert callable(registry.report(name))


def test_every_kind_is_exercised():
    assert sorted(INTERVENTIONS) == INTERVENTION_KINDS.names()
    assert sorted(VECTORS) == VECTOR_KINDS.names()
    assert sorted(MEASUREMENTS) == MEASUREMENT_KINDS.names()


def _lora_file(tmp_path):
    g = torch.Generator().manual_seed(1)
    path = tmp_path / "lora.safetensors"
    save_file(
        {
            "A": torch.randn(N, D_FF, generator=g),
            "B": torch.randn(N, D, generator=g) * 3,
            "layers": torch.tensor([1, 2]),
        },
        str(path),
    )
    return path


@pytest.mark.parametrize("kind", sorted(INTERVENTIONS))
def test_intervention_kind_changes_the_model(kind, tmp_path):
    """Each kind, applied through the registry, changes the next-token logits (prefix_token changes the
    prompt instead) and leaves no hook behind (the conftest guard)."""
    from pydantic import TypeAdapter

    from mechsteer.interventions import steering
    from mechsteer.models.adapters import adapter_for
    from mechsteer.spec.study import InterventionSpec

    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    tok = make_tiny_tokenizer()
    g = torch.Generator().manual_seed(0)
    vs = VectorSet(torch.randn(N, D, generator=g) * 4, list(range(N)))
    spec = TypeAdapter(InterventionSpec).validate_python({"kind": kind, **INTERVENTIONS[kind](_lora_file(tmp_path))})
    ids = tok("hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with steering(model, adapter_for(model), [spec], {"v": vs}, tokenizer=tok) as ctx:
            steered = model(input_ids=ids).logits
    if kind == "prefix_token":
        assert ctx.prompt_suffix == "T"
        torch.testing.assert_close(steered, base, atol=0, rtol=0)
    else:
        assert (steered - base).abs().max() > 1e-3, f"{kind} changed nothing"


@pytest.mark.parametrize("kind", sorted(k for k, f in VECTORS.items() if f is not None))
def test_vector_kind_builds_a_fitting_set(kind, tmp_path):
    from pydantic import TypeAdapter

    from mechsteer.engine.vectors import BuildContext
    from mechsteer.spec.study import VectorSpec

    g = torch.Generator().manual_seed(0)
    base = VectorSet(torch.randn(N, D, generator=g), [1, 3])
    save_vector_set(base, tmp_path / "v.safetensors")
    adapter = TypeAdapter(VectorSpec)
    specs = {
        "base": adapter.validate_python({"kind": "file", "path": str(tmp_path / "v.safetensors")}),
        "x": adapter.validate_python({"kind": kind, **VECTORS[kind](tmp_path)}),
    }
    vs = BuildContext(n_layers=N, d_model=D, specs=specs).get("x")
    assert (vs.n_layers, vs.d_model) == (N, D) and vs.layers
    if kind == "scaled":
        torch.testing.assert_close(vs.vectors, base.vectors * -2.0)
    if kind == "zeros":
        assert not vs.vectors.any()
    if kind == "random":
        assert all(abs(n - 2.0) <= tolerance(torch.float32, 2.0, D) for n in vs.norms().values())  # float32 rescale
