"""Circuit specs: valid studies load; invalid combinations fail at validate time (known shapes) or at attach
time (any model) with messages that say what is wrong; the composition grid helper."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from conftest import make_tiny_model
from pydantic import TypeAdapter, ValidationError

from mechsteer.errors import CompileError, SpecError
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.kinds.combine import compose_pairs
from mechsteer.spec.loader import load_study
from mechsteer.spec.study import InterventionSpec
from mechsteer.vectors.vector_set import VectorSet

_IV = TypeAdapter(InterventionSpec)

HEADER = """\
name: circuit
models:
  qwen: {{id: Qwen/Qwen2.5-Math-7B}}
  {extra_model}
vectors:
  pen: {{kind: random, norm: 1.0}}
readouts:
  gen: {{kind: generate, prompts: ["1+1?"]}}
conditions:
"""


def _study(tmp_path, conditions: str, extra_model: str = "") -> str:
    p = tmp_path / "study.yaml"
    p.write_text(HEADER.format(extra_model=extra_model) + textwrap.indent(textwrap.dedent(conditions), "  "))
    return str(p)


def test_valid_circuit_study_loads(tmp_path):
    (tmp_path / "lora1.safetensors").write_bytes(b"")  # validate checks that referenced files exist
    ls = load_study(
        _study(
            tmp_path,
            """\
        steer_pen:  [{kind: add, layer: penultimate, vector: pen}]
        skip_attn:  [{kind: skip_attn, layer: last, vector: pen}]
        skip_layer: [{kind: skip_layer, layer: last, vector: pen}]
        v_only:     [{kind: qkv, layer: last, vector: pen, proj: v, heads: all, mode: steer_only}]
        q_head_5:   [{kind: qkv, layer: last, vector: pen, proj: q, heads: [5], mode: steer_only}]
        kv_head_3:  [{kind: qkv, layer: last, vector: pen, proj: [k, v], heads: [3]}]
        skip_head:  [{kind: head, layer: last, vector: pen, heads: [27], patch_path: mlp}]
        steer_grp:  [{kind: head, layer: last, vector: pen, groups: [3], heads: [0], mode: steer_only}]
        place:      [{kind: add_at_place, vector: pen, layer: 24, place: self_attn}]
        pair:       [{kind: compose, parts: [{vector: pen, layer: 3}, {vector: pen, layer: 17}]}]
        transfer:   [{kind: transfer, vector: pen, donor: Qwen/Qwen2.5-7B}]
        prefix:     [{kind: prefix_token, token: To}]
        lora:       [{kind: lora1, path: lora1.safetensors, layer: 27}]
    """,
        )
    )
    kinds = {c: [iv.kind for iv in ivs] for c, ivs in ls.spec.conditions.items()}
    assert kinds["v_only"] == ["qkv"] and ls.spec.conditions["v_only"][0].proj == ["v"]


def test_missing_lora1_file_is_reported_at_validate(tmp_path):
    with pytest.raises(SpecError, match=r"conditions.lora\[0\].path: file not found"):
        load_study(
            _study(
                tmp_path,
                """\
        lora:       [{kind: lora1, path: nope.safetensors, layer: 27}]
    """,
            )
        )


def test_validate_reports_every_shape_problem(tmp_path):
    local = tmp_path / "gpt2"
    local.mkdir()
    (local / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["GPT2LMHeadModel"],
                "num_hidden_layers": 28,
                "hidden_size": 3584,
                "num_attention_heads": 28,
            }
        )
    )
    with pytest.raises(SpecError) as e:
        load_study(
            _study(
                tmp_path,
                """\
            q_oob:   [{kind: qkv, vector: pen, proj: q, heads: [28]}]
            kv_as_q: [{kind: qkv, vector: pen, proj: v, heads: [0, 5]}]
            grp_oob: [{kind: head, vector: pen, groups: [4]}]
            block0:  [{kind: skip_attn, vector: pen, layer: 0}]
            far:     [{kind: skip_layer, vector: pen, layer: 28}]
            wide:    [{kind: transfer, vector: pen, donor: Qwen/Qwen2.5-Math-1.5B}]
            deep:    [{kind: transfer, vector: pen, donor: Qwen/Qwen2.5-14B}]
            lora:    [{kind: lora1, path: x.safetensors}]
        """,
                extra_model="gpt2: {id: gpt2}",
            )
        )
    msg = str(e.value)
    assert "conditions.q_oob[0].heads[0]: query head index 28 is out of range: the model has 28 query heads" in msg
    assert (
        "conditions.kv_as_q[0].heads[1]: KV head index 5 is out of range: the model has 4 KV heads (0..3); "
        "5 would be a query-head index"
    ) in msg
    assert "conditions.grp_oob[0].groups[0]: KV group index 4 is out of range" in msg
    assert "conditions.block0[0].layer: block 0 cannot be spliced" in msg
    assert "conditions.far[0].layer: layer 28 is out of range" in msg
    assert (
        "cannot transfer vectors from Qwen/Qwen2.5-Math-1.5B [28 layers x d_model 1536] to the recipient "
        "[28 layers x d_model 3584]: the widths differ"
    ) in msg
    assert "Qwen/Qwen2.5-14B [48 layers x d_model 5120]" in msg
    assert "lora1 needs mlp.down_proj, which GPT2LMHeadModel does not have (model 'gpt2'" in msg
    assert "lora1 needs mlp.down_proj, which GPT2LMHeadModel does not have (model 'qwen'" not in msg


@pytest.mark.parametrize(
    "fields, pattern",
    [
        (dict(kind="qkv", vector="p", proj=["q", "k"], heads=[1]), "ambiguous when proj mixes q"),
        (dict(kind="qkv", vector="p", proj=["v", "v"]), "same projection twice"),
        (dict(kind="qkv", vector="p", proj="o"), "proj"),
        (dict(kind="qkv", vector="p", proj="q", heads=[1, 1]), "same index twice"),
        (dict(kind="qkv", vector="p", proj="q", heads=[-1]), "greater than or equal to 0"),
        (dict(kind="head", vector="p"), "give `heads`"),
        (dict(kind="skip_attn", vector="p", layer="all"), "exactly one block"),
        (dict(kind="skip_layer", vector="p", layer=[26, 27]), "exactly one block"),
        (dict(kind="head", vector="p", heads=[1], patch_path="attn"), "patch_path"),
        (dict(kind="compose", parts=[{"vector": "a", "layer": 1}, {"vector": "a", "layer": 1}]), "both add layer"),
        (dict(kind="compose", parts=[{"vector": "a", "layer": "all"}]), "one single-layer vector"),
        (dict(kind="add_at_place", vector="p", place="o_proj"), "place"),
    ],
)
def test_schema_rejects(fields, pattern):
    with pytest.raises(ValidationError, match=pattern):
        _IV.validate_python(fields)


def _attach(model, fields, vectors):
    with steering(model, adapter_for(model), [_IV.validate_python(f) for f in fields], vectors):
        pass


def test_attach_time_errors_on_unknown_shapes():
    """A model validate could not know (tiny: 4 query heads, 2 KV heads) is checked when the condition
    is applied, with the same messages."""
    model = make_tiny_model("qwen2")
    vectors = {"pen": VectorSet(torch.randn(4, 32), [2])}
    cases = [
        (
            [dict(kind="qkv", vector="pen", proj="k", heads=[3])],
            "KV head index 3 is out of range: the model has 2 KV heads.*3 would be a query-head index",
        ),
        ([dict(kind="qkv", vector="pen", proj="q", heads=[4])], "query head index 4 is out of range"),
        ([dict(kind="head", vector="pen", groups=[2])], "KV group index 2 is out of range"),
        ([dict(kind="skip_attn", vector="pen", layer=0)], "block 0 cannot be spliced"),
        ([dict(kind="skip_attn", vector="pen", layer=2)], "row 1 .* which has no such row"),
        (
            [dict(kind="skip_attn", vector="pen"), dict(kind="head", vector="pen", heads=[0])],
            "block 3 is already spliced",
        ),
    ]
    for fields, pattern in cases:
        with pytest.raises(CompileError, match=pattern):
            _attach(model, fields, vectors)


def test_compose_pairs_grid():
    grid = compose_pairs(range(2, 5))
    assert list(grid) == ["pair_2_2", "pair_2_3", "pair_2_4", "pair_3_3", "pair_3_4", "pair_4_4"]
    assert grid["pair_2_4"] == [
        {"kind": "compose", "parts": [{"vector": "single_2", "layer": 2}, {"vector": "single_4", "layer": 4}]}
    ]
    assert grid["pair_3_3"] == [{"kind": "compose", "parts": [{"vector": "single_3", "layer": 3}]}]
    off = compose_pairs([1, 0], vector="stack", diagonal=False, name="c{i}-{j}")
    assert off == {
        "c0-1": [{"kind": "compose", "parts": [{"vector": "stack", "layer": 0}, {"vector": "stack", "layer": 1}]}]
    }
    for ivs in grid.values():  # every generated condition is a valid spec
        [_IV.validate_python(x) for x in ivs]
