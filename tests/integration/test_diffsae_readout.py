"""The `diffsae` readout through the engine on a tiny model: it runs only under the conditions it names, its
metrics are the run's summary, the SAE is recorded in SAELens' format and loads back, the report has its
section, and a second run is cached."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer.api import load_study


def test_diffsae_readout_end_to_end(tmp_path):
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    doc = {
        "name": "tiny_diffsae",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 6.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {
            "sae": {
                "kind": "diffsae",
                "task": "mini",
                "limit": 6,
                "template": "raw",
                "layers": [1, 2],
                "max_new_tokens": 6,
                "batch_size": 6,
                "conditions": ["steer"],
                "sae": {"width": 16, "k": 2, "tokens": 640, "batch_size": 64},
            }
        },
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    study = load_study(tmp_path / "s.yaml")
    plan = study.plan(output_dir=tmp_path / "out")
    assert [(c.condition, c.measurement.kind) for c in plan.cells] == [("steer", "diffsae")]
    results = study.run(output_dir=tmp_path / "out")
    cell = results.cells[0]["hash"]
    cdir = results.store.dir(cell)
    summary = json.loads((cdir / "diffsae" / "summary.json").read_text())
    metrics = json.loads((cdir / "metrics.json").read_text())
    assert metrics["n_sequences"] == summary["n_sequences"] == 6
    assert metrics["accuracy"] == summary["accuracy"]
    for layer in (1, 2):
        assert metrics[f"L{layer}/explained_variance"] == summary["layers"][str(layer)]["sae"]["explained_variance"]
        cfg = json.loads((cdir / "diffsae" / f"layer_{layer}" / "sae" / "cfg.json").read_text())
        assert cfg["d_in"] == 32 and cfg["d_sae"] == 16 and cfg["k"] == 2
    from mechsteer.diffsae.sae import load_saelens

    sae = load_saelens(cdir / "diffsae" / "layer_1" / "sae")[0]
    assert tuple(sae.W_enc.shape) == (32, 16)
    report = (Path(results.output_dir) / "report" / "report.md").read_text()
    assert "## DiffSAE" in report and "contexts.html" in report
    again = study.run(output_dir=tmp_path / "out")
    assert again.run_summary.executed == [] and again.run_summary.cached == [cell]
