"""Build the README's Quickstart table from the Quickstart's own report (no figure typed by hand).

    mechsteer run studies/quickstart.yaml            # writes outputs/quickstart/report/results.csv
    python scripts/quickstart_table.py [--report-dir outputs/quickstart/report]
    python benchmarks/collect.py                     # copies the table into the README block results:quickstart

Reads the report's long table (`results.csv`: one row per cell x metric) and writes
`benchmarks/results/quickstart.md`: per condition, greedy lenient and boxed accuracy (the `evaluation:` cells,
lm-eval), T=1 lenient accuracy (readout `t1`), p("To") as first token (readout `first_token`) and the greedy
mean length, each the mean over the recorded seeds.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
LABELS = {
    "base": "base",
    "steered": "steered (bundled all-layer vectors)",
    "random_control": "random control (same norms)",
}
COLUMNS = [  # (header, measurement, metric, rate)
    ("greedy acc. (lenient)", "mini", "acc_lenient", True),
    ("T=1 acc. (lenient)", "t1", "acc_lenient", True),
    ("boxed acc.", "mini", "acc_boxed", True),
    ('p("To") as first token', "first_token", "p(To)", True),
    ("mean length (greedy)", "mini", "mean_len", False),
]


def quickstart_table(results: pd.DataFrame) -> str:
    """The Markdown table from a report's long table (columns model, condition, measurement, metric, value)."""
    means = results.groupby(["condition", "measurement", "metric"])["value"].mean()
    conds = [c for c in LABELS if c in set(results.condition)] + sorted(set(results.condition) - set(LABELS))
    head = "| condition | " + " | ".join(h for h, *_ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for c in conds:
        cells = []
        for _, meas, metric, rate in COLUMNS:
            v = means.get((c, meas, metric))
            cells.append("-" if v is None else (f"{100 * v:.1f}%" if rate else f"{v:.1f}"))
        lines.append(f"| {LABELS.get(c, c)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-dir", type=Path, default=REPO / "outputs" / "quickstart" / "report")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quickstart.md")
    args = ap.parse_args(argv)
    csv = args.report_dir / "results.csv"
    if not csv.is_file():
        print(f"error: {csv} not found (run `mechsteer run studies/quickstart.yaml` first)", file=sys.stderr)
        return 1
    df = pd.read_csv(csv)
    from importlib.metadata import version

    from mechsteer.results import Results

    res = Results.load(args.report_dir.parent)
    records = [res.store.read_record(h) for h in sorted({c["hash"] for c in res.recorded()})]
    cell_s = sum(r["timing"]["seconds"] for r in records)
    dtypes = sorted(
        {f"{r['model_provenance']['dtype']} ({r['model_provenance'].get('dtype_reason', 'as named')})" for r in records}
    )
    text = "\n".join(
        [
            "# Quickstart table (scripts/quickstart_table.py)",
            "",
            quickstart_table(df),
            "",
            (
                f"From `{csv.relative_to(REPO) if csv.is_relative_to(REPO) else csv}` ({df.cell.nunique()} cells); "
                f"machine: {platform.machine()}, torch {version('torch')}; model dtype {', '.join(dtypes)}; the cells took "
                f"{cell_s:.0f} s of compute. Rates in %, means over seeds."
            ),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
