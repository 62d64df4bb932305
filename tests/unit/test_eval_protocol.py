"""The paper's evaluation protocol as numbers: samples per task, seeds, sampling settings, per-problem
avg@k / pass@1 on synthetic completions, lm-eval metric flattening, the cells a study compiles to, and the
paper-shaped table (per-seed six-benchmark Average, mean ± std over seeds)."""

from __future__ import annotations

import math
import textwrap

import pandas as pd
import pytest

from mechsteer.spec.evaluation import PAPER_AVERAGE_TASKS, EvaluationSpec

SIX = list(PAPER_AVERAGE_TASKS)


# ----------------------------------------------------------------------------------------------- spec


def test_paper_protocol_samples_and_seeds():
    ev = EvaluationSpec(tasks=SIX + ["gsm8k"], protocol="paper")
    assert {t: ev.samples_for(t) for t in ev.tasks} == {
        "aime24": 32,
        "aime25": 32,
        "amc23": 32,
        "math500": 1,
        "minerva_math": 1,
        "olympiadbench": 1,
        "gsm8k": 1,
    }
    assert ev.resolved_seeds() == [0, 1, 2]
    greedy = EvaluationSpec(tasks=SIX)
    assert greedy.protocol == "greedy" and greedy.resolved_seeds() == [0]
    assert all(greedy.samples_for(t) == 1 for t in SIX)
    small = EvaluationSpec(tasks=["aime24", "mini"], protocol="paper", samples={"aime24": 4}, seeds=[7, 8])
    assert small.samples_for("aime24") == 4 and small.resolved_seeds() == [7, 8]


def test_generation_kwargs_per_protocol():
    from mechsteer.eval.lm_eval_tasks import generation_kwargs

    assert generation_kwargs("paper", 100) == {
        "until": [],
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_gen_toks": 100,
    }
    assert generation_kwargs("greedy", 7) == {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 7}
    with pytest.raises(ValueError):
        generation_kwargs("nucleus", 7)


STUDY = """\
name: proto
models:
  m: {id: smollm2-135m}
vectors:
  r: {kind: random, norm: 2.0}
  r2: {kind: random, norm: 3.0}
conditions:
  base: []
  steer: [{kind: add, vector: r}]
  steer2: [{kind: add, vector: r2}]
evaluation:
  tasks: [aime24, math500]
  protocol: paper
  data_dir: data
profiles:
  greedy:
    evaluation: {protocol: greedy}
"""


def test_study_compiles_to_one_eval_cell_per_condition_task_seed(tmp_path):
    from mechsteer.engine.plan import compile_study
    from mechsteer.spec.loader import load_study

    (tmp_path / "s.yaml").write_text(textwrap.dedent(STUDY))
    plan = compile_study(load_study(tmp_path / "s.yaml"), output_root=tmp_path / "out")
    cells = [c for c in plan.cells if c.measurement.kind == "eval"]
    assert len(cells) == 3 * 2 * 3
    assert len({c.hash for c in cells}) == len(cells), "conditions, vectors, tasks and seeds all change the hash"
    aime = [c for c in cells if c.measurement.spec.task == "aime24"]
    assert {c.measurement.spec.samples for c in aime} == {32}
    assert {c.measurement.spec.protocol for c in cells} == {"paper"}
    greedy = compile_study(load_study(tmp_path / "s.yaml", "greedy"), output_root=tmp_path / "out")
    g_cells = [c for c in greedy.cells if c.measurement.kind == "eval"]
    assert len(g_cells) == 3 * 2 * 1 and not {c.hash for c in g_cells} & {c.hash for c in cells}


# ----------------------------------------------------------------------------------------------- scoring


def test_avg_at_k_pass_at_1_lenient_and_lengths_on_synthetic_samples():
    from mechsteer.eval.lm_eval_tasks import score_completions

    samples = ["so \\boxed{5}", "I think \\boxed{6}", "the answer is 5", "\\boxed{\\frac{10}{2}}"]
    r = score_completions(samples, "5", "qwen_math", lambda text: len(text.split()))
    assert r["acc_boxed"] == pytest.approx(2 / 4)  # avg@4: samples 1 and 4 (math-verify: 10/2 = 5)
    assert r["acc_boxed_pass1"] == 1.0
    assert r["acc_lenient"] == pytest.approx(3 / 4)  # + the unboxed "5"
    assert r["boxed_rate"] == pytest.approx(3 / 4)
    assert r["mean_len"] == [2, 3, 4, 1]
    assert r["mean_len_correct"] == [2, 1] and r["mean_len_incorrect"] == [3, 4]
    assert r["mean_len_correct_lenient"] == [2, 4, 1] and r["mean_len_incorrect_lenient"] == [3]
    first_wrong = score_completions(["\\boxed{4}", "\\boxed{5}"], "5", "qwen_math", len)
    assert first_wrong["acc_boxed_pass1"] == 0.0 and first_wrong["acc_boxed"] == 0.5


def test_aggregations_are_means_over_samples_not_problems():
    from mechsteer.eval.lm_eval_tasks import count_samples, mean_of_lists

    per_problem = [[10, 20, 30], [], [40]]
    assert mean_of_lists(per_problem) == pytest.approx(25.0)
    assert math.isnan(mean_of_lists([[], []]))
    assert count_samples(per_problem) == 4


def test_flatten_metrics_keeps_the_sample_filter_and_drops_stderr():
    from mechsteer.eval.runner import flatten_metrics

    raw = {
        "alias": "x",
        "acc_boxed,all_samples": 0.25,
        "acc_boxed_stderr,all_samples": 0.1,
        "graded,all_samples": 64,
        "acc_boxed,none": 0.9,
    }
    assert flatten_metrics(raw) == {"acc_boxed": 0.25, "n_samples": 64.0}


# ----------------------------------------------------------------------------------------------- table


def _long(values: dict) -> pd.DataFrame:
    """{(condition, task, seed): value} -> the long table rows of eval cells (metric acc_boxed)."""
    return pd.DataFrame(
        [
            {
                "model": "m",
                "condition": c,
                "measurement": t,
                "kind": "eval",
                "seed": s,
                "metric": "acc_boxed",
                "value": v,
                "cell": "x",
            }
            for (c, t, s), v in values.items()
        ]
    )


def test_average_is_per_seed_over_all_six_then_mean_and_std_over_seeds():
    from mechsteer.report.paper_table import AVERAGE, per_seed, summarise

    vals = {}
    for seed, shift in ((0, 0.0), (1, 0.06)):
        for i, t in enumerate(SIX):
            vals[("base", t, seed)] = 0.1 * i + shift  # per-seed Average = 0.25 + shift
    wide = per_seed(_long(vals), "acc_boxed")
    assert wide.loc[("m", "base", 0), AVERAGE] == pytest.approx(0.25)
    assert wide.loc[("m", "base", 1), AVERAGE] == pytest.approx(0.31)
    stats = summarise(wide, SIX, ["base"])
    row = stats.loc[("m", "base")]
    assert row[(AVERAGE, "mean")] == pytest.approx(0.28)
    assert row[(AVERAGE, "std")] == pytest.approx(pd.Series([0.25, 0.31]).std())
    assert row[(AVERAGE, "seeds")] == 2
    assert row[("amc23", "mean")] == pytest.approx(0.23)
    assert [c for c, s in stats.columns if s == "mean"] == SIX + [AVERAGE]


def test_average_needs_all_six_benchmarks():
    from mechsteer.report.paper_table import AVERAGE, per_seed, summarise

    vals = {("base", t, 0): 0.5 for t in SIX}
    vals.update({("base", t, 1): 0.5 for t in SIX[:-1]})  # seed 1 lacks OlympiadBench
    vals.update({("steer", t, 0): 0.7 for t in SIX[:-1]})  # steer never ran OlympiadBench
    stats = summarise(per_seed(_long(vals), "acc_boxed"), SIX, ["base", "steer"])
    assert stats.loc[("m", "base"), (AVERAGE, "seeds")] == 1
    assert math.isnan(stats.loc[("m", "steer"), (AVERAGE, "mean")])
    only_two = per_seed(_long({("base", "aime24", 0): 0.1, ("base", "math500", 0): 0.2}), "acc_boxed")
    assert AVERAGE not in only_two.columns


def test_table_formats_percent_mean_and_std_and_orders_conditions():
    from mechsteer.report.paper_table import format_cell, per_seed, summarise, to_csv, to_markdown

    assert format_cell(0.4567, 0.0123, 3) == "45.7 ± 1.2"
    assert format_cell(0.5, float("nan"), 1) == "50.0"
    assert format_cell(float("nan"), float("nan"), 0) == "-"
    vals = {("z", "math500", 0): 0.5, ("a", "math500", 0): 0.25, ("a", "math500", 1): 0.75}
    stats = summarise(per_seed(_long(vals), "acc_boxed"), ["math500"], ["z", "a"])
    assert [c for _, c in stats.index] == ["z", "a"]
    two = pd.concat([_long(vals), _long(vals).assign(model="b")])
    ordered = summarise(per_seed(two, "acc_boxed"), ["math500"], ["z", "a"], ["m", "b"])
    assert list(ordered.index) == [("m", "z"), ("m", "a"), ("b", "z"), ("b", "a")]
    md = to_markdown(stats)
    assert "MATH500" in md and "50.0 ± 35.4" in md
    assert to_csv(stats).splitlines()[0] == "model,condition,math500,math500_std,math500_seeds"
