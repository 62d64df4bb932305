"""Paper-shaped report pieces from recorded cells with known values: the accuracy table's Relative (%) and
Relative Improvement (%) columns against a hand-computed table, the sweep plots' numbers (mean ± std over seeds
per layer / head) against a direct computation, and report.html's structure (inlined images, traced rows)."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest
from recorded_runs import PAPER_SHAPES_ACC as ACC
from recorded_runs import paper_shapes_run as make_run

from mechsteer.report import write_report
from mechsteer.report.paper_table import IMPROVEMENT, RELATIVE, per_seed, relative_columns, summarise
from mechsteer.results import Results


def test_relative_columns_match_a_hand_computed_table(tmp_path):
    out = write_report(Results.load(make_run(tmp_path / "run")))
    table = pd.read_csv(out.parent / "paper_table_lenient.csv").set_index("condition")
    # x = mean accuracy over seeds; base 2/8, reference all_layers 6/8
    x = {c: sum(k) / 2 / 8 for c, k in ACC.items()}
    for cond in ACC:
        assert table.loc[cond, RELATIVE] == pytest.approx(100 * x[cond] / x["all_layers"])
        ri = 100 * (x[cond] - x["base"]) / (x["all_layers"] - x["base"])
        assert table.loc[cond, IMPROVEMENT] == pytest.approx(ri)
    assert table.loc["single_1", RELATIVE] == pytest.approx(200 / 3) and table.loc["single_1", IMPROVEMENT] == 50.0
    md = (out.parent / "paper_table.md").read_text()
    assert re.search(r"\| m\s+\| single_1\s+\|.*\| 66\.7\s+\| 50\.0\s+\|", md), md
    # without a reference the columns are absent
    out2 = write_report(Results.load(make_run(tmp_path / "plain", reference=None)))
    assert RELATIVE not in pd.read_csv(out2.parent / "paper_table_lenient.csv").columns


def test_relative_columns_use_the_six_benchmark_average():
    tasks = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench"]
    vals = {"base": [0.1] * 6, "ft": [0.4] * 5 + [0.7], "steer": [0.3] * 6}
    rows = [
        {
            "model": "m",
            "condition": c,
            "measurement": t,
            "kind": "eval",
            "seed": 0,
            "metric": "acc_boxed",
            "value": v,
            "cell": "x",
        }
        for c, vs in vals.items()
        for t, v in zip(tasks, vs, strict=True)
    ]
    stats = summarise(per_seed(pd.DataFrame(rows), "acc_boxed"), tasks, list(vals))
    rel = relative_columns(stats, "base", "ft")
    avg = {"base": 0.1, "ft": 2.7 / 6, "steer": 0.3}
    assert rel.loc[("m", "steer"), RELATIVE] == pytest.approx(100 * 0.3 / avg["ft"])
    assert rel.loc[("m", "steer"), IMPROVEMENT] == pytest.approx(100 * 0.2 / (avg["ft"] - 0.1))
    assert rel.loc[("m", "base"), IMPROVEMENT] == 0.0


def test_sweep_plots_numbers_and_html(tmp_path):
    run = make_run(tmp_path / "run")
    out = write_report(Results.load(run)).parent
    layer_csv = out / "sweep_single_layer_m_mini_acc_lenient.csv"
    head_csv = out / "sweep_q_head_head_m_mini_acc_lenient.csv"
    layers = pd.read_csv(layer_csv)
    assert layers.layer.tolist() == [0, 1, 2, 3]
    for row in layers.itertuples():
        ks = pd.Series(ACC[f"single_{row.layer}"]) / 8 * 100
        assert row.mean == pytest.approx(ks.mean()) and row.std == pytest.approx(ks.std(ddof=1))
        assert len(row.cells.split()) == 2  # two seeds, two cells
    assert pd.read_csv(head_csv)["head"].tolist() == [0, 1]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "effects_m_acc_boxed.png",  # the paper protocol's headline: the paper's metric
        "sweep_pair_i_j_m_mini_acc_lenient.png",
        "sweep_q_head_head_m_mini_acc_lenient.png",
        "sweep_single_layer_m_mini_acc_lenient.png",
    ]
    pairs = pd.read_csv(out / "sweep_pair_i_j_m_mini_acc_lenient.csv")
    assert list(zip(pairs.i, pairs.j, pairs["mean"], strict=True)) == [(0, 1, 50.0), (0, 2, 75.0), (1, 2, 12.5)]
    md = (out / "report.md").read_text()
    assert "base (25.0, 95% CI)" in md and "all_layers (75.0, 95% CI)" in md  # the baselines drawn as bands
    # each point's interval is the one of the effects table (per-problem records, two seeds: a bootstrap)
    eff = Results.load(run).effects("acc_lenient").set_index("condition")
    for row in layers.itertuples():
        assert (row.ci_low, row.ci_high) == pytest.approx(
            (eff.loc[row.condition, "low"] * 100, eff.loc[row.condition, "high"] * 100)
        )
        assert row.ci_low < row.mean < row.ci_high and eff.loc[row.condition, "interval"] == "bootstrap"
    page = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(pngs)
    assert {base64.b64decode(i) for i in images} == {(out / p).read_bytes() for p in pngs}
    # the Results table row of single_1 names both of its cells
    res = Results.load(run).table()
    hashes = " ".join(sorted(set(res[res.condition == "single_1"].cell)))
    assert f'<tr title="cells: {hashes}">' in page
    assert 'src="report' not in page and "<script" not in page
