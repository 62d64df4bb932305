"""The report's wide and delta tables against hand computations, and the CLI's `report` (rebuilds tables from
the recorded cells, loading no model) and `run --force` (recomputes cached cells)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from typer.testing import CliRunner

from mechsteer.cli.app import app


def _long(rows):
    cols = ["model", "condition", "measurement", "kind", "seed", "metric", "value", "cell"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


def test_wide_and_delta_tables_by_hand():
    from mechsteer.report.tables import delta_table, wide_table

    vals = {("base", 0): (0.25, 10.0), ("base", 1): (0.5, 14.0), ("steer", 0): (0.75, 9.0), ("steer", 1): (1.0, 7.0)}
    rows = []
    for (cond, seed), (acc, length) in vals.items():
        for model in ("m1", "m2"):
            shift = 0.0 if model == "m1" else 0.125
            rows += [
                (model, cond, "gen", "generate", seed, "acc_lenient", acc - shift, "c"),
                (model, cond, "gen", "generate", seed, "mean_len", length, "c"),
                (model, cond, "gen", "generate", seed, "n", 3.0, "c"),  # counts are not headline metrics
                (model, cond, "gen", "generate", seed, "truncated_rate", 0.5, "c"),
            ]  # not a headline metric
    means, text = wide_table(_long(rows), ["steer", "base"])
    assert list(means.columns) == ["gen/acc_lenient", "gen/mean_len"]
    assert list(means.index) == [("m1", "steer"), ("m1", "base"), ("m2", "steer"), ("m2", "base")]
    assert means.loc[("m1", "base"), "gen/acc_lenient"] == pytest.approx((0.25 + 0.5) / 2)
    assert means.loc[("m2", "steer"), "gen/acc_lenient"] == pytest.approx((0.625 + 0.875) / 2)
    assert means.loc[("m1", "steer"), "gen/mean_len"] == pytest.approx(8.0)
    sd = statistics.stdev([25.0, 50.0])  # sample std over seeds, in percent for rates
    assert text.loc[("m1", "base"), "gen/acc_lenient"] == f"37.5 ± {sd:.1f}"
    assert text.loc[("m1", "base"), "gen/mean_len"] == f"12.00 ± {statistics.stdev([10.0, 14.0]):.2f}"
    delta = delta_table(means, "base")
    assert delta.loc[("m1", "steer"), "gen/acc_lenient"] == pytest.approx(0.875 - 0.375)
    assert delta.loc[("m2", "steer"), "gen/mean_len"] == pytest.approx(8.0 - 12.0)
    assert delta.loc[("m2", "base")].abs().max() == 0


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-report")
    make_tiny_model("llama", vocab_size=VOCAB_SIZE).save_pretrained(d / "model")
    make_tiny_tokenizer().save_pretrained(d / "model")
    doc = {
        "name": "tiny",
        "models": {"tiny": {"id": str(d / "model"), "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 8.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v", "layer": "penultimate"}]},
        "readouts": {
            "first": {"kind": "first_token", "prompts": ["ab", "hello there"], "template": "raw", "track": ["a"]}
        },
    }
    p = d / "tiny.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _cell_metrics(out: Path) -> dict[Path, dict]:
    return {f: json.loads(f.read_text()) for f in sorted((out / "tiny" / "cells").glob("*/metrics.json"))}


def test_report_rebuilds_from_cells_and_force_recomputes(study, tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(study), "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    recorded = _cell_metrics(out)
    assert len(recorded) == 2
    # Edit one recorded cell by hand: `report` must show the recorded number, without loading a model.
    f = next(p for p, m in recorded.items() if m["p(a)"] != 0.123456)
    edited = {**recorded[f], "p(a)": 0.123456}
    f.write_text(json.dumps(edited))
    from mechsteer.models import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("report loaded a model"))
    rep = runner.invoke(app, ["report", str(study), "-o", str(out)])
    assert rep.exit_code == 0, rep.output
    table = pd.read_csv(out / "tiny" / "report" / "table.csv", index_col=[0, 1])
    assert 0.123456 in list(table["first/p(a)"].round(6))
    assert "12.3" in rep.output  # the edited p(a), shown in percent
    monkeypatch.undo()
    # Without --force the edited cell is reused; with --force every cell is recomputed.
    again = runner.invoke(app, ["run", str(study), "-o", str(out), "--quiet"])
    assert again.exit_code == 0 and "ran 0 cells, 2 cached" in again.output, again.output
    assert _cell_metrics(out)[f]["p(a)"] == 0.123456
    forced = runner.invoke(app, ["run", str(study), "-o", str(out), "--quiet", "--force"])
    assert forced.exit_code == 0 and "ran 2 cells" in forced.output, forced.output
    assert _cell_metrics(out)[f]["p(a)"] == pytest.approx(recorded[f]["p(a)"])
