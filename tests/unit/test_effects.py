"""The report's effects (`Results.effects()`, `comparison/effects.py`) on recorded runs with known per-problem
outcomes: every number equals an independent computation (scipy's binomial test on the discordant problems, the
Wilson interval in closed form, the paired bootstrap as one direct numpy resampling with the same seed), each
condition is compared with the baseline and with its declared control (a condition's own, a sweep template's,
or `evaluation.control`), means over seeds keep their spread, and the headline metric follows the study."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from recorded_runs import eval_cell, generate_cell, write_run
from scipy.stats import binomtest

from mechsteer.results import Results

N = 40
OUT = {
    "base": [1 if i < 12 else 0 for i in range(N)],
    "steer": [1 if 4 <= i < 32 else 0 for i in range(N)],
    "ctrl": [1 if i < 10 or i == 39 else 0 for i in range(N)],
    "s_0": [1 if i % 2 else 0 for i in range(N)],
    "s_1": [1 if i % 3 else 0 for i in range(N)],
    "r_0": [1 if i % 5 == 0 else 0 for i in range(N)],
    "r_1": [1 if i < 20 else 0 for i in range(N)],
}
SPEC = {
    "base": [],
    "steer": {"interventions": [], "control": "ctrl"},
    "ctrl": [],
    "s_{layer}": {"sweep": {"layer": [0, 1]}, "interventions": [], "control": "r_{layer}"},
    "r_{layer}": {"sweep": {"layer": [0, 1]}, "interventions": []},
}
EVAL = {"tasks": ["mini"], "protocol": "greedy", "seeds": [0]}
GEN_SEED1 = {"base": [1 if i < 16 else 0 for i in range(N)], "steer": [1 if i < 30 else 0 for i in range(N)]}


def _run(tmp_path, spec=SPEC, evaluation=EVAL, **extra):
    cells = [eval_cell("m", c, o) for c, o in OUT.items()]
    cells += [generate_cell("m", c, OUT[c], seed=0) for c in ("base", "steer")]
    cells += [generate_cell("m", c, o, seed=1) for c, o in GEN_SEED1.items()]
    cells += [generate_cell("m", "ctrl", OUT["ctrl"], seed=s) for s in (0, 1)]  # two seeds that agree
    return Results.load(
        write_run(tmp_path / "run", study="s", cells=cells, conditions_spec=spec, evaluation=evaluation, **extra)
    )


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.975)
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def _boot(d: np.ndarray, seed: int = 0, n_boot: int = 10_000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    lo, hi = np.quantile(d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1), [0.025, 0.975])
    return lo, hi


def _check_pair(row, which: str, a: list[int], b: list[int]):
    a, b = np.array(a, float), np.array(b, float)
    assert getattr(row, f"vs_{which}") == pytest.approx((b - a).mean())
    assert (getattr(row, f"vs_{which}_low"), getattr(row, f"vs_{which}_high")) == pytest.approx(_boot(b - a))
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    assert getattr(row, f"p_{which}") == pytest.approx(binomtest(only_b, only_a + only_b, 0.5).pvalue)
    assert getattr(row, f"n_{which}") == N


def test_every_condition_against_baseline_and_control_equals_a_direct_computation(tmp_path):
    r = _run(tmp_path)
    assert r.controls() == {"steer": "ctrl", "s_0": "r_0", "s_1": "r_1"}
    assert r.headline() == "acc_lenient"
    eff = r.effects()
    mini = eff[eff.measurement == "mini"].set_index("condition")
    assert list(mini.index) == list(OUT) and set(mini.metric) == {"acc_lenient"}
    for cond, outcome in OUT.items():
        row = mini.loc[cond]
        assert row.value == pytest.approx(sum(outcome) / N) and row.interval == "wilson"
        assert (row.low, row.high) == pytest.approx(_wilson(sum(outcome), N), abs=1e-12)
        assert row.n == N and row.seeds == 1 and math.isnan(row.seed_std)
    assert mini.loc["base", "role"] == "baseline" and math.isnan(mini.loc["base", "vs_baseline"])
    assert mini.loc["ctrl", "role"] == "control" and mini.loc["r_1", "role"] == "control"
    for cond in ("steer", "ctrl", "s_0", "s_1"):
        _check_pair(mini.loc[[cond]].iloc[0], "baseline", OUT["base"], OUT[cond])
    for cond, ctl in (("steer", "ctrl"), ("s_0", "r_0"), ("s_1", "r_1")):
        row = mini.loc[[cond]].iloc[0]
        assert row.control == ctl
        _check_pair(row, "control", OUT[ctl], OUT[cond])
    assert pd.isna(mini.loc["ctrl", "control"]) and math.isnan(mini.loc["ctrl", "vs_control"])
    assert mini.loc["steer", "p_control"] < 0.05 < mini.loc["ctrl", "p_baseline"]  # a real and a null effect


def test_means_over_seeds_keep_their_spread(tmp_path):
    gen = _run(tmp_path).effects().query("measurement == 'gen'").set_index("condition")
    steer = gen.loc["steer"]
    per_seed = [sum(OUT["steer"]) / N, sum(GEN_SEED1["steer"]) / N]
    assert steer.seeds == 2 and steer.seed_std == pytest.approx(np.std(per_seed, ddof=1))
    scores = (np.array(OUT["steer"], float) + np.array(GEN_SEED1["steer"], float)) / 2  # per-problem means
    base = (np.array(OUT["base"], float) + np.array(GEN_SEED1["base"], float)) / 2
    assert steer.value == pytest.approx(scores.mean()) and steer.interval == "bootstrap"
    assert (steer.low, steer.high) == pytest.approx(_boot(scores))
    assert steer.vs_baseline == pytest.approx((scores - base).mean())
    assert (steer.vs_baseline_low, steer.vs_baseline_high) == pytest.approx(_boot(scores - base))
    assert math.isnan(steer.p_baseline)  # McNemar needs one 0/1 outcome per problem
    # two outcomes per problem that happen to agree are still not one binomial draw per problem
    ctrl = gen.loc["ctrl"]
    assert ctrl.interval == "bootstrap" and (ctrl.low, ctrl.high) == pytest.approx(_boot(np.array(OUT["ctrl"], float)))
    assert ctrl.seed_std == 0.0


def test_evaluation_control_and_the_headline_metric(tmp_path):
    plain = {"base": [], "steer": [], "ctrl": [], "s_0": [], "s_1": [], "r_0": [], "r_1": []}
    r = _run(tmp_path, spec=plain, evaluation={**EVAL, "control": "ctrl"})
    assert r.controls() == {c: "ctrl" for c in plain if c != "ctrl"}
    eff = r.effects().query("measurement == 'mini'").set_index("condition")
    assert pd.isna(eff.loc["base", "control"])  # the baseline is not compared with the control
    _check_pair(eff.loc[["s_0"]].iloc[0], "control", OUT["ctrl"], OUT["s_0"])
    boxed = _run(tmp_path / "b", spec=plain, evaluation={**EVAL, "protocol": "paper"})
    assert boxed.headline() == "acc_boxed" and set(boxed.effects().metric) == {"acc_boxed"}
    chosen = _run(
        tmp_path / "c",
        spec=plain,
        evaluation={**EVAL, "protocol": "paper"},
        spec_extra={"report": {"headline": "acc_lenient"}},
    )
    assert chosen.headline() == "acc_lenient"
    assert set(chosen.effects("acc_boxed").metric) == {"acc_boxed"}


def test_plot_is_the_headline_figure(tmp_path):
    r = _run(tmp_path)
    fig = r.plot()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["mini", "gen"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == list(OUT)
    base = r.effects().query("measurement == 'mini' and condition == 'base'").iloc[0]
    dashed = [line for line in axes[0].get_lines() if line.get_linestyle() == "--"]
    assert dashed and dashed[0].get_xdata()[0] == pytest.approx(base.value * 100)
