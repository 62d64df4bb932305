"""`mechsteer.comparison`: two recorded runs with known per-problem outcomes; the paired statistics are checked against
a direct computation (scipy's binomial test on the same 2x2 table, a hand-written bootstrap), the matching by
name and by relative depth, and the errors for different studies and disjoint problems."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from recorded_runs import eval_cell, generate_cell, write_run
from scipy.stats import binomtest

from mechsteer.comparison import diff, mcnemar_exact, paired_bootstrap_ci, relative_layer
from mechsteer.errors import MechsteerError

# 40 problems: A right on the first 20; B right on problems 5..34 -> A-only 5 (0..4), B-only 15 (20..34)
N = 40
A_BASE = [1 if i < 20 else 0 for i in range(N)]
B_BASE = [1 if 5 <= i < 35 else 0 for i in range(N)]


def _runs(tmp_path):
    a = write_run(
        tmp_path / "a",
        study="s",
        cells=[
            eval_cell("m", "base", A_BASE),
            eval_cell("m", "steer", [1] * 30 + [0] * 10),
            generate_cell("m", "base", A_BASE, seed=0),
            generate_cell("m", "base", A_BASE, seed=1),
        ],
    )
    b = write_run(
        tmp_path / "b",
        study="s",
        cells=[
            eval_cell("m", "base", B_BASE),
            eval_cell("m", "steer", [1] * 30 + [0] * 10),
            generate_cell("m", "base", B_BASE, seed=0),
            generate_cell("m", "base", A_BASE, seed=1),
        ],
    )
    return a, b


def test_paired_statistics_match_a_direct_computation(tmp_path):
    a, b = _runs(tmp_path)
    d = diff(a, b, seed=3, n_boot=4000)
    row = d.paired[(d.paired.condition == "base") & (d.paired.kind == "eval") & (d.paired.metric == "acc_lenient")]
    assert len(row) == 1
    row = row.iloc[0]
    assert row.n_shared == N
    assert row.acc_a == pytest.approx(20 / N) and row.acc_b == pytest.approx(30 / N)
    assert row.delta == pytest.approx(10 / N)
    # the same 2x2 table by hand: discordant 5 (A only) and 15 (B only)
    assert (row.right_only_a, row.right_only_b) == (5, 15)
    assert row.p_mcnemar == pytest.approx(binomtest(15, 20, 0.5).pvalue)
    assert row.p_mcnemar < 0.05
    # an independent bootstrap with the same generator and seed
    diffs = np.array(B_BASE, float) - np.array(A_BASE, float)
    rng = np.random.default_rng(3)
    boot = diffs[rng.integers(0, N, size=(4000, N))].mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert (row.ci_low, row.ci_high) == pytest.approx((lo, hi))
    assert row.ci_low < 10 / N < row.ci_high and row.ci_low > 0
    # deterministic for a seed, different for another
    again = diff(a, b, seed=3, n_boot=4000).paired
    pd.testing.assert_frame_equal(again, d.paired)
    other = diff(a, b, seed=4, n_boot=4000).paired
    assert not np.allclose(other.ci_low.to_numpy(), d.paired.ci_low.to_numpy())


def test_identical_condition_and_averaged_scores(tmp_path):
    a, b = _runs(tmp_path)
    d = diff(a, b, n_boot=500)
    steer = d.paired[(d.paired.condition == "steer") & (d.paired.metric == "acc_lenient")].iloc[0]
    assert (steer.delta, steer.ci_low, steer.ci_high, steer.p_mcnemar) == (0.0, 0.0, 0.0, 1.0)
    # generate readout over two seeds: B's seed 0 differs, seed 1 equals A -> per-problem means are 0, 0.5, 1
    gen = d.paired[(d.paired.kind == "generate") & (d.paired.metric == "acc_lenient")].iloc[0]
    expected = (np.array(B_BASE) + np.array(A_BASE)) / 2 - np.array(A_BASE)
    assert gen.delta == pytest.approx(expected.mean()) and gen.delta != 0
    assert pd.isna(gen.p_mcnemar), "McNemar needs 0/1 scores; averaged scores get the bootstrap only"
    # readout metrics side by side: mean_len is 10 + seed in both runs
    side = d.readouts()
    assert side.loc[("m", "base", "gen", "mean_len"), "delta"] == 0.0
    assert side.loc[("m", "base", "gen", "acc_lenient"), "delta"] == pytest.approx(expected.mean())


def test_a_folder_diffed_with_itself_shows_zero(tmp_path):
    a, _ = _runs(tmp_path)
    d = diff(a, a, n_boot=200)
    assert (d.metrics.delta == 0).all() and (d.paired.delta == 0).all()
    assert (d.paired.ci_low == 0).all() and (d.paired.ci_high == 0).all()
    assert set(d.paired.p_mcnemar.dropna()) == {1.0}
    assert d["delta"].abs().max() == 0  # the metrics table's column, as the earlier API returned


def test_renderings_and_files(tmp_path):
    a, b = _runs(tmp_path)
    d = diff(a, b, n_boot=200)
    files = d.write(tmp_path / "out")
    assert sorted(p.name for p in files) == ["diff.json", "diff.md", "matches.csv", "metrics.csv", "paired.csv"]
    back = pd.read_csv(tmp_path / "out" / "paired.csv")
    assert back.p_mcnemar.tolist()[:1] == pytest.approx(d.paired.p_mcnemar.tolist()[:1])
    data = json.loads(d.to_json())
    assert len(data["paired"]) == len(d.paired) and data["study"] == "s"
    md = d.to_markdown()
    assert "+25.0" in md and "5 / 15" in md  # base eval: delta 25 pp, discordant 5 / 15
    assert len(d.rich_tables()) == 2


def test_layers_matched_by_relative_depth(tmp_path):
    spec = {"base": [], "single_{layer}": {"sweep": {"layer": "layers"}, "interventions": []}}
    a = write_run(
        tmp_path / "a",
        study="s",
        n_layers={"m": 4},
        conditions_spec=spec,
        cells=[eval_cell("m", "base", A_BASE)] + [eval_cell("m", f"single_{i}", A_BASE) for i in range(4)],
    )
    b = write_run(
        tmp_path / "b",
        study="s",
        n_layers={"m": 7},
        conditions_spec=spec,
        cells=[eval_cell("m", "base", A_BASE)]
        + [eval_cell("m", f"single_{i}", B_BASE if i == 6 else A_BASE) for i in range(7)],
    )
    d = diff(a, b, n_boot=200)
    pairs = dict(zip(d.matches.condition_a, d.matches.condition_b, strict=True))
    # layer l of 4 -> round(l * 6 / 3) of 7
    assert pairs == {
        "base": "base",
        "single_0": "single_0",
        "single_1": "single_2",
        "single_2": "single_4",
        "single_3": "single_6",
    }
    assert [relative_layer(x, 28, 32) for x in (0, 13, 26, 27)] == [0, 15, 30, 31]  # 13 * 31 / 27 = 14.9
    last = d.paired[(d.paired.condition == "single_3") & (d.paired.metric == "acc_lenient")].iloc[0]
    assert last.condition_b == "single_6" and last.delta == pytest.approx(10 / N)
    assert d.unmatched_b == ["single_1", "single_3", "single_5"]


def test_different_studies_and_disjoint_problems_are_errors(tmp_path):
    a, _ = _runs(tmp_path)
    other = write_run(tmp_path / "o", study="other", cells=[eval_cell("m", "base", A_BASE)])
    with pytest.raises(MechsteerError, match="different studies"):
        diff(a, other)
    disjoint = write_run(tmp_path / "d", study="s", cells=[eval_cell("m", "base", A_BASE, prefix="q")])
    with pytest.raises(MechsteerError, match="share no problems"):
        diff(a, disjoint)


def test_statistics_helpers_on_edge_cases():
    assert mcnemar_exact(np.array([1, 0, 1]), np.array([1, 0, 1])) == (0, 0, 1.0)
    only_a, only_b, p = mcnemar_exact(np.array([1] * 6 + [0] * 4), np.array([0] * 6 + [0] * 4))
    assert (only_a, only_b) == (6, 0) and p == pytest.approx(2 * 0.5**6)
    lo, hi = paired_bootstrap_ci(np.zeros(5), np.ones(5), n_boot=100)
    assert (lo, hi) == (1.0, 1.0)


# ---------------------------------------------------------------- two models inside one folder (--models)


def _two_model_run(tmp_path):
    """One folder, two models of different depth: `small` (4 blocks) right on A_BASE, `deep` (7 blocks) on
    B_BASE; a layer sweep on each; `deep` also ran a condition `small` did not."""
    spec = {"base": [], "single_{layer}": {"sweep": {"layer": "layers"}, "interventions": []}}
    cells = [eval_cell("small", "base", A_BASE), eval_cell("deep", "base", B_BASE)]
    cells += [eval_cell("small", f"single_{i}", A_BASE) for i in range(4)]
    cells += [eval_cell("deep", f"single_{i}", B_BASE if i == 6 else A_BASE) for i in range(7)]
    cells += [eval_cell("deep", "only_deep", A_BASE)]
    return write_run(tmp_path / "both", study="s", n_layers={"small": 4, "deep": 7}, conditions_spec=spec, cells=cells)


def test_two_models_of_one_folder_are_diffed_like_two_folders(tmp_path):
    folder = _two_model_run(tmp_path)
    d = diff(folder, models=("small", "deep"), seed=3, n_boot=2000)
    assert d.models == ("small", "deep") and d.a == d.b == str(folder)
    base = d.paired[(d.paired.condition == "base") & (d.paired.metric == "acc_lenient")].iloc[0]
    assert (base.model, base.model_b) == ("small", "deep")
    # by hand: small right on 0..19, deep on 5..34 -> deep - small = (30 - 20) / 40, discordant 5 / 15
    assert (base.acc_a, base.acc_b, base.delta) == pytest.approx((20 / N, 30 / N, 10 / N))
    assert (base.right_only_a, base.right_only_b) == (5, 15)
    assert base.p_mcnemar == pytest.approx(binomtest(15, 20, 0.5).pvalue)
    # the same rows as a diff of two single-model folders holding the same cells
    a = write_run(tmp_path / "a", study="s", n_layers={"m": 4}, cells=[eval_cell("m", "base", A_BASE)])
    b = write_run(tmp_path / "b", study="s", n_layers={"m": 7}, cells=[eval_cell("m", "base", B_BASE)])
    two = diff(a, b, seed=3, n_boot=2000).paired
    cols = ["acc_a", "acc_b", "delta", "ci_low", "ci_high", "right_only_a", "right_only_b", "p_mcnemar"]
    pd.testing.assert_series_equal(
        two[two.metric == "acc_lenient"].iloc[0][cols], base[cols], check_names=False, check_dtype=False
    )
    # layer sweeps by relative depth: block l of 4 -> round(l * 6 / 3) of 7
    pairs = dict(zip(d.matches.condition_a, d.matches.condition_b, strict=True))
    assert {k: v for k, v in pairs.items() if k.startswith("single_")} == {
        "single_0": "single_0",
        "single_1": "single_2",
        "single_2": "single_4",
        "single_3": "single_6",
    }
    assert "relative depth (4 -> 7 layers)" in set(d.matches.matched_by)
    last = d.paired[(d.paired.condition == "single_3") & (d.paired.metric == "acc_lenient")].iloc[0]
    assert last.condition_b == "single_6" and last.delta == pytest.approx(10 / N)
    assert d.unmatched_b == ["single_1", "single_3", "single_5", "only_deep"]
    # swapping the models flips every sign
    back = diff(folder, models=["deep", "small"], seed=3, n_boot=2000)
    flipped = back.paired[(back.paired.condition == "base") & (back.paired.metric == "acc_lenient")].iloc[0]
    assert flipped.delta == pytest.approx(-base.delta) and flipped.p_mcnemar == pytest.approx(base.p_mcnemar)


def test_two_models_renderings_name_the_models(tmp_path):
    folder = _two_model_run(tmp_path)
    d = diff(folder, models=("small", "deep"), n_boot=200)
    md = d.to_markdown()
    assert md.startswith("# diff of `s`: model deep - model small")
    assert "- A: model `small`" in md and "- B: model `deep`" in md and "small -> deep" in md
    data = json.loads(d.to_json())
    assert data["models"] == ["small", "deep"] and data["paired"][0]["model_b"] == "deep"
    (paired,) = d.rich_tables()  # no readout here; the title names the models, rows do not repeat them
    assert "model deep - model small" in str(paired.title) and "model" not in [c.header for c in paired.columns]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda f, o: diff(f, models=("small", "nope")), r"declares no model 'nope' .*small, deep"),
        (lambda f, o: diff(f, models=("small", "small")), "a model compared with itself"),
        (lambda f, o: diff(f, models=("small",)), "give two model names"),
        (lambda f, o: diff(f, models="small"), "give two model names"),
        (lambda f, o: diff(f, o, models=("small", "deep")), "two folders were given"),
        (lambda f, o: diff(f), r"one folder .* and no models to compare"),
    ],
)
def test_two_models_errors_say_what_is_wrong(tmp_path, call, message):
    folder = _two_model_run(tmp_path)
    other = write_run(tmp_path / "o", study="s", cells=[eval_cell("m", "base", A_BASE)])
    with pytest.raises(MechsteerError, match=message):
        call(folder, other)


def test_a_declared_model_without_recorded_cells_is_named_as_such(tmp_path):
    folder = _two_model_run(tmp_path)
    plan = json.loads((folder / "plan.json").read_text())
    plan["models"].append("later")
    (folder / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(MechsteerError, match="has no recorded cell of model 'later'"):
        diff(folder, models=("small", "later"))


def test_a_sweep_over_an_explicit_block_list_is_matched_by_relative_depth(tmp_path):
    """single_layer.yaml sweeps blocks [0, 6, ..., 29] of SmolLM2 (30) and its gemma profile the blocks at the
    same relative depths of Gemma (18): round(l * 17 / 29)."""
    smol_blocks = [0, 6, 12, 18, 24, 28, 29]
    gemma_blocks = [relative_layer(b, 30, 18) for b in smol_blocks]
    assert gemma_blocks == [0, 4, 7, 11, 14, 16, 17]
    runs = []
    for name, blocks, depth in (("a", smol_blocks, 30), ("b", gemma_blocks, 18)):
        spec = {"base": [], "single_{layer}": {"sweep": {"layer": blocks}, "interventions": []}}
        cells = [eval_cell("m", "base", A_BASE)] + [eval_cell("m", f"single_{b}", A_BASE) for b in blocks]
        runs.append(write_run(tmp_path / name, study="s", n_layers={"m": depth}, conditions_spec=spec, cells=cells))
    d = diff(*runs, n_boot=200)
    pairs = dict(zip(d.matches.condition_a, d.matches.condition_b, strict=True))
    assert pairs == {"base": "base", **{f"single_{a}": f"single_{b}" for a, b in zip(smol_blocks, gemma_blocks)}}
    assert not d.unmatched_a and not d.unmatched_b
