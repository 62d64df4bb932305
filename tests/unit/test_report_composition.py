"""The composition section (paper Figure 13) from recorded cells with known accuracies: the relative
improvement grid RI(i, j) = (acc(i, j) - max(acc_i, acc_j)) / (acc_all - max(acc_i, acc_j)) against numbers
worked out by hand below, its diagonal, the x markers (RI > 0.99), the values clipped at 1 in the heat-map, the
undefined cells (denominator 0), and the fallback to the difference from the baseline when the study has no
reference condition or no single-layer sweep."""

from __future__ import annotations

import base64
import math
import re

import pandas as pd
import pytest
from recorded_runs import eval_cell, write_run

from mechsteer.readouts import plots
from mechsteer.report import write_report
from mechsteer.report.composition import relative_improvement
from mechsteer.results import Results

N = 20  # problems per cell
SPEC = {
    "base": [],
    "all_layers": [],
    "single_{layer}": {"sweep": {"layer": "layers"}, "interventions": []},
    "pair_{i}_{j}": {"sweep": {"i": "layers", "j": "layers"}, "where": ["i < j"], "interventions": []},
}
# problems right out of 20 in seeds 0 and 1; the mean over seeds in % after the comment
ACC = {
    "base": (4, 4),  # 20.0
    "all_layers": (14, 16),  # 75.0: the all-layer result (evaluation.reference)
    "single_0": (8, 8),  # 40.0
    "single_1": (10, 12),  # 55.0
    "single_2": (6, 6),  # 30.0
    "single_3": (9, 9),  # 45.0
    "single_4": (15, 15),  # 75.0 = the all-layer result: every RI with layer 4 has denominator 0
    "pair_0_1": (7, 7),  # 35.0
    "pair_0_2": (12, 14),  # 65.0
    "pair_0_3": (15, 15),  # 75.0
    "pair_0_4": (16, 16),  # 80.0
    "pair_1_2": (17, 17),  # 85.0
    "pair_1_3": (11, 11),  # 55.0
    "pair_1_4": (10, 10),  # 50.0
    "pair_2_3": (14, 15),  # 72.5
    "pair_2_4": (12, 12),  # 60.0
    "pair_3_4": (13, 13),  # 65.0
}
NAN = math.nan
# RI by hand: (pair - better single) / (75 - better single)
RI = {
    (0, 1): (35 - 55) / (75 - 55),  # -20 / 20 = -1.0
    (0, 2): (65 - 40) / (75 - 40),  # 25 / 35 = 0.714
    (0, 3): (75 - 45) / (75 - 45),  # 30 / 30 = 1.0 -> x
    (1, 2): (85 - 55) / (75 - 55),  # 30 / 20 = 1.5 -> x, drawn as 1
    (1, 3): (55 - 55) / (75 - 55),  # 0 / 20 = 0.0
    (2, 3): (72.5 - 45) / (75 - 45),  # 27.5 / 30 = 0.917 (below 0.99: no x)
    (0, 4): NAN,  # better single = single_4 = 75 = all-layer: 0 / 0
    (1, 4): NAN,
    (2, 4): NAN,
    (3, 4): NAN,
    (0, 0): 0.0,  # the diagonal is the single vector: (40 - 40) / (75 - 40)
    (1, 1): 0.0,
    (2, 2): 0.0,
    (3, 3): 0.0,
    (4, 4): NAN,  # (75 - 75) / (75 - 75)
}
STEM = "sweep_pair_i_j_m_mini_acc_lenient"


def _run(root, acc=ACC, spec=SPEC, reference="all_layers"):
    cells = [
        eval_cell("m", cond, [1] * k + [0] * (N - k), seed=s) for cond, ks in acc.items() for s, k in enumerate(ks)
    ]
    ev = {"tasks": ["mini"], "protocol": "paper", "seeds": [0, 1], "reference": reference}
    return write_run(root, study="compose", cells=cells, conditions_spec=spec, evaluation=ev)


@pytest.fixture
def drawn(monkeypatch):
    """The heat-maps drawn (matrix and keyword arguments), still written to disk."""
    calls = []
    real = plots.heatmap

    def spy(matrix, path, **kw):
        calls.append((matrix.copy(), path, kw))
        return real(matrix, path, **kw)

    monkeypatch.setattr(plots, "heatmap", spy)
    return calls


def _md_rows(md: str, first: str) -> dict[str, list[str]]:
    """The body rows of the Markdown table whose header starts with `first`: first cell -> other cells."""
    lines = md.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first}"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_relative_improvement_grid_matches_the_hand_computed_one(tmp_path, drawn):
    out = write_report(Results.load(_run(tmp_path / "run"))).parent
    grid = pd.read_csv(out / f"{STEM}_ri.csv", keep_default_na=False, na_values=[""])
    got = {(r.i, r.j): r for r in grid.itertuples()}
    assert set(got) == set(RI)
    for key, ri in RI.items():
        r = got[key]
        if math.isnan(ri):
            assert math.isnan(r.ri) and math.isnan(r.ri_plot) and not r.reaches_all_layer
            assert r.note.startswith("undefined: the better single layer (75.0) is at or above the all-layer"), r.note
        else:
            assert r.ri == pytest.approx(ri) and r.ri_plot == pytest.approx(min(ri, 1.0))
            assert r.reaches_all_layer == (ri > 0.99)
        assert r.all_layer == pytest.approx(75.0)
    assert got[(0, 2)].ri == pytest.approx(5 / 7) and got[(2, 3)].ri == pytest.approx(11 / 12)
    # the clipped value: RI 1.5 is drawn as 1
    assert got[(1, 2)].ri == pytest.approx(1.5) and got[(1, 2)].ri_plot == 1.0
    # the diagonal is the single-layer sweep: its accuracy, condition and cells
    singles = pd.read_csv(out / "sweep_single_layer_m_mini_acc_lenient.csv").set_index("layer")
    for layer in range(5):
        d = got[(layer, layer)]
        assert d.condition == f"single_{layer}" and d.acc == pytest.approx(singles.loc[layer, "mean"])
        assert d.cells == singles.loc[layer, "cells"]
    assert got[(1, 1)].acc == pytest.approx((10 + 12) / 2 / 20 * 100)  # 55.0
    # every number is traced: the pair's cells, both singles' and the reference's
    res = Results.load(tmp_path / "run").table()
    cells = lambda cond: " ".join(sorted(set(res[res.condition == cond].cell)))  # noqa: E731
    assert got[(0, 2)].cells == cells("pair_0_2") and len(got[(0, 2)].cells.split()) == 2
    assert got[(0, 2)].cells_i == cells("single_0") and got[(0, 2)].cells_j == cells("single_2")
    assert got[(0, 2)].cells_all_layer == cells("all_layers")
    # the heat-map: clipped values, x markers, the diagonal outlined, colours centred at 0 and capped at 1
    ((matrix, path, kw),) = [c for c in drawn if c[1].name == f"{STEM}.png"]
    assert path.is_file()
    assert matrix.loc[1, 2] == 1.0 and matrix.loc[0, 1] == pytest.approx(-1.0) and math.isnan(matrix.loc[4, 4])
    assert matrix.loc[0, 0] == 0.0 and math.isnan(matrix.loc[2, 0])  # below the diagonal: no pair
    assert sorted(kw["crosses"]) == [(0, 3), (1, 2)]
    assert kw["limits"] == pytest.approx((-1.0, 1.0))  # the lowest RI is -1.0: the scale runs -1 .. 0 .. 1
    assert sorted(kw["markers"]) == [(i, i) for i in range(5)]
    # the Markdown matrix shows the unclipped values, the x marks and the undefined cells
    md = (out / "report.md").read_text()
    rows = _md_rows(md, "i \\ j")
    assert rows["0"] == ["0.00", "-1.00", "0.71", "1.00 x", "-"]
    assert rows["1"] == ["", "0.00", "1.50 x", "0.00", "-"]
    assert rows["2"] == ["", "", "0.00", "0.92", "-"]
    assert rows["4"] == ["", "", "", "", "-"]
    assert "values above 1 drawn as 1 (clipped)" in md and "`all_layers` = 75.0" in md
    assert "- RI (0, 4), (1, 4), (2, 4), (3, 4), (4, 4): undefined: the better single layer (75.0)" in md


def test_denominator_at_or_below_zero_is_nan_not_a_division():
    ri, note = relative_improvement(80.0, 75.0, 30.0, 75.0)  # 75 - 75 = 0
    assert math.isnan(ri) and "at or above" in note
    ri, note = relative_improvement(80.0, 30.0, 90.0, 75.0)  # 75 - 90 < 0
    assert math.isnan(ri) and "(90.0)" in note
    assert relative_improvement(60.0, 30.0, 40.0, 80.0) == (pytest.approx((60 - 40) / (80 - 40)), "")


def test_without_reference_the_pairs_show_the_difference_from_the_baseline(tmp_path, drawn):
    out = write_report(Results.load(_run(tmp_path / "run", reference=None))).parent
    assert not (out / f"{STEM}_ri.csv").exists()
    ((matrix, _, kw),) = [c for c in drawn if c[1].name == f"{STEM}.png"]
    assert matrix.loc[0, 1] == pytest.approx(35.0 - 20.0) and matrix.loc[1, 2] == pytest.approx(85.0 - 20.0)
    assert "crosses" not in kw
    md = (out / "report.md").read_text()
    assert "colours: difference from the baseline `base`" in md
    assert "relative improvement not shown: the study sets no `evaluation.reference`" in md


def test_without_single_layer_sweep_the_caption_says_why(tmp_path, drawn):
    acc = {c: k for c, k in ACC.items() if not c.startswith("single_")}
    spec = {k: v for k, v in SPEC.items() if k != "single_{layer}"}
    out = write_report(Results.load(_run(tmp_path / "run", acc=acc, spec=spec))).parent
    assert not (out / f"{STEM}_ri.csv").exists()
    md = (out / "report.md").read_text()
    assert "relative improvement not shown: there is no single-layer sweep" in md
    ((matrix, _, _),) = [c for c in drawn if c[1].name == f"{STEM}.png"]
    assert matrix.loc[2, 3] == pytest.approx(72.5 - 20.0)


def test_recorded_diagonal_pairs_stand_in_for_the_single_sweep(tmp_path):
    """`compose_pairs` writes pair_l_l as the single vector alone: without a single-layer sweep those give acc_l."""
    spec = {**{k: v for k, v in SPEC.items() if k != "single_{layer}"}}
    spec["pair_{i}_{j}"] = {**spec["pair_{i}_{j}"], "where": ["i <= j"]}
    acc = {"base": (4, 4), "all_layers": (14, 16), "pair_0_0": (8, 8), "pair_1_1": (10, 12), "pair_0_1": (13, 13)}
    out = write_report(Results.load(_run(tmp_path / "run", acc=acc, spec=spec))).parent
    grid = pd.read_csv(out / f"{STEM}_ri.csv").set_index(["i", "j"])
    assert grid.loc[(0, 1), "ri"] == pytest.approx((65 - 55) / (75 - 55))  # 0.5
    assert grid.loc[(0, 0), "condition"] == "pair_0_0" and grid.loc[(1, 1), "acc"] == pytest.approx(55.0)
    assert "acc_i from the recorded pairs (l, l)" in (out / "report.md").read_text()


def test_report_html_inlines_the_composition_heat_map(tmp_path):
    out = write_report(Results.load(_run(tmp_path / "run"))).parent
    page = (out / "report.html").read_text()
    images = {base64.b64decode(i) for i in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)}
    assert (out / f"{STEM}.png").read_bytes() in images
    assert "Relative improvement (rows i, columns j" in page and "1.50 x" in page


def test_per_layer_sweeps_over_explicit_blocks_share_one_plot(tmp_path):
    """`single_{layer}` and `random_{layer}` over an explicit block list are both layer sweeps and are drawn in
    one per-layer plot (s_k beside its random control), with every point in its CSV."""
    spec = {
        "base": [],
        "single_{layer}": {"sweep": {"layer": [0, 6, 12]}, "interventions": []},
        "random_{layer}": {"sweep": {"layer": [0, 6, 12]}, "interventions": []},
    }
    acc = {"base": (4, 4), "single_0": (8, 8), "single_6": (12, 12), "single_12": (16, 16)}
    acc.update({"random_0": (5, 5), "random_6": (3, 3), "random_12": (6, 6)})
    out = _run(tmp_path, acc=acc, spec=spec, reference=None)
    write_report(Results.load(out))
    report = out / "report"
    table = pd.read_csv(report / "sweep_per_layer_m_mini_acc_lenient.csv")
    got = {(r.sweep, r.layer): r["mean"] for _, r in table.iterrows()}
    assert got == {
        ("single_{layer}", 0): 40.0,
        ("single_{layer}", 6): 60.0,
        ("single_{layer}", 12): 80.0,
        ("random_{layer}", 0): 25.0,
        ("random_{layer}", 6): 15.0,
        ("random_{layer}", 12): 30.0,
    }
    assert (report / "sweep_per_layer_m_mini_acc_lenient.png").is_file()
    assert not list(report.glob("sweep_single_layer_*")) and not list(report.glob("sweep_random_layer_*"))
