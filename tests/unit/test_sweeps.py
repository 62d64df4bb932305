"""Declarative sweeps: one template expands per model (depth, query heads, KV heads), with predictable names,
`where` constraints, and located errors before any model loads."""

from __future__ import annotations

import textwrap

import pytest

from mechsteer.engine.plan import compile_study
from mechsteer.errors import SpecError
from mechsteer.spec.loader import load_study

STUDY = """
name: sweeps
models:
  qwen: {id: Qwen/Qwen2.5-Math-7B}
  llama: {id: meta-llama/Llama-3.1-8B-Instruct}
vectors:
  v: {kind: random, norm: 1.0}
conditions:
  base: []
  single_{layer}:
    sweep: {layer: layers}
    interventions: [{kind: add, vector: v, layer: "{layer}"}]
  kv_{proj}_{head}:
    sweep: {proj: [k, v], head: kv_heads}
    interventions: [{kind: qkv, vector: v, layer: last, proj: "{proj}", heads: ["{head}"], mode: steer_only}]
  pair_{i}_{j}:
    sweep: {i: [0, 1, 2], j: [0, 1, 2]}
    where: ["i < j"]
    interventions: [{kind: compose, parts: [{vector: v, layer: "{i}"}, {vector: v, layer: "{j}"}]}]
readouts:
  r: {kind: first_token, prompts: [a]}
"""


def _plan(tmp_path, text=STUDY):
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "s.yaml"
    f.write_text(textwrap.dedent(text))
    return compile_study(load_study(f), output_root=tmp_path / "out")


def test_one_file_expands_per_model_depth_and_heads(tmp_path):
    plan = _plan(tmp_path)
    by_model = {m: [c.condition for c in plan.cells if c.model == m] for m in plan.models}
    assert sum(c.startswith("single_") for c in by_model["qwen"]) == 28
    assert sum(c.startswith("single_") for c in by_model["llama"]) == 32
    assert sorted(c for c in by_model["qwen"] if c.startswith("kv_")) == sorted(
        f"kv_{p}_{h}" for p in "kv" for h in range(4)
    )
    assert sum(c.startswith("kv_") for c in by_model["llama"]) == 2 * 8
    assert [c for c in by_model["qwen"] if c.startswith("pair_")] == ["pair_0_1", "pair_0_2", "pair_1_2"]
    # a whole-string placeholder becomes the value (an int layer), then the compiler binds it
    single_27 = next(c for c in plan.cells if c.model == "qwen" and c.condition == "single_27")
    assert single_27.interventions[0].layer == 27
    kv = next(c for c in plan.cells if c.model == "llama" and c.condition == "kv_v_7")
    assert kv.interventions[0].proj == ["v"] and kv.interventions[0].heads == [7] and kv.interventions[0].layer == 31
    # conditions keep the study order, expansions in place; the baseline is shared
    assert plan.conditions[:3] == ("base", "single_0", "single_1") and plan.baseline == "base"


def test_expanded_sweep_equals_the_hand_written_conditions(tmp_path):
    swept = _plan(tmp_path / "a")
    listed = (
        STUDY.split("conditions:")[0]
        + "conditions:\n  base: []\n"
        + "".join(f"  single_{i}: [{{kind: add, vector: v, layer: {i}}}]\n" for i in range(28))
        + "readouts:\n  r: {kind: first_token, prompts: [a]}\n"
    )
    listed = listed.replace("  llama: {id: meta-llama/Llama-3.1-8B-Instruct}\n", "")
    hand = _plan(tmp_path / "b", listed)
    swept_q = {
        c.condition: c.hash for c in swept.cells if c.model == "qwen" and not c.condition.startswith(("kv", "pair"))
    }
    assert swept_q == {c.condition: c.hash for c in hand.cells}


@pytest.mark.parametrize(
    "edit, expected",
    [
        (('vector: v, layer: "{layer}"', 'vector: nope, layer: "{layer}"'), "unknown vector set 'nope'"),
        (("single_{layer}:", "single:"), "must contain every sweep variable as a placeholder (missing: {layer})"),
        (("{i: [0, 1, 2], j: [0, 1, 2]}", "{i: [0, 1], j: [1, 40]}"), "pair_0_40: layer 40 is out of range"),
        (('heads: ["{head}"]', 'heads: ["{head}", 9]'), "KV head index 9 is out of range"),
        (('where: ["i < j"]', 'where: ["i < k"]'), "'k', which is not a sweep variable"),
    ],
)
def test_sweep_problems_are_located_before_any_model_loads(tmp_path, edit, expected):
    f = tmp_path / "s.yaml"
    f.write_text(textwrap.dedent(STUDY).replace(*edit))
    with pytest.raises(SpecError) as e:
        load_study(f)
    text = str(e.value)
    assert expected in text and f"{f}:" in text, text


def test_a_profile_widens_a_sweep_and_a_transfer_donor_keeps_its_own_shape(tmp_path):
    """A mini run's explicit layer list becomes every block in a `paper` profile (profiles may carry sweeps), and
    a bundled set read only by `transfer` is not held to the recipient's shape."""
    text = """
    name: widen
    models: {m: {id: smollm2-135m}}
    vectors:
      v: {kind: random, norm: 1.0}
      donor: {kind: bundled, name: smollm2-135m/all_layers}
    conditions:
      base: []
      single_{layer}:
        sweep: {layer: [0, 3]}
        interventions: [{kind: add, vector: v, layer: "{layer}"}]
      from_donor: [{kind: transfer, vector: donor, donor: smollm2-135m}]
    readouts:
      r: {kind: first_token, prompts: [a]}
    profiles:
      wide:
        models: {m: {id: Qwen/Qwen2.5-Math-7B}}
        conditions:
          single_{layer}: {sweep: {layer: layers}}
    """
    mini = [c.condition for c in _plan(tmp_path / "a", text).cells]
    assert [c for c in mini if c.startswith("single_")] == ["single_0", "single_3"]
    f = tmp_path / "b" / "s.yaml"
    f.parent.mkdir()
    f.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as e:  # the donor is checked by transfer (widths differ), not as an `add` set
        compile_study(load_study(f, profile="wide"), output_root=tmp_path / "out")
    msgs = [p.format() for p in e.value.problems]
    assert any("cannot transfer vectors from smollm2-135m" in m for m in msgs), msgs
    assert not any("vectors.donor.name" in m for m in msgs), msgs
    widened = text.replace("      from_donor: [{kind: transfer, vector: donor, donor: smollm2-135m}]\n", "")
    wide = [c.condition for c in _plan(tmp_path / "c", widened.replace("profiles:", "profiles:")).cells]
    assert wide == mini[:1] + [c for c in mini if c.startswith("single_")]  # default run unchanged
    g = tmp_path / "d" / "s.yaml"
    g.parent.mkdir()
    g.write_text(textwrap.dedent(widened))
    plan = compile_study(load_study(g, profile="wide"), output_root=tmp_path / "out2")
    assert [c.condition for c in plan.cells if c.condition.startswith("single_")] == [f"single_{k}" for k in range(28)]
