"""`control:` on a condition (a plain mapping or a sweep template) and `evaluation.control`: what the report's
effects compare each condition against besides the baseline. Validation names the field and the line; a
condition written as a mapping compiles to the same cells as the list form."""

from __future__ import annotations

import pytest
import yaml

from mechsteer.errors import SpecError
from mechsteer.spec.loader import load_study
from mechsteer.spec.models import ModelShape
from mechsteer.spec.study import condition_controls

SHAPE = ModelShape(n_layers=6, d_model=8, n_heads=2, n_kv_heads=1, architecture="llama")


def _doc(conditions: dict, **evaluation) -> dict:
    return {
        "name": "ctl",
        "models": {"m": {"id": "smollm2-135m"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 1.0}, "r": {"kind": "random", "seed": 1, "norm": 1.0}},
        "conditions": conditions,
        "evaluation": {"tasks": ["mini"], "limit": 4, **evaluation},
    }


def _load(tmp_path, doc: dict):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_study(f)


STEER = [{"kind": "add", "vector": "v"}]
RANDOM = [{"kind": "add", "vector": "r"}]


def test_mapping_form_with_control_and_sweep_template(tmp_path):
    ls = _load(
        tmp_path,
        _doc(
            {
                "base": [],
                "steer": {"interventions": STEER, "control": "rand"},
                "rand": RANDOM,
                "s_{layer}": {
                    "sweep": {"layer": [1, 3]},
                    "interventions": [{"kind": "add", "vector": "v", "layer": "{layer}"}],
                    "control": "r_{layer}",
                },
                "r_{layer}": {
                    "sweep": {"layer": [1, 3]},
                    "interventions": [{"kind": "add", "vector": "r", "layer": "{layer}"}],
                },
            }
        ),
    )
    assert condition_controls(ls.spec, SHAPE) == {"steer": "rand", "s_1": "r_1", "s_3": "r_3"}


def test_evaluation_control_is_the_default_and_a_condition_s_own_wins(tmp_path):
    ls = _load(
        tmp_path,
        _doc(
            {"base": [], "a": STEER, "b": {"interventions": STEER, "control": "base"}, "rand": RANDOM}, control="rand"
        ),
    )
    # every condition but the control itself; `b` names its own
    assert condition_controls(ls.spec, SHAPE) == {"base": "rand", "a": "rand", "b": "base"}


def test_mapping_form_compiles_to_the_same_cells_as_the_list(tmp_path):
    from mechsteer.engine.plan import compile_study

    listed = _load(tmp_path, _doc({"base": [], "steer": STEER, "rand": RANDOM}))
    (tmp_path / "m").mkdir()
    mapped = _load(
        tmp_path / "m", _doc({"base": [], "steer": {"interventions": STEER, "control": "rand"}, "rand": RANDOM})
    )
    a = compile_study(listed, output_root=tmp_path / "out")
    b = compile_study(mapped, output_root=tmp_path / "out")
    assert [(c.condition, c.hash) for c in a.cells] == [(c.condition, c.hash) for c in b.cells]


@pytest.mark.parametrize(
    "conditions, evaluation, field, message",
    [
        (
            {"base": [], "steer": {"interventions": STEER, "control": "nope"}},
            {},
            "conditions.steer.control",
            "no condition named 'nope'",
        ),
        (
            {"base": [], "steer": {"interventions": STEER, "control": "steer"}},
            {},
            "conditions.steer.control",
            "its own control",
        ),
        ({"base": [], "steer": STEER}, {"control": "nope"}, "evaluation.control", "no condition named 'nope'"),
        (
            {
                "base": [],
                "s_{layer}": {"sweep": {"layer": [1]}, "interventions": STEER, "control": "r_{lay}"},
                "r_{layer}": {"sweep": {"layer": [1]}, "interventions": RANDOM},
            },
            {},
            "conditions.s_{layer}.control",
            "uses lay, which the sweep does not define",
        ),
        (
            {
                "base": [],
                "s_{layer}": {"sweep": {"layer": [1, 3]}, "interventions": STEER, "control": "r_{layer}"},
                "r_{layer}": {"sweep": {"layer": [1]}, "interventions": RANDOM},
            },
            {},
            "conditions.s_{layer}.control",
            "condition 's_3' is compared against 'r_3', which is not a condition of model 'm'",
        ),
    ],
)
def test_a_control_that_names_no_condition_is_a_located_error(tmp_path, conditions, evaluation, field, message):
    with pytest.raises(SpecError) as e:
        _load(tmp_path, _doc(conditions, **evaluation))
    problems = [p for p in e.value.problems if p.field == field]
    assert len(problems) == 1, e.value.problems
    assert message in problems[0].message and problems[0].line is not None


def test_plan_json_carries_the_compiled_controls_and_report_settings(tmp_path):
    """The report reads controls and the headline from plan.json (cells no longer copy the study)."""
    from mechsteer.engine.plan import compile_study

    doc = _doc(
        {
            "base": [],
            "steer": {"interventions": STEER, "control": "rand"},
            "rand": RANDOM,
            "s_{layer}": {
                "sweep": {"layer": [1, 3]},
                "interventions": [{"kind": "add", "vector": "v", "layer": "{layer}"}],
                "control": "r_{layer}",
            },
            "r_{layer}": {
                "sweep": {"layer": [1, 3]},
                "interventions": [{"kind": "add", "vector": "r", "layer": "{layer}"}],
            },
        }
    )
    doc["report"] = {"headline": "acc_boxed"}
    summary = compile_study(_load(tmp_path, doc), output_root=tmp_path / "out").summary()
    assert summary["controls"] == {"steer": "rand", "s_1": "r_1", "s_3": "r_3"}
    assert summary["report"] == {"headline": "acc_boxed"}
