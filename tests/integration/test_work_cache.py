"""Intermediate files in `work/` follow their cell: a cell recomputed because it is stale (other code) or
forced (`--force`) never resumes from what an earlier run left there. The check: after a first run, the
intermediates are tampered with (so reusing them would change the result); the recomputed cell must equal the
first run's. Covered: the teacher-forced sequences shared by the mechanistic readouts
(`work/sequences/`) and DiffSAE's collection (`work/<cell>/...`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer.api import load_study
from mechsteer.engine import code_version


def _study(tmp: Path, readouts: dict) -> Path:
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    model.save_pretrained(tmp / "model")
    make_tiny_tokenizer().save_pretrained(tmp / "model")
    doc = {
        "name": "work",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 6.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": readouts,
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp / "s.yaml"


def _pretend_code_change(monkeypatch) -> None:
    """Every fingerprint (cells' and intermediates') as after a bug fix in the code that computes them."""
    real = code_version.code_fingerprint

    def changed(*args, **kwargs):
        fp = real(*args, **kwargs)
        return {**fp, "source": "f" * 64}

    monkeypatch.setattr(code_version, "code_fingerprint", changed)
    monkeypatch.setattr("mechsteer.engine.plan.code_fingerprint", changed)
    monkeypatch.setattr("mechsteer.engine.execute.code_fingerprint", changed, raising=False)


def _metrics(results) -> dict[str, dict]:
    """The recorded metrics of every cell, as they are on disk now."""
    return {c["hash"]: results.store.read_metrics(c["hash"]) for c in results.recorded()}


# ------------------------------------------------------------------------------------ teacher-forced sequences


def _tamper_sequences(out: Path) -> int:
    """Replace the sampled part of every cached sequence with two fixed tokens (another result if reused)."""
    files = list(out.rglob("work/sequences/*.json"))
    for f in files:
        data = json.loads(f.read_text())
        for s in data["sequences"]:
            s["generated_ids"] = [7, 9]  # two tokens where there were more
        f.write_text(json.dumps(data))
    return len(files)


@pytest.fixture
def shift_study(tmp_path):
    sampled = {"prompts": ["ab", "hello"], "template": "raw", "max_new_tokens": 6, "temperature": 1.0}
    return _study(tmp_path, {"shift": {"kind": "token_shift", "conditions": ["steer"], "track": [], **sampled}})


@pytest.mark.parametrize("why", ["stale", "force"])
def test_recomputed_token_shift_samples_its_sequences_again(shift_study, tmp_path, monkeypatch, why):
    out = tmp_path / "out"
    study = load_study(shift_study)
    first = study.run(output_dir=out, report=False)
    assert len(first.run_summary.executed) == 1
    recorded = _metrics(first)
    assert _tamper_sequences(out) >= 1
    if why == "stale":
        _pretend_code_change(monkeypatch)
        assert set(study.status(output_dir=out).state) == {"stale"}
    again = study.run(output_dir=out, report=False, force=why == "force")
    assert again.run_summary.executed == first.run_summary.executed
    assert _metrics(again) == recorded  # the tampered sequences were not used


def test_a_forced_run_still_shares_the_sequences_it_samples(tmp_path, monkeypatch):
    """Within one forced run, two cells that compare on the same sequences sample them once."""
    import mechsteer.readouts.teacher_forced as tf
    from mechsteer.api import run_plan

    sampled = {"prompts": ["ab"], "template": "raw", "max_new_tokens": 4, "temperature": 1.0}
    readouts = {
        "shift": {"kind": "token_shift", "conditions": ["steer"], "track": [], **sampled},
        "again": {"kind": "token_shift", "conditions": ["steer"], "track": [], "top": 3, **sampled},
    }
    out = tmp_path / "out"
    study = load_study(_study(tmp_path, readouts))
    calls = []
    real = tf.sample_texts
    monkeypatch.setattr(tf, "sample_texts", lambda *a, **k: calls.append(1) or real(*a, **k))
    study.run(output_dir=out, report=False)
    assert len(calls) == 1
    plan = study.plan(output_dir=out)
    forced = run_plan(plan, force=True, report=False)
    assert len(forced.run_summary.executed) == 2 and len(calls) == 2  # sampled again, once for both cells
    files = list(out.rglob("work/sequences/*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["run"] == plan.run_id


# ------------------------------------------------------------------------------------ DiffSAE collection


def _tamper_collection(out: Path) -> int:
    """Mark every collected sequence correct (the recorded accuracy changes if the collection is reused)."""
    files = list(out.rglob("collection/sequences.jsonl"))
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        f.write_text("".join(json.dumps({**r, "correct": True}) + "\n" for r in rows))
    return len(files)


def test_recomputed_diffsae_collects_again(tmp_path, monkeypatch):
    readouts = {
        "sae": {
            "kind": "diffsae",
            "task": "mini",
            "limit": 4,
            "template": "raw",
            "layers": [1],
            "max_new_tokens": 4,
            "batch_size": 4,
            "conditions": ["steer"],
            "sae": {"width": 8, "k": 2, "tokens": 128, "batch_size": 32},
        }
    }
    out = tmp_path / "out"
    study = load_study(_study(tmp_path, readouts))
    first = _metrics(study.run(output_dir=out, report=False))
    assert len(first) == 1 and next(iter(first.values()))["accuracy"] < 1.0  # so marking all correct shows

    assert _tamper_collection(out) == 1
    forced = study.run(output_dir=out, report=False, force=True)
    assert len(forced.run_summary.executed) == 1 and _metrics(forced) == first

    assert _tamper_collection(out) == 1
    _pretend_code_change(monkeypatch)
    stale = study.run(output_dir=out, report=False)
    assert len(stale.run_summary.executed) == 1 and _metrics(stale) == first
    assert _tamper_collection(out) == 1  # the stale run's folder was replaced, not added beside the old one
