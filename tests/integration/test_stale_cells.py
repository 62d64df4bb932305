"""A cell records the code that computed it: after a code change (or a new torch/transformers/lm-eval), `plan`
shows the cell as stale with the reason, `run` recomputes it, and `--reuse-stale` keeps it and records that."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer.api import load_study
from mechsteer.engine import code_version


@pytest.fixture
def study_file(tmp_path):
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    doc = {
        "name": "stale",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 4.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {"first": {"kind": "first_token", "prompts": ["ab", "hello"], "template": "raw", "track": ["a"]}},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "s.yaml"


def _pretend(monkeypatch, source: str | None = None, torch_version: str | None = None):
    def pretended(*args, **kwargs):
        real = code_version.code_fingerprint(*args, **kwargs)
        return {
            "source": source or real["source"],
            "packages": {**real["packages"], **({"torch": torch_version} if torch_version else {})},
        }

    monkeypatch.setattr("mechsteer.engine.plan.code_fingerprint", pretended)


def test_code_change_makes_cells_stale_and_run_recomputes_them(study_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    study = load_study(study_file)
    first = study.run(output_dir=out)
    assert len(first.run_summary.executed) == 2
    assert set(study.status(output_dir=out).state) == {"fresh"}
    _pretend(monkeypatch, source="0" * 64)  # a bug fix anywhere in the code that computes cells
    status = study.status(output_dir=out)
    assert set(status.state) == {"stale"} and set(status.reason) == {"mechsteer code changed since it was computed"}
    again = study.run(output_dir=out)
    assert sorted(again.run_summary.executed) == sorted(first.run_summary.executed)  # recomputed, same hashes
    assert set(study.status(output_dir=out).state) == {"fresh"}
    rec = json.loads((out / "stale" / "cells" / again.run_summary.executed[0] / "cell.json").read_text())
    assert rec["code"]["source"] == "0" * 64


def test_reuse_stale_keeps_cells_and_records_the_reuse(study_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    study = load_study(study_file)
    study.run(output_dir=out)
    _pretend(monkeypatch, torch_version="99.0")
    status = study.status(output_dir=out)
    assert set(status.state) == {"stale"} and all("torch" in r and "99.0" in r for r in status.reason)
    kept = study.run(output_dir=out, reuse_stale=True)
    assert kept.run_summary.executed == [] and len(kept.run_summary.reused_stale) == 2
    for h in kept.run_summary.reused_stale:
        rec = json.loads((out / "stale" / "cells" / h / "cell.json").read_text())
        assert rec["reused_stale"][-1]["code"]["packages"]["torch"] == "99.0"


def test_editing_one_readout_module_recomputes_only_its_cells(tmp_path, monkeypatch):
    """Per-cell fingerprints: after an edit of readouts/first_token.py (in a copy of the package), the
    first_token cells are stale and recomputed; the generate cells stay cached."""
    import shutil

    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    doc = {
        "name": "two",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 4.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {
            "first": {"kind": "first_token", "prompts": ["ab"], "template": "raw", "track": ["a"]},
            "gen": {"kind": "generate", "prompts": ["ab"], "template": "raw", "max_new_tokens": 2},
        },
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    study = load_study(tmp_path / "s.yaml")
    first = study.run(output_dir=out, report=False)
    assert len(first.run_summary.executed) == 4

    edited = tmp_path / "copy" / "mechsteer"
    shutil.copytree(code_version.PACKAGE_ROOT, edited, ignore=shutil.ignore_patterns("__pycache__", "data"))
    with open(edited / "readouts" / "first_token.py", "a") as f:
        f.write("\n_EDITED = 1\n")
    monkeypatch.setattr(code_version, "TREE", code_version.SourceTree(edited))
    status = study.status(output_dir=out)
    states = dict(zip(status.measurement, status.state, strict=False))
    assert set(status[status.measurement == "readout:first"].state) == {"stale"}
    assert set(status[status.measurement == "readout:gen"].state) == {"fresh"}, states
    again = study.run(output_dir=out, report=False)
    firsts = {c.hash for c in study.plan(output_dir=out).cells if c.measurement.id == "readout:first"}
    assert set(again.run_summary.executed) == firsts and len(again.run_summary.cached) == 2
