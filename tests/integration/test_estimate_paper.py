"""`mechsteer plan --estimate --all`: every paper profile of every bundled study and the training runs they read,
with the total against the goal (the whole paper for both models on one 8-GPU node in at most 24 hours)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mechsteer.cli.app import app
from mechsteer.engine.estimate import paper_profiles

REPO = Path(__file__).resolve().parents[2]


def test_the_whole_paper_is_estimated_against_the_goal():
    r = CliRunner().invoke(app, ["plan", "--estimate", "--all", str(REPO / "studies"), "--format", "json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    studies, trainings = paper_profiles(REPO / "studies")
    items = {(Path(i["file"]).name, i["profile"]) for i in est["items"]}
    assert {(f.name, p) for f, p in studies} | {(f.name, p) for f, p in trainings} == items
    assert any("Llama-3.1-8B-Instruct" in m for i in est["items"] for m in i["models"])
    total = est["total"]["gpu_hours"]
    assert total == sum(i["gpu_hours"] for i in est["items"]) > 0
    assert est["total"]["gpu_hours_cap"] >= total >= est["total"]["gpu_hours_vllm"]
    assert est["goal"]["gpu_hours"] == 8 * 24 and est["fits"]["gpu_hours"] == (total <= 8 * 24)
    by_item = {(Path(i["file"]).name, i["profile"]): i for i in est["items"]}
    # per-block runs count once per block the studies read: every block of each model for the single-layer runs
    assert by_item[("train_paper.yaml", "single_layer")]["runs"] == 28
    assert by_item[("train_paper_llama.yaml", "single_layer")]["runs"] == 32
    assert by_item[("train_paper.yaml", "prefix_to")]["runs"] == 2
    assert by_item[("train_paper.yaml", "full")]["note"] == "not read by any paper study"
    assert est["dominant"][0]["gpu_hours"] == max(i["gpu_hours"] for i in est["items"])
    text = CliRunner().invoke(app, ["plan", "--estimate", "--all", str(REPO / "studies")]).output
    assert "does NOT fit" in text or "fits" in text
