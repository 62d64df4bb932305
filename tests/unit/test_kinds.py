"""Every registered kind has a working implementation and answers what the engine asks of it: the
implementation target of each intervention, vector source and measurement kind imports and is callable, each
spec class subclasses its family's base and implements every abstract method (an incomplete one cannot even
register, and the error names the missing method), each kind runs on a tiny model, and each intervention's
`first_block` is where replay may start. (That CONTRIBUTING.md's recipe, followed literally, gives a kind that
needs no other edit is `tests/integration/test_kind_recipe.py`.)

A new kind registered without an implementation fails `test_every_implementation_resolves`; a new kind
without an entry in the factories below fails `test_every_kind_is_exercised` (add one: it is the smallest
spec that must work)."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import save_file
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from tolerance import tolerance

from mechsteer.errors import NotReplayable, VectorError
from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import (
    INTERVENTION_KINDS,
    MEASUREMENT_KINDS,
    READOUT_KINDS,
    VECTOR_KINDS,
    intervention_kind,
    readout_kind,
    vector_kind,
)
from mechsteer.spec.kinds.interventions import InterventionBase
from mechsteer.spec.kinds.measurements import MeasurementBase
from mechsteer.spec.kinds.vectors import VectorSourceBase
from mechsteer.spec.study import StudySpec  # noqa: F401 - loads every kind module
from mechsteer.vectors.vector_set import VectorSet, save_vector_set

BASES = {
    INTERVENTION_KINDS.what: InterventionBase,
    VECTOR_KINDS.what: VectorSourceBase,
    READOUT_KINDS.what: MeasurementBase,
    MEASUREMENT_KINDS.what: MeasurementBase,
}

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
    "per_model": lambda p: {"models": {"tiny": "base", "other": "missing_elsewhere"}},
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


@pytest.mark.parametrize(
    "registry", [INTERVENTION_KINDS, VECTOR_KINDS, MEASUREMENT_KINDS, READOUT_KINDS], ids=lambda r: r.what
)
def test_every_kind_answers_what_the_engine_asks(registry):
    """Each spec class subclasses its family's base (whose abstract methods are the engine's questions) and
    leaves none unanswered."""
    assert registry.base is BASES[registry.what]
    for name in registry.names():
        spec = registry.spec(name)
        assert issubclass(spec, registry.base), f"{registry.what} {name!r}: {spec.__name__} is not a {registry.base}"
        assert not spec.__abstractmethods__, f"{registry.what} {name!r} does not implement {spec.__abstractmethods__}"


@pytest.mark.parametrize(
    "base,register,registry,missing",
    [
        (
            InterventionBase,
            intervention_kind,
            INTERVENTION_KINDS,
            "first_block, layer_refs, site, vector_refs, vllm_unsupported",
        ),
        (VectorSourceBase, vector_kind, VECTOR_KINDS, "content_key, depends_on"),
        (MeasurementBase, readout_kind, READOUT_KINDS, "seeds_to_run"),
    ],
)
def test_a_kind_without_an_answer_cannot_register_and_is_told_which(base, register, registry, missing):
    before = registry.names(), MEASUREMENT_KINDS.names()
    with pytest.raises(TypeError, match=rf"'half_done': HalfDone does not implement {missing} "):

        @register("half_done", impl="mechsteer.nowhere:attach")
        class HalfDone(base):
            kind: Literal["half_done"] = "half_done"

    with pytest.raises(TypeError, match=rf"Plain must subclass {base.__module__}.{base.__name__}"):

        @register("plain", impl="mechsteer.nowhere:attach")
        class Plain(StrictModel):  # a spec class of no family
            kind: Literal["plain"] = "plain"

    assert (registry.names(), MEASUREMENT_KINDS.names()) == before  # neither was registered


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


@pytest.mark.parametrize("kind", sorted(INTERVENTIONS))
def test_replay_from_the_kinds_first_block_equals_a_full_forward(kind, tmp_path):
    """Each intervention's own answer to "which block do you change first": replaying the blocks from there
    on the recorded base pass gives the full forward's logits under the condition (an answer one block too
    late would miss the change); a kind that cannot be replayed says why (NotReplayable)."""
    from pydantic import TypeAdapter

    from mechsteer.interventions import steering
    from mechsteer.models.adapters import adapter_for
    from mechsteer.replay import earliest_block, record, replay
    from mechsteer.spec.study import InterventionSpec

    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    ad = adapter_for(model)
    vs = VectorSet(torch.randn(N, D, generator=torch.Generator().manual_seed(0)) * 4, list(range(N)))
    spec = TypeAdapter(InterventionSpec).validate_python({"kind": kind, **INTERVENTIONS[kind](_lora_file(tmp_path))})
    ids = torch.randint(3, VOCAB_SIZE, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    try:
        first = earliest_block([spec], N, {"v": vs})
    except NotReplayable as e:
        assert kind == "prefix_token" and "prompt" in str(e)
        return
    assert 0 <= first < N
    base, states = record(model, ad, [first], input_ids=ids, attention_mask=mask)
    with torch.no_grad(), steering(model, ad, [spec], {"v": vs}, tokenizer=make_tiny_tokenizer()):
        full = model(input_ids=ids, attention_mask=mask).logits
        rep = replay(model, ad, states[first])
    assert (full - base).abs().max() > 1e-3, f"{kind} changed nothing"
    tol = 64 * torch.finfo(full.dtype).eps * float(full.abs().max())  # the same ops on the same inputs
    assert (rep - full).abs().max() <= tol


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
    vs = BuildContext(n_layers=N, d_model=D, specs=specs, model_name="tiny").get("x")
    assert (vs.n_layers, vs.d_model) == (N, D) and vs.layers
    if kind == "per_model":  # the set named for this context's model, built in the same context
        assert torch.equal(vs.vectors, base.vectors) and vs.layers == [1, 3]
        with pytest.raises(VectorError, match="no entry for model 'third'"):
            BuildContext(n_layers=N, d_model=D, specs=specs, model_name="third").get("x")
    if kind == "scaled":
        torch.testing.assert_close(vs.vectors, base.vectors * -2.0)
    if kind == "zeros":
        assert not vs.vectors.any()
    if kind == "random":
        assert all(abs(n - 2.0) <= tolerance(torch.float32, 2.0, D) for n in vs.norms().values())  # float32 rescale
