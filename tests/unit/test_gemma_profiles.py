"""The `gemma` profiles of the bundled studies, without loading a model: each runs the embedded Gemma 3 270M with
the newline stop and its own all-layer vectors, sweeps the blocks at the default run's relative depths (so
`mechsteer diff` of the two runs pairs them), expands the circuit sweeps over Gemma's 4 query heads and 1 KV
head, says in its description and deviations that rows of a jointly trained vector stand in for vectors
trained alone, and the quickstart's `families` profile compiles to exactly the cells of its default and
`gemma` runs (the same content hashes)."""

from __future__ import annotations

from pathlib import Path

import pytest

import mechsteer as ms
from mechsteer.comparison import relative_layer
from mechsteer.spec.loader import load_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"
GEMMA = ["quickstart", "single_layer", "last_layer", "penultimate", "logit_lens", "readouts_mini", "diffsae"]


def _plan(name: str, profile: str | None, tmp_path):
    return ms.load_study(STUDIES / f"{name}.yaml", profile).plan(output_dir=tmp_path)


@pytest.mark.parametrize("name", GEMMA)
def test_every_gemma_profile_runs_gemma_with_the_newline_stop_and_its_own_vectors(name, tmp_path):
    ls = load_study(STUDIES / f"{name}.yaml", "gemma")
    (model,) = ls.spec.models.values()
    assert model.id == "gemma3-270m" and model.stop == ["\n"]
    assert model.dtype == "float32"  # bf16 lm_head over 262,144 tokens is pathologically slow on CPUs
    bundled = {v.name for v in ls.spec.vectors.values() if v.kind == "bundled"}
    assert bundled == {"gemma3-270m/all_layers"}  # Gemma's own set, no SmolLM2 set left behind
    assert not [v for v in ls.spec.vectors.values() if v.kind == "trained"]  # runs from a fresh clone
    plan = _plan(name, "gemma", tmp_path)
    assert plan.cells and all(c.interventions is not None for c in plan.cells)


@pytest.mark.parametrize("name", ["single_layer", "last_layer", "penultimate", "logit_lens", "readouts_mini"])
def test_profiles_reading_joint_rows_say_so(name):
    ls = load_study(STUDIES / f"{name}.yaml", "gemma")
    text = ls.spec.profiles["gemma"].description
    assert "NOT the paper's object" in text or "joint" in text
    assert any("jointly trained" in d for d in ls.spec.deviations)


def test_single_layer_sweeps_the_same_relative_depths(tmp_path):
    smol = [
        int(c[len("single_") :]) for c in _plan("single_layer", None, tmp_path).conditions if c.startswith("single_")
    ]
    gemma = [
        int(c[len("single_") :]) for c in _plan("single_layer", "gemma", tmp_path).conditions if c.startswith("single_")
    ]
    assert gemma == sorted({relative_layer(k, 30, 18) for k in smol}) == [0, 2, 4, 5, 7, 9, 11, 12, 14, 16, 17]


def test_penultimate_expands_over_gemmas_heads(tmp_path):
    plan = _plan("penultimate", "gemma", tmp_path)
    assert [c for c in plan.conditions if c.startswith(("steer_head_", "v_only_kv"))] == [
        "v_only_kv0",
        "steer_head_0",
        "steer_head_1",
        "steer_head_2",
        "steer_head_3",
    ]
    skip = next(c for c in plan.cells if c.condition == "skip_attn")
    assert skip.interventions[0].layer == 17  # the last of 18 blocks, s = row 16 (the penultimate)
    assert plan.vectors["pen"].layers == "penultimate"


def test_the_families_profile_is_the_two_runs_in_one_folder(tmp_path):
    both = _plan("quickstart", "families", tmp_path)
    assert list(both.models) == ["smol", "gemma"] and both.output_dir.name == "quickstart-families"
    hashes = {(c.model, c.condition, c.measurement.id): c.hash for c in both.cells}
    for profile, model in ((None, "smol"), ("gemma", "gemma")):
        single = _plan("quickstart", profile, tmp_path)
        assert {(c.condition, c.measurement.id): c.hash for c in single.cells} == {
            (cond, meas): h for (m, cond, meas), h in hashes.items() if m == model
        }
