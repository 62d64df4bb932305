"""Spec round-trip, JSON-Schema drift, layer-reference resolution, profile merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bundled_studies import bundled_study

from mechsteer.spec.layers import DepthRef, LayerResolutionError, resolve_layers
from mechsteer.spec.loader import deep_merge, load_study
from mechsteer.spec.study import StudySpec, json_schema

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted(p for p in (REPO / "studies").glob("*.yaml") if not p.name.startswith("train_"))
"""Study files (training specs, studies/train_*.yaml, have their own schema and tests)."""


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_bundled_studies_validate_and_round_trip(path):
    ls = bundled_study(path)
    for p in ls.spec.profiles:
        bundled_study(path, p)
    dumped = ls.spec.model_dump(mode="json")
    again = StudySpec.model_validate(json.loads(json.dumps(dumped)))
    assert again == ls.spec
    assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/")


def test_committed_schema_matches_models():
    committed = json.loads((REPO / "schemas" / "study.schema.json").read_text())
    assert committed == json_schema(), "schemas/study.schema.json is stale: run `mechsteer schema`"


def test_schema_lists_every_registered_kind():
    text = json.dumps(json_schema())
    from mechsteer.spec.kinds import INTERVENTION_KINDS, READOUT_KINDS, VECTOR_KINDS

    for reg in (INTERVENTION_KINDS, READOUT_KINDS, VECTOR_KINDS):
        for name in reg.names():
            assert f'"const": "{name}"' in text, name


@pytest.mark.parametrize(
    "sel,n,expected",
    [
        (0, 30, [0]),
        (29, 30, [29]),
        (-1, 30, [29]),
        (-30, 30, [0]),
        ("last", 30, [29]),
        ("penultimate", 30, [28]),
        ("first", 28, [0]),
        ("all", 4, [0, 1, 2, 3]),
        (DepthRef(depth=0.5), 29, [14]),
        ({"depth": 1.0}, 28, [27]),
        ({"depth": 0.0}, 28, [0]),
        ([0, "last", -2], 10, [0, 8, 9]),
    ],
)
def test_layer_resolution(sel, n, expected):
    assert resolve_layers(sel, n) == expected


@pytest.mark.parametrize(
    "sel,n,msg",
    [
        (30, 30, "out of range"),
        (-31, 30, "out of range"),
        (["last", -1], 30, "same layer twice"),
        ("penultimate", 1, "at least 2"),
    ],
)
def test_layer_resolution_errors(sel, n, msg):
    with pytest.raises(LayerResolutionError, match=msg):
        resolve_layers(sel, n)


def test_relative_depth_is_the_same_place_across_depths():
    # one study, two families: depth 0.5 lands mid-stack in both
    assert resolve_layers({"depth": 0.5}, 28) == [14]
    assert resolve_layers({"depth": 0.5}, 32) == [16]


def test_deep_merge_replaces_on_kind_change_and_merges_otherwise():
    base = {"models": {"m": {"id": "a", "dtype": "bfloat16"}}, "vectors": {"v": {"kind": "file", "path": "x"}}}
    patch = {"models": {"m": {"id": "b"}}, "vectors": {"v": {"kind": "random", "norm": 1.0}}}
    out = deep_merge(base, patch)
    assert out["models"]["m"] == {"id": "b", "dtype": "bfloat16"}
    assert out["vectors"]["v"] == {"kind": "random", "norm": 1.0}
    assert base["models"]["m"]["id"] == "a"  # inputs untouched


def _write(tmp_path, doc) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


MIN = {
    "name": "t",
    "models": {"m": {"id": "Qwen/Qwen2.5-Math-7B"}},
    "vectors": {"v": {"kind": "random", "norm": 1.0}},
    "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v", "layer": 26}]},
    "readouts": {"r": {"kind": "first_token", "prompts": ["hi"]}},
    "profiles": {"mini": {"models": {"m": {"id": "smollm2-135m", "dtype": "float32"}}}},
}


def test_profile_merge_changes_model_and_keeps_the_rest(tmp_path):
    p = _write(tmp_path, MIN)
    base = load_study(p)
    mini = load_study(p, "mini")
    assert base.spec.models["m"].id == "Qwen/Qwen2.5-Math-7B"
    assert mini.spec.models["m"].id == "smollm2-135m" and mini.spec.models["m"].dtype == "float32"
    assert mini.spec.conditions == base.spec.conditions


def test_layer_range_is_checked_against_each_profile(tmp_path):
    doc = json.loads(json.dumps(MIN))
    doc["conditions"]["steer"][0]["layer"] = 29  # fits smollm2 (30 layers), not Qwen-7B (28)
    p = _write(tmp_path, doc)
    load_study(p, "mini")
    from mechsteer.errors import SpecError

    with pytest.raises(SpecError, match="out of range for a model with 28 layers"):
        load_study(p)
