"""`per_model` vector sets: one name, each model's own set. Checked without loading a model: on each model the
compiled cells are keyed exactly as in a study that names that model's set directly (so the other model's
vectors never enter them), sets built from the per-model set follow it per model, `validate` checks each
model's set against that model's shape only, and a missing or unknown model entry is one located error."""

from __future__ import annotations

import pytest
import yaml

from mechsteer.engine.plan import compile_study
from mechsteer.errors import SpecError
from mechsteer.spec.loader import load_study
from mechsteer.spec.model_sets import model_set, vectors_for_model

BOTH = {
    "name": "both",
    "models": {"smol": {"id": "smollm2-135m"}, "gemma": {"id": "gemma3-270m"}},
    "vectors": {
        "smol_vecs": {"kind": "bundled", "name": "smollm2-135m/all_layers"},
        "gemma_vecs": {"kind": "random", "seed": 3, "norm": 2.0},
        "trained": {"kind": "per_model", "models": {"smol": "smol_vecs", "gemma": "gemma_vecs"}},
        "control": {"kind": "random", "seed": 1, "norm_like": "trained"},
    },
    "conditions": {
        "base": [],
        "steered": [{"kind": "add", "vector": "trained"}],
        "random_control": [{"kind": "add", "vector": "control"}],
    },
    "evaluation": {"tasks": ["mini"], "protocol": "greedy", "limit": 4},
}


def _write(tmp_path, doc, name="s.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    return f


def _keys(plan, model: str, condition: str) -> dict:
    (cell,) = [c for c in plan.cells if c.model == model and c.condition == condition]
    return cell.key


def test_each_model_is_keyed_by_its_own_set_only(tmp_path):
    plan = compile_study(load_study(_write(tmp_path, BOTH)), output_root=tmp_path / "out")
    # the same study with one model, naming that model's set directly, gives the same cell keys
    for model, own in (("smol", "smol_vecs"), ("gemma", "gemma_vecs")):
        alone = {
            **BOTH,
            "models": {model: BOTH["models"][model]},
            "vectors": {
                "trained": BOTH["vectors"][own],
                "control": BOTH["vectors"]["control"],
            },
        }
        single = compile_study(load_study(_write(tmp_path, alone, f"{model}.yaml")), output_root=tmp_path / "o2")
        for cond in ("steered", "random_control"):
            assert _keys(plan, model, cond)["vectors"] == _keys(single, model, cond)["vectors"]
    smol, gemma = _keys(plan, "smol", "steered"), _keys(plan, "gemma", "steered")
    assert smol["vectors"]["trained"]["kind"] == "bundled" and gemma["vectors"]["trained"]["kind"] == "random"
    # the control `norm_like: trained` follows each model's own set
    assert _keys(plan, "gemma", "random_control")["vectors"]["control"]["norm_like"]["kind"] == "random"
    # editing gemma's set changes gemma's cells, never smol's
    edited = {**BOTH, "vectors": {**BOTH["vectors"], "gemma_vecs": {"kind": "random", "seed": 4, "norm": 2.0}}}
    again = compile_study(load_study(_write(tmp_path, edited, "e.yaml")), output_root=tmp_path / "o3")
    assert _keys(again, "smol", "steered") == _keys(plan, "smol", "steered")
    assert _keys(again, "gemma", "steered") != _keys(plan, "gemma", "steered")


def test_resolution_follows_chains_and_stops_at_a_missing_entry():
    from pydantic import TypeAdapter

    from mechsteer.spec.study import VectorSpec

    ta = TypeAdapter(VectorSpec)
    vectors = {
        "a": ta.validate_python({"kind": "zeros"}),
        "b": ta.validate_python({"kind": "random", "norm": 1.0}),
        "inner": ta.validate_python({"kind": "per_model", "models": {"m": "a", "n": "b"}}),
        "outer": ta.validate_python({"kind": "per_model", "models": {"m": "inner", "n": "inner"}}),
    }
    assert model_set(vectors, "outer", "m") == "a" and model_set(vectors, "outer", "n") == "b"
    assert model_set(vectors, "outer", "o") is None and model_set(vectors, "a", "o") == "a"
    resolved = vectors_for_model(vectors, "n")
    assert resolved["outer"] is vectors["b"] and resolved["a"] is vectors["a"]
    assert vectors_for_model(vectors, "o")["outer"] is vectors["outer"]  # left for its builder to refuse


def test_validate_checks_each_models_set_against_that_model_only(tmp_path):
    load_study(_write(tmp_path, BOTH))  # the bundled SmolLM2 set [30 x 576] is not checked against Gemma
    direct = {**BOTH, "conditions": {**BOTH["conditions"], "raw": [{"kind": "add", "vector": "smol_vecs"}]}}
    with pytest.raises(SpecError) as e:  # read directly by a condition, it is checked against every model
        load_study(_write(tmp_path, direct))
    assert "vectors.smol_vecs.name" in str(e.value) and "model 'gemma'" in str(e.value)
    assert "per_model" in str(e.value)  # the hint names the fix
    swapped = {
        **BOTH,
        "vectors": {
            **BOTH["vectors"],
            "trained": {"kind": "per_model", "models": {"gemma": "smol_vecs", "smol": "gemma_vecs"}},
        },
    }
    with pytest.raises(SpecError, match=r"vector set is \[30 layers x d_model 576\] but model 'gemma'"):
        load_study(_write(tmp_path, swapped))


@pytest.mark.parametrize(
    "models,message",
    [
        ({"smol": "smol_vecs"}, r"per-model vector set 'trained' names no set for model 'gemma' \(gemma3-270m\)"),
        ({"smol": "smol_vecs", "gemma": "gemma_vecs", "llama": "x"}, r"no model named 'llama' in this study"),
        ({"smol": "smol_vecs", "gemma": "nope"}, r"vectors\.trained\.models\.gemma: unknown vector set 'nope'"),
    ],
)
def test_model_entries_are_located_errors(tmp_path, models, message):
    doc = {**BOTH, "vectors": {**BOTH["vectors"], "trained": {"kind": "per_model", "models": models}}}
    f = _write(tmp_path, doc)
    with pytest.raises(SpecError, match=message) as e:
        load_study(f)
    assert str(e.value).startswith(f"{f}:")  # file and line
