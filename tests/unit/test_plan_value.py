"""A compiled plan is a typed, frozen value: typed measurement, intervention and vector specs, no field that can
be reassigned, no copy of the whole study (what the report needs is in typed fields), and plan.json written in
the current format, while an output folder of the previous format (sweep templates and readout settings only
in each cell record's copy of the study) still reads."""

from __future__ import annotations

import dataclasses
import json

import pytest
from recorded_runs import write_run

from mechsteer.engine.plan import PLAN_FORMAT, compile_study
from mechsteer.engine.store import CellStore
from mechsteer.errors import MechsteerError
from mechsteer.results import Results
from mechsteer.spec.kinds.interventions import InterventionBase
from mechsteer.spec.kinds.measurements import MeasurementBase
from mechsteer.spec.kinds.vectors import VectorSourceBase
from mechsteer.spec.loader import load_study_dict

STUDY = {
    "name": "value",
    "description": "what the report shows",
    "models": {"m": {"id": "smollm2-135m"}},
    "vectors": {"v": {"kind": "random", "seed": 0, "norm": 1.0}},
    "conditions": {
        "base": [],
        "single_{layer}": {
            "sweep": {"layer": [3, 5]},
            "interventions": [{"kind": "add", "vector": "v", "layer": "{layer}"}],
        },
    },
    "evaluation": {"tasks": ["mini"], "protocol": "greedy", "limit": 2},
    "readouts": {"tw": {"kind": "first_token", "prompts": ["a", "b"]}},
}


def test_the_plan_is_typed_and_frozen(tmp_path):
    plan = compile_study(load_study_dict(STUDY), output_root=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.cells = ()  # type: ignore[misc]
    assert isinstance(plan.cells, tuple) and isinstance(plan.conditions, tuple) and isinstance(plan.notes, tuple)
    assert all(isinstance(v, VectorSourceBase) for v in plan.vectors.values())
    for c in plan.cells:
        assert isinstance(c.measurement.spec, MeasurementBase)
        assert isinstance(c.interventions, tuple) and all(isinstance(iv, InterventionBase) for iv in c.interventions)
    assert not hasattr(plan, "resolved_spec")
    summary = plan.summary()
    assert summary["format"] == PLAN_FORMAT and summary["description"] == "what the report shows"
    assert summary["sweeps"] == {"single_{layer}": {"layer": [3, 5]}}
    assert summary["evaluation"]["tasks"] == ["mini"] and summary["evaluation"]["seeds"] == [0]
    assert "resolved_spec" not in json.dumps(summary)


def test_results_read_the_current_and_the_previous_plan_format(tmp_path):
    spec = {"single_{layer}": {"sweep": {"layer": [3, 5]}, "interventions": []}}
    cells = [
        {
            "model": "m",
            "condition": "single_3",
            "measurement": "readout:tw",
            "kind": "tokenwise",
            "seed": 0,
            "metrics": {"x": 1.0},
        }
    ]
    new = Results.load(write_run(tmp_path / "new", study="s", cells=cells, conditions_spec=spec))
    assert new.summary["format"] == PLAN_FORMAT
    assert new.sweeps() == {"single_{layer}": {"layer": [3, 5]}}
    assert new.measurement_spec(new.cells[0]) == {"kind": "tokenwise"}

    # the previous format: no `sweeps` in plan.json, the study copied into every cell record
    old_dir = write_run(tmp_path / "old", study="s", cells=cells)
    plan_file = old_dir / "plan.json"
    summary = json.loads(plan_file.read_text())
    summary["format"] = "mechsteer.plan/1"
    del summary["sweeps"]
    plan_file.write_text(json.dumps(summary))
    store = CellStore(old_dir / "cells")
    h = summary["cells"][0]["hash"]
    record = store.read_record(h)
    del record["measurement_spec"]
    record["resolved_spec"] = {"conditions": spec, "readouts": {"tw": {"kind": "tokenwise", "heatmap_samples": 4}}}
    (store.dir(h) / "cell.json").write_text(json.dumps(record))
    old = Results.load(old_dir)
    assert old.sweeps() == {"single_{layer}": {"layer": [3, 5]}}
    assert old.measurement_spec(old.cells[0]) == {"kind": "tokenwise", "heatmap_samples": 4}

    summary["format"] = "mechsteer.plan/9"
    plan_file.write_text(json.dumps(summary))
    with pytest.raises(MechsteerError, match=r"plan format 'mechsteer.plan/9' is not one this mechsteer reads"):
        Results.load(old_dir)
