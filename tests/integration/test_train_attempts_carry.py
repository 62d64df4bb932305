"""scripts/train_attempts.py across sittings: an attempt that finished in an earlier sitting, whose run folder
did not survive a fresh checkout, is kept from the earlier record (not rerun, not dropped); a changed attempt is
not; the bundled file of a carried chosen attempt is left as it is, and one that cannot be copied is refused."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import REPO
from safetensors.torch import save_file
from script_loader import load_script

OVER_A = {"setup": {"single_layer": 27}, "rloo": {"lr": 0.09, "steps": 64}}
OVER_B = {"setup": {"single_layer": 27}, "rloo": {"lr": 0.09, "steps": 96}}


def _earlier_record(name: str, overrides: dict) -> dict:
    """One finished attempt as the record of an earlier sitting holds it."""
    return {
        "name": name,
        "why": "earlier",
        "overrides": overrides,
        "setup": {"single_layer": 27},
        "lr": 0.09,
        "steps": 64,
        "prompts_per_step": 8,
        "group_size": 8,
        "max_new_tokens": 64,
        "finished": True,
        "steps_done": 64,
        "reward": [-0.7, -0.6, -0.5, -0.5],
        "accuracy": [0.1, 0.2, 0.2, 0.3],
        "mean_len": [58.0, 55.0, 52.0, 51.0],
        "param_norm": [1.0, 5.0, 10.0, 17.0],
        "select": "greedy_lenient",
        "evals": [{"step": 32, "value": 0.6}],
        "best": {"step": 32, "value": 0.656},
        "selection": None,
        "compute": {"cpu_seconds": 1463.0, "wall_seconds": 2568.0, "resumed": False},
        "train_seconds": 2500.0,
    }


@pytest.fixture
def sitting(tmp_path):
    """An attempts file with a finished earlier attempt (in the record, no run folder) and a new one."""
    script = load_script("scripts/train_attempts.py")
    doc = {
        "title": "block 27",
        "train": str(REPO / "studies" / "train_mini.yaml"),
        "profile": "single",
        "bundle": "block27.safetensors",
        "attempts": [{"name": "lr0.09", "overrides": OVER_A}, {"name": "lr0.09-96", "overrides": OVER_B}],
    }
    path = tmp_path / "block27.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    earlier = {
        "title": "block 27",
        "records": [_earlier_record("lr0.09", OVER_A)],
        "chosen": "lr0.09",
        "runs": "outputs/attempts/block27",
        "date": "2026-12-05",
    }
    (tmp_path / "block27.attempts.json").write_text(json.dumps(earlier))
    _plant_bundle(tmp_path / "block27.safetensors", path, "lr0.09", 32)
    return script, doc, path, tmp_path / "runs"


def _plant_bundle(dest, attempts_path, attempt: str, step: int) -> None:
    """A bundled file whose provenance says which attempt's checkpoint it holds (as `bundle` writes it)."""
    source = f"scripts/train_attempts.py {attempts_path} (attempt {attempt}, step {step})"
    save_file({"v": torch.zeros(4)}, str(dest), metadata={"source": source})


def test_a_finished_attempt_without_its_run_folder_is_carried_not_rerun_nor_dropped(sitting):
    script, doc, path, out = sitting
    _, prev = script.previous_records(path)
    assert script.carried(doc["attempts"][0], out / "lr0.09", prev) is not None
    assert script.carried(doc["attempts"][1], out / "lr0.09-96", prev) is None  # new: it has to run

    info = script.report(doc, path, out)
    old, new = info["records"]
    assert old["carried_from"] == "outputs/attempts/block27, 2026-12-05"
    assert old["best"] == {"step": 32, "value": 0.656} and old["compute"]["cpu_seconds"] == 1463.0
    assert new["finished"] is False and "carried_from" not in new
    assert info["chosen"] == "lr0.09"
    md = path.with_suffix(".attempts.md").read_text()
    assert "lr0.09 (chosen) (*carried*: outputs/attempts/block27, 2026-12-05)" in md

    # a later sitting keeps where the row was first recorded
    again = script.report(doc, path, out)
    assert again["records"][0]["carried_from"] == "outputs/attempts/block27, 2026-12-05"


def test_a_started_or_changed_attempt_is_not_carried(sitting):
    script, doc, path, out = sitting
    _, prev = script.previous_records(path)
    changed = {"name": "lr0.09", "overrides": {**OVER_A, "rloo": {"lr": 0.2, "steps": 64}}}
    assert script.carried(changed, out / "lr0.09", prev) is None
    (out / "lr0.09").mkdir(parents=True)
    (out / "lr0.09" / "metrics.jsonl").write_text("")
    assert script.carried(doc["attempts"][0], out / "lr0.09", prev) is None  # its own run folder decides


def test_the_bundle_of_a_carried_chosen_attempt_is_kept_or_refused_by_name(sitting):
    script, doc, path, out = sitting
    info = script.report(doc, path, out)
    dest = path.parent / "block27.safetensors"
    before = dest.read_bytes()
    script.bundle(info, out, path)  # the earlier sitting bundled this very attempt: nothing to copy
    assert dest.read_bytes() == before

    _plant_bundle(dest, path, "lr0.09", 64)  # another checkpoint of it: the chosen one cannot be copied here
    other = dest.read_bytes()
    with pytest.raises(SystemExit) as e:
        script.bundle(info, out, path)
    assert "lr0.09" in str(e.value) and "earlier sitting" in str(e.value) and dest.read_bytes() == other

    dest.unlink()
    with pytest.raises(SystemExit) as e:
        script.bundle(info, out, path)
    assert "lr0.09" in str(e.value) and "earlier sitting" in str(e.value) and not dest.exists()
