"""benchmarks/studies.py end to end on a folder of tiny studies: a study on a tiny local model runs through
`mechsteer run` in a subprocess into a fresh root and gets its cells and their recorded seconds; a study whose
model cannot load fails with its stderr and the others still run (exit 1); a hub study is skipped with the
reason; a training file is not listed; a used output root is refused; `--merge` keeps the other rows as they
were. Then scripts/readme_report.py copies a plot and a table of such a report into a README block."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from conftest import make_tiny_model
from script_loader import load_script
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer


def _studies(tmp_path: Path) -> Path:
    d = tmp_path / "studies"
    d.mkdir()
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(d / "model")
    make_tiny_tokenizer().save_pretrained(d / "model")
    (d / "broken").mkdir()  # a config and no weights: validates and plans, fails when loaded
    shutil.copy(d / "model" / "config.json", d / "broken" / "config.json")
    tiny = {
        "name": "tiny",
        "description": "A tiny study. Second sentence.",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 4.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {"first": {"kind": "first_token", "prompts": ["ab", "cd"], "template": "raw", "track": ["a"]}},
    }
    (d / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    broken = {**tiny, "name": "broken", "description": "Broken.", "models": {"tiny": {"id": "broken"}}}
    (d / "broken.yaml").write_text(yaml.safe_dump(broken))
    hub = {**tiny, "name": "hub", "description": "Needs the hub.", "models": {"q": {"id": "Qwen/Qwen2.5-7B"}}}
    (d / "hub.yaml").write_text(yaml.safe_dump(hub))
    (d / "train.yaml").write_text("name: train\nmodel: {id: model}\n")
    return d


def test_every_study_runs_fresh_and_is_recorded(tmp_path):
    sb = load_script("benchmarks/studies.py")
    studies, results, out = _studies(tmp_path), tmp_path / "results", tmp_path / "out"
    common = ["--studies-dir", str(studies), "--results-dir", str(results), "--threads", "1"]
    assert sb.main([*common, "--output-dir", str(out)]) == 1  # `broken` failed

    rows = {r["study"]: r for r in json.loads((results / "studies.json").read_text())["rows"]}
    assert sorted(rows) == ["broken", "hub", "tiny"]  # the training file is not a study
    tiny = rows["tiny"]
    records = [json.loads(p.read_text()) for p in (out / "tiny" / "cells").glob("*/cell.json")]
    assert len(records) == 2  # base and steer, one readout, one seed
    assert tiny["status"] == "ok" and tiny["cells"] == tiny["cells_planned"] == tiny["cells_computed"] == 2
    assert tiny["cell_seconds"] == round(sum(r["timing"]["seconds"] for r in records), 3) > 0
    assert tiny["wall_seconds"] >= tiny["cell_seconds"]
    assert tiny["reproduces"] == "A tiny study."
    assert (out / "tiny" / "report" / "table.md").is_file()

    assert rows["broken"]["status"] == "failed" and rows["broken"]["exit_code"] == 1
    err = (out / "logs" / "broken.err").read_text()
    assert rows["broken"]["stderr_tail"][-1] in err and "broken" in err
    assert rows["hub"]["status"] == "skipped" and rows["hub"]["reason"] == "needs hub models: Qwen/Qwen2.5-7B"
    md = (results / "studies.md").read_text()
    assert "| `" in md and "| A tiny study. | 2 |" in md and "skipped: needs hub models: Qwen/Qwen2.5-7B" in md

    # the same root again: refused before anything runs
    assert sb.main([*common, "--output-dir", str(out), "--only", "tiny"]) == 2
    # one study in a new sitting, merged: the other rows keep their own dates, the run is fresh again
    before = rows
    assert sb.main([*common, "--output-dir", str(tmp_path / "out2"), "--only", "tiny", "--merge"]) == 0
    rows = {r["study"]: r for r in json.loads((results / "studies.json").read_text())["rows"]}
    assert sorted(rows) == ["broken", "hub", "tiny"]
    assert rows["broken"] == before["broken"] and rows["hub"] == before["hub"]
    assert rows["tiny"]["cells_computed"] == 2 and rows["tiny"]["output_dir"].endswith("out2/tiny")
    assert rows["tiny"]["date"] >= before["tiny"]["date"]

    # a plot and a table of a real report into the README block
    report = tmp_path / "out2" / "tiny" / "report"
    (report / "fig.png").write_bytes(b"\x89PNG fake")  # the first_token readout draws no plot
    rr = load_script("scripts/readme_report.py")
    docs = tmp_path / "docs"
    args = ["--from", str(tmp_path / "out2" / "tiny"), "--plot", "fig", "--table", "table.md"]
    assert rr.main([*args, "--docs-dir", str(docs), "--results-dir", str(results)]) == 0
    assert (docs / "fig.png").read_bytes() == b"\x89PNG fake"
    snippet = (results / "example_report.md").read_text()
    assert (report / "table.md").read_text().strip() in snippet
    assert "![tiny: fig](docs/example_report/fig.png)" in snippet
    assert f"`mechsteer run {studies / 'tiny.yaml'} -o {tmp_path / 'out2'}` (2 cells" in snippet
    collect = load_script("benchmarks/collect.py")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:example_report -->\n<!-- /results:example_report -->\n")
    assert collect.main(["--results-dir", str(results), "--out", str(tmp_path / "r.md"), "--readme", str(readme)]) == 0
    assert "](docs/example_report/fig.png)" in readme.read_text()
    assert "](../docs/example_report/fig.png)" in (tmp_path / "r.md").read_text()
