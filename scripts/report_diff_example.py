"""Writes docs/report-diff-example.md: a real `mechsteer diff` of two runs of one small study (the embedded
model on 48 `mini` problems, greedy; run A steers with the bundled all-layer vectors, run B (profile `last`)
with the bundled last-layer vector), and the paper-shaped accuracy table of run A with its Relative columns.
Every number in the output file comes from these runs. About two minutes on 2 CPU cores.

    PYTHONPATH=$PWD python scripts/report_diff_example.py [--work DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY = """\
name: report_diff_demo
description: Embedded model, 48 mini problems, greedy; all-layer vectors (A) vs the last-layer vector (B).
models:
  smol: {id: smollm2-135m, dtype: auto, device: auto}
vectors:
  trained: {kind: bundled, name: smollm2-135m/all_layers}
  random_control: {kind: random, seed: 1, norm_like: trained}
conditions:
  base: []
  steered: [{kind: add, vector: trained}]
  random_control: [{kind: add, vector: random_control}]
evaluation: {tasks: [mini], protocol: greedy, limit: 48, max_new_tokens: 64, batch_size: 16, reference: steered}
readouts:
  first_token: {kind: first_token, task: mini, limit: 48, track: [To], batch_size: 16}
profiles:
  last:
    vectors: {trained: {kind: bundled, name: smollm2-135m/last}}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/mechsteer-report-diff-example")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "report_diff_demo.yaml").write_text(STUDY)
    exe = [sys.executable, "-m", "mechsteer.cli.app"]
    t0 = time.perf_counter()
    for profile in ([], ["-p", "last"]):
        subprocess.run([*exe, "run", "report_diff_demo.yaml", *profile, "--threads", "1"], cwd=work, check=True)
    seconds = time.perf_counter() - t0

    from mechsteer.comparison import diff

    a, b = work / "outputs" / "report_diff_demo", work / "outputs" / "report_diff_demo-last"
    d = diff(a, b, seed=0)
    d.write(work / "diff")
    paper = (a / "report" / "paper_table.md").read_text()
    text = [
        "<!-- written by scripts/report_diff_example.py; do not edit by hand -->",
        "# Example: `mechsteer diff` and the paper-shaped table (real runs)",
        "",
        f"Command: `PYTHONPATH=$PWD python scripts/report_diff_example.py` (this invocation: {seconds:.0f} s "
        "for both `mechsteer run`s; cells already recorded are not run again). Study:",
        "",
        "```yaml",
        STUDY.rstrip(),
        "```",
        "",
        "## `mechsteer diff outputs/report_diff_demo outputs/report_diff_demo-last --out diff/`",
        "",
        d.to_markdown().split("\n", 5)[-1].replace("## ", "### "),
        "",
        "## Run A's paper-shaped table (`report/paper_table.md`)",
        "",
        paper.replace("## ", "### "),
        "",
    ]
    out = REPO / "docs" / "report-diff-example.md"
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
