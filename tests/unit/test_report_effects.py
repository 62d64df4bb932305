"""report.md and report.html lead with the answer: the effects figure first (one per model and headline
metric), then the effects table saying each condition minus the baseline (and minus its control) with its
interval and McNemar p, then the results per measurement; table rows of the effects name their own cells."""

from __future__ import annotations

import re

from recorded_runs import eval_cell, generate_cell, write_run

from mechsteer.report import write_report
from mechsteer.report.effects import delta_text, p_text
from mechsteer.results import Results

N = 32
OUT = {
    "base": [1 if i < 10 else 0 for i in range(N)],
    "steered": [1 if i < 26 else 0 for i in range(N)],
    "random_control": [1 if 2 <= i < 13 else 0 for i in range(N)],
}


def _run(tmp_path):
    cells = [eval_cell("smol", c, o) for c, o in OUT.items()]
    cells += [generate_cell("smol", c, o, name="t1") for c, o in OUT.items()]
    cells += [
        {
            "model": "smol",
            "condition": c,
            "measurement": "readout:first_token",
            "kind": "first_token",
            "seed": 0,
            "metrics": {"n": 32.0, "entropy": 1.5, "p(To)": 0.4, "top1==To": 0.3},
            "samples": [],
        }
        for c in OUT
    ]
    ev = {"tasks": ["mini"], "protocol": "greedy", "seeds": [0], "control": "random_control"}
    return Results.load(write_run(tmp_path / "run", study="quickstart", cells=cells, evaluation=ev))


def test_report_md_opens_with_the_figure_then_the_effects(tmp_path):
    r = _run(tmp_path)
    out = write_report(r).parent
    md = (out / "report.md").read_text()
    effects, results = md.index("## Effects"), md.index("## Results")
    first_image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", md)
    first_table = md.index("\n|")
    assert effects < first_image.start() < first_table < results
    assert first_image.group(1) == "effects_smol_acc_lenient.png" and (out / first_image.group(1)).is_file()
    eff = r.effects().set_index(["measurement", "condition"])
    steered = eff.loc[("mini", "steered")]
    section = md[md.index("#### mini") : md.index("#### t1")]  # one effects table per measurement
    assert "Control: `random_control`." in section
    row = next(line for line in section.split("\n") if line.startswith("| smol") and "| steered " in line)
    assert "**" in row  # significant differences are bold
    row = row.replace("**", "")
    assert delta_text(steered.vs_baseline, steered.vs_baseline_low, steered.vs_baseline_high) in row
    assert p_text(steered.p_baseline, steered.vs_baseline) in row and steered.p_baseline < 0.05
    assert delta_text(steered.vs_control, steered.vs_control_low, steered.vs_control_high) in row
    assert (out / "effects.csv").is_file()
    # every per-measurement results table has at most six metric columns (model and condition besides)
    after = md[results:]
    headers = [line for i, line in enumerate(after.split("\n")) if line.startswith("| model")]
    assert headers and all(len(h.strip("|").split("|")) <= 8 for h in headers)


def test_report_html_shows_the_figure_first_and_traces_effects_rows(tmp_path):
    r = _run(tmp_path)
    page = (write_report(r).parent / "report.html").read_text()
    titles = re.findall(r'<img [^>]*title="([^"]+)"', page)
    assert titles[0] == "effects_smol_acc_lenient.png"
    assert page.index("<img") < page.index("<table")
    steered_t1 = r.find(condition="steered", measurement="t1")["hash"][:12]
    assert f'<tr title="cells: {steered_t1}">' in page  # the row of the t1 measurement names its own cell only
