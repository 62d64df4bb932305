"""The transfer section (paper Table 1) from recorded cells with known accuracies: rows = recipient models,
columns = Base and one per donor, values = the six-benchmark Average computed per seed (or the mean of the
benchmarks recorded), and the row-normalised table (acc - base) / (native - base), against numbers worked out
by hand below, with the undefined cases (native == base, no native result) as NaN with a note."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from recorded_runs import eval_cell, write_run

from mechsteer.report import write_report
from mechsteer.report.transfer import transfer_sweeps
from mechsteer.results import Results

SIX = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench"]
SPEC = {
    "base": [],
    "from_{donor}": {"sweep": {"donor": ["qwen", "math", "instruct"]}, "interventions": []},
}
# problems right out of 10 per benchmark, in SIX's order: (recipient, condition, seed) -> counts
LENIENT = {
    ("qwen", "base", 0): [1, 1, 2, 4, 2, 2],  # 12 / 60 = 20.0 %
    ("qwen", "from_qwen", 0): [3, 2, 4, 8, 4, 3],  # 24 / 60 = 40.0 % (native)
    ("qwen", "from_math", 0): [2, 2, 3, 6, 3, 2],  # 18 / 60 = 30.0 %
    ("qwen", "from_instruct", 0): [1, 1, 1, 3, 1, 1],  # 8 / 60 = 13.33 %
    ("math", "base", 0): [3, 3, 4, 6, 3, 3],  # 22 / 60 = 36.67 %
    ("math", "from_qwen", 0): [4, 4, 5, 8, 4, 5],  # 30 / 60 = 50.0 %
    ("math", "from_qwen", 1): [5, 5, 6, 9, 5, 6],  # 36 / 60 = 60.0 % -> mean 55.0, std 7.07
    ("math", "from_qwen", 2): [9, 9, 9, 9, 9],  # no olympiadbench: no Average for seed 2 (left out)
    ("math", "from_math", 0): [4, 4, 5, 9, 4, 4],  # 30 / 60 = 50.0 % (native)
    ("math", "from_instruct", 0): [3, 3, 4, 6, 3, 3],  # 22 / 60 = 36.67 %
    ("instruct", "base", 0): [2, 2, 3, 7, 3, 3],  # 20 / 60 = 33.33 %
    ("instruct", "from_qwen", 0): [3, 3, 4, 7, 3, 4],  # 24 / 60 = 40.0 %
    ("instruct", "from_math", 0): [2, 2, 2, 5, 2, 2],  # 15 / 60 = 25.0 %
    ("instruct", "from_instruct", 0): [2, 2, 3, 7, 3, 3],  # 20 / 60 = 33.33 % = base: not normalisable
}
RAW = {  # Table 1 by hand, in %
    "qwen": {"Base": 12 / 60 * 100, "qwen": 24 / 60 * 100, "math": 18 / 60 * 100, "instruct": 8 / 60 * 100},
    "math": {"Base": 22 / 60 * 100, "qwen": (30 + 36) / 2 / 60 * 100, "math": 30 / 60 * 100, "instruct": 22 / 60 * 100},
    "instruct": {"Base": 20 / 60 * 100, "qwen": 24 / 60 * 100, "math": 15 / 60 * 100, "instruct": 20 / 60 * 100},
}
NORMALISED = {  # (acc - base) / (native - base), by hand
    "qwen": {"qwen": 1.0, "math": (30 - 20) / (40 - 20), "instruct": (40 / 3 - 20) / (40 - 20)},  # 0.5, -1/3
    "math": {
        "qwen": (55 - 110 / 3) / (50 - 110 / 3),  # (55/3) / (40/3) = 1.375
        "math": 1.0,
        "instruct": 0.0,
    },
    "instruct": {"qwen": math.nan, "math": math.nan, "instruct": math.nan},  # native == base
}


def _cells(counts: dict, tasks: list[str]) -> list[dict]:
    out = []
    for (model, cond, seed), ks in counts.items():
        for task, k in zip(tasks, ks, strict=False):
            out.append(eval_cell(model, cond, [1] * k + [0] * (10 - k), seed=seed, task=task, prefix=task))
    return out


def _run(root, counts=LENIENT, tasks=SIX, spec=SPEC):
    ev = {"tasks": tasks, "protocol": "paper", "seeds": [0, 1, 2], "reference": None}
    return write_run(root, study="transfer", cells=_cells(counts, tasks), conditions_spec=spec, evaluation=ev)


def _md_tables(md: str) -> list[list[list[str]]]:
    """The pipe tables of a Markdown text: rows of stripped cells, header first (the separator left out)."""
    tables, current = [], []
    for line in md.split("\n") + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|:- "):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def _load(out, key):
    t = pd.read_csv(out / f"transfer_from_donor_{key}.csv", keep_default_na=False, na_values=[""])
    return t.set_index(["recipient", "column"])


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    """(run folder, report folder) of the LENIENT run, reported once for the tests that only read the report."""
    run = _run(tmp_path_factory.mktemp("transfer") / "run")
    return run, write_report(Results.load(run)).parent


def test_table_1_and_its_row_normalisation_match_the_hand_computed_ones(default_report):
    run, out = default_report
    assert transfer_sweeps(Results.load(run)) == [
        ("from_{donor}", {"qwen": "from_qwen", "math": "from_math", "instruct": "from_instruct"}, False)
    ]
    t = _load(out, "lenient")
    assert list(dict.fromkeys(t.index.get_level_values(0))) == ["qwen", "math", "instruct"]
    for recipient, row in RAW.items():
        assert list(t.loc[recipient].index) == ["Base", "qwen", "math", "instruct"]
        for column, value in row.items():
            assert t.loc[(recipient, column), "acc"] == pytest.approx(value), (recipient, column)
        for column, value in NORMALISED[recipient].items():
            got = t.loc[(recipient, column), "normalised"]
            assert math.isnan(got) if math.isnan(value) else got == pytest.approx(value), (recipient, column)
    assert t.loc[("qwen", "instruct"), "normalised"] == pytest.approx(-1 / 3)
    assert t.loc[("math", "qwen"), "normalised"] == pytest.approx(1.375)
    # seed 2 of math/from_qwen lacks a benchmark: no Average, left out (else the mean would be (50+60+75)/3)
    assert t.loc[("math", "qwen"), "seeds"] == 2 and t.loc[("math", "qwen"), "std"] == pytest.approx(
        pd.Series([50.0, 60.0]).std(ddof=1)
    )
    assert t.loc[("instruct", "math"), "note"] == "native equals base (33.3): nothing to normalise by"
    assert t.loc[("math", "qwen"), "condition"] == "from_qwen" and t.loc[("math", "Base"), "condition"] == "base"
    # every number names its cells: six benchmarks x seeds
    res = Results.load(run).table()
    mq = res[(res.model == "math") & (res.condition == "from_qwen")]
    assert t.loc[("math", "qwen"), "cells"] == " ".join(sorted(set(mq.cell)))
    assert len(t.loc[("math", "qwen"), "cells"].split()) == 6 + 6 + 5
    assert len(t.loc[("qwen", "Base"), "cells"].split()) == 6
    # the boxed table: every boxed accuracy is 0, so native == base everywhere
    b = _load(out, "boxed")
    assert (b.acc == 0).all() and b.normalised.isna().all()
    # Markdown: the paper's layout, lenient table after the boxed one
    md = (out / "transfer.md").read_text()
    lenient = md[md.index("Lenient accuracy") :]
    assert "Values: the six-benchmark Average in %" in lenient
    raw, normalised = _md_tables(lenient)[:2]
    assert raw == [
        ["recipient", "Base", "qwen", "math", "instruct"],
        ["qwen", "20.0", "40.0", "30.0", "13.3"],
        ["math", "36.7", "55.0 ± 7.1", "50.0", "36.7"],
        ["instruct", "33.3", "40.0", "25.0", "33.3"],
    ]
    assert normalised == [
        ["recipient", "qwen", "math", "instruct"],
        ["qwen", "1.00", "0.50", "-0.33"],
        ["math", "1.38", "1.00", "0.00"],
        ["instruct", "-", "-", "-"],
    ]
    assert "- instruct (qwen, math, instruct): native equals base (33.3): nothing to normalise by" in lenient


def _two_task_counts():
    # (math500, aime24) out of 10; donors are qwen and math only, and math's native cell is missing
    return {
        ("qwen", "base", 0): [4, 2],  # (40 + 20) / 2 = 30
        ("qwen", "from_qwen", 0): [8, 4],  # 60 (native)
        ("qwen", "from_math", 0): [6, 2],  # 40
        ("math", "base", 0): [6, 2],  # 40
        ("math", "from_qwen", 0): [8, 4],  # 60
        ("instruct", "base", 0): [5, 1],  # 30
        ("instruct", "from_qwen", 0): [7, 3],  # 50
        ("instruct", "from_math", 0): [5, 3],  # 40
    }


SPEC2 = {"base": [], "from_{donor}": {"sweep": {"donor": ["qwen", "math"]}, "interventions": []}}


@pytest.mark.parametrize("spec", [SPEC2, {}], ids=["recorded sweep", "names only"])
def test_mean_of_the_benchmarks_present_and_missing_native_results(tmp_path, spec):
    out = write_report(Results.load(_run(tmp_path / "run", _two_task_counts(), ["math500", "aime24"], spec))).parent
    t = _load(out, "lenient")
    assert t.loc[("qwen", "Base"), "acc"] == pytest.approx((40 + 20) / 2)
    assert t.loc[("qwen", "math"), "acc"] == pytest.approx((60 + 20) / 2)
    assert t.loc[("qwen", "math"), "normalised"] == pytest.approx((40 - 30) / (60 - 30))  # 1/3
    assert t.loc[("instruct", "qwen"), "acc"] == pytest.approx(50.0)
    assert math.isnan(t.loc[("instruct", "qwen"), "normalised"])
    assert t.loc[("instruct", "qwen"), "note"] == "no native column: instruct is not among the donors"
    assert math.isnan(t.loc[("math", "math"), "acc"]) and pd.isna(t.loc[("math", "math"), "cells"])  # no cell
    assert t.loc[("math", "qwen"), "note"] == "no native result (`from_math` on math)"
    md = (out / "report.md").read_text()
    assert "Values: the mean of AIME24, MATH500 in %" in md
    assert ("recognised from their names" in md) == (spec == {})


def test_no_transfer_section_without_a_donor_sweep(tmp_path):
    spec = {"base": [], "from_{donor}": {"sweep": {"donor": ["qwen", "llama"]}, "interventions": []}}
    out = write_report(Results.load(_run(tmp_path / "run", spec=spec))).parent  # llama is no model key
    assert not (out / "transfer.md").exists()
    assert "Transfer of vectors" not in (out / "report.md").read_text()


def test_whole_report_has_the_transfer_section_in_markdown_and_html(default_report):
    _, out = default_report
    for name in ("transfer_from_donor_lenient.csv", "transfer_from_donor_boxed.csv", "transfer.md"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert md.index("## Benchmark accuracy (paper layout)") < md.index("## Transfer of vectors across models")
    assert md.index("## Transfer of vectors across models") < md.index("## Files")
    page = (out / "report.html").read_text()
    assert "<h2>Transfer of vectors across models (paper Table 1)</h2>" in page
    assert "<td>55.0 ± 7.1</td>" in page.replace('<td class="num">', "<td>") and "<td>1.38</td>" in page.replace(
        '<td class="num">', "<td>"
    )


STUDY = """
name: transfer_compiled
models:
  a: {id: smollm2-135m, dtype: float32}
  b: {id: smollm2-135m, dtype: bfloat16}
vectors:
  a_vecs: {kind: bundled, name: smollm2-135m/all_layers}
  b_vecs: {kind: random, seed: 0, norm_like: a_vecs}
conditions:
  base: []
  from_{donor}:
    sweep: {donor: [a, b]}
    interventions: [{kind: transfer, vector: "{donor}_vecs", donor: smollm2-135m}]
evaluation: {tasks: [mini], protocol: greedy}
"""


def test_the_donor_sweep_as_the_compiler_records_it(tmp_path):
    """A real compiled plan (no model run): the cells' resolved spec carries the sweep's list of donors, so the
    table is found from the recorded template, not from names."""
    from mechsteer.engine.plan import compile_study
    from mechsteer.engine.store import CellStore
    from mechsteer.spec.loader import load_study

    (tmp_path / "t.yaml").write_text(STUDY)
    plan = compile_study(load_study(tmp_path / "t.yaml"), output_root=tmp_path / "out")
    acc = {  # problems right out of 10: (recipient, condition)
        ("a", "base"): 2,
        ("a", "from_a"): 6,  # native
        ("a", "from_b"): 3,  # (30 - 20) / (60 - 20) = 0.25
        ("b", "base"): 4,
        ("b", "from_a"): 7,  # (70 - 40) / (50 - 40) = 3.0
        ("b", "from_b"): 5,  # native
    }
    assert {(c.model, c.condition) for c in plan.cells} == set(acc)
    assert len({c.hash for c in plan.cells}) == 6  # the dtypes differ, so no cell is shared
    store = CellStore(plan.cells_dir)
    for c in plan.cells:
        k = acc[(c.model, c.condition)]
        record = {"hash": c.hash, "model": c.model}
        store.write(c.hash, record, {"acc_lenient": k / 10, "acc_boxed": 0.0}, [])
    plan.write_summary()
    results = Results.load(plan.output_dir)
    assert results.sweeps() == {"from_{donor}": {"donor": ["a", "b"]}}
    out = write_report(results).parent
    t = _load(out, "lenient")
    assert [t.loc[("a", c), "acc"] for c in ("Base", "a", "b")] == pytest.approx([20.0, 60.0, 30.0])
    assert [t.loc[("b", c), "acc"] for c in ("Base", "a", "b")] == pytest.approx([40.0, 70.0, 50.0])
    assert t.loc[("a", "b"), "normalised"] == pytest.approx((30 - 20) / (60 - 20))
    assert t.loc[("b", "a"), "normalised"] == pytest.approx((70 - 40) / (50 - 40))
    assert "recognised from their names" not in (out / "transfer.md").read_text()
