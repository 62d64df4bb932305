"""Copy one plot and one table of a real study report into the README (no figure typed by hand).

    mechsteer run studies/logit_lens.yaml
    python scripts/readme_report.py --from outputs/logit_lens --plot 'vector_stats_cosine_*all_layers*' \\
        --table vector_stats.md
    python benchmarks/collect.py        # fills the README block results:example_report

`--from` is the output folder of a run (the one holding plan.json, cells/ and report/). `--plot` is a glob
pattern matching exactly one PNG under its report/ (".png" is added when missing), `--table` one table there
(a .md table is copied as is; a .csv is rendered as Markdown: its first `--max-rows` rows, the `--columns`
given). Both files are
copied into docs/example_report/ (emptied first), and `benchmarks/results/example_report.md` (the Markdown
snippet: the table, the image link, the study, the cells' commit and dates, and the commands) and
`example_report.json` are written.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "example_report"
RESULTS = REPO / "benchmarks" / "results"
STEM = "example_report"


class UsageError(Exception):
    """A wrong argument: printed as one line, exit 1."""


def find_one(report: Path, pattern: str, suffixes: tuple[str, ...]) -> Path:
    """The single file under `report` matching the glob `pattern` with one of `suffixes`."""
    if not Path(pattern).suffix and len(suffixes) == 1:
        pattern += suffixes[0]
    hits = sorted(p for p in report.glob(pattern) if p.is_file() and p.suffix in suffixes)
    if len(hits) == 1:
        return hits[0]
    avail = sorted(str(p.relative_to(report)) for s in suffixes for p in report.rglob(f"*{s}"))
    if not hits:
        raise UsageError(f"{report}: nothing matches {pattern!r}; there are: {', '.join(avail) or 'no such files'}")
    raise UsageError(f"{report}: {pattern!r} matches {len(hits)} files, give one: " + ", ".join(p.name for p in hits))


def table_markdown(path: Path, max_rows: int, columns: list[str] | None = None) -> tuple[str, int, int]:
    """(Markdown of the table, rows shown, rows in the file). A CSV shows its first `max_rows` rows and, when
    given, only `columns` (in that order; an unknown name is an error listing the columns); numbers with 4
    significant digits."""
    if path.suffix == ".md":
        if columns:
            raise UsageError(f"--columns works on a .csv table, not on {path.name}")
        text = path.read_text(encoding="utf-8").strip()
        n = max(0, sum(1 for ln in text.splitlines() if ln.startswith("|")) - 2)
        return text, n, n
    import pandas as pd

    df = pd.read_csv(path)
    if columns:
        unknown = [c for c in columns if c not in df.columns]
        if unknown:
            raise UsageError(f"{path.name} has no column {', '.join(unknown)}; it has: {', '.join(df.columns)}")
        df = df[columns]
    shown = df.head(max_rows).astype(object)
    shown = shown.where(shown.notna(), None)  # empty cells print as "-", not "nan"
    return shown.to_markdown(index=False, floatfmt=".4g", missingval="-"), len(shown), len(df)


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def provenance(output_dir: Path) -> dict:
    """Study, profile, spec file, and the commits and times the recorded cells carry."""
    from mechsteer.results import Results

    res = Results.load(output_dir)
    root = output_dir.resolve().parent  # the run's --output-dir
    records = [res.store.read_record(h) for h in sorted({c["hash"] for c in res.recorded()})]
    if not records:
        raise UsageError(f"{output_dir}: no recorded cells (run the study first)")
    gits = [(r.get("environment") or {}).get("git") or {} for r in records]
    commits = sorted({g.get("commit") or "unknown" for g in gits})
    finished = sorted(r["timing"]["finished"] for r in records)
    spec_file = Path(records[0].get("spec_file") or f"studies/{res.study}.yaml")
    if spec_file.is_absolute() and spec_file.is_relative_to(REPO):
        spec_file = spec_file.relative_to(REPO)
    return {
        "study": res.study,
        "profile": res.profile,
        "spec_file": str(spec_file),
        "cells": len(records),
        "commits": commits,
        "dirty": any(bool(g.get("dirty")) for g in gits),
        "first_finished": finished[0],
        "last_finished": finished[-1],
        "run_command": f"mechsteer run {spec_file}"
        + (f" -p {res.profile}" if res.profile else "")
        + ("" if root == REPO / "outputs" else f" -o {_rel(root)}"),
    }


def snippet(
    prov: dict, table_md: str, shown: int, total: int, table: Path, plot: Path, command: str, columns=None
) -> str:
    """benchmarks/results/example_report.md: the README's example of a real report."""
    commit = ", ".join(c[:10] for c in prov["commits"]) + (" with uncommitted changes" if prov["dirty"] else "")
    rows = f"the first {shown} of its {total} rows" if shown < total else f"all {total} rows"
    if columns:
        rows += f", columns {', '.join(columns)}"
    return "\n".join(
        [
            f"# Example report: {prov['study']} (scripts/readme_report.py)",
            "",
            f"`{table.name}` ({rows}) and `{plot.name}`, from the report of `{prov['run_command']}` "
            f"({prov['cells']} cells, finished {prov['first_finished']} to {prov['last_finished']}, commit "
            f"{commit}); both files copied into `docs/example_report/` by `{command}`.",
            "",
            table_md,
            "",
            f"![{prov['study']}: {plot.stem}](docs/example_report/{plot.name})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", type=Path, required=True, help="output folder of a study run")
    ap.add_argument("--plot", required=True, help="glob of one PNG under its report/")
    ap.add_argument("--table", required=True, help="glob of one .md or .csv table under its report/")
    ap.add_argument("--max-rows", type=int, default=20, help="rows of a CSV table to show")
    ap.add_argument("--columns", help="comma-separated columns of a CSV table to show (default: all)")
    ap.add_argument("--docs-dir", type=Path, default=DOCS, help=argparse.SUPPRESS)
    ap.add_argument("--results-dir", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _sections import write_section

    from mechsteer.errors import MechsteerError

    report = args.source / "report"
    try:
        if not report.is_dir():
            raise UsageError(f"{args.source}: no report/ folder (give the output folder `mechsteer run` printed)")
        plot = find_one(report, args.plot, (".png",))
        table = find_one(report, args.table, (".md", ".csv"))
        prov = provenance(args.source)
        columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
        table_md, shown, total = table_markdown(table, args.max_rows, columns)
    except (UsageError, MechsteerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shutil.rmtree(args.docs_dir, ignore_errors=True)
    args.docs_dir.mkdir(parents=True)
    shutil.copy2(plot, args.docs_dir / plot.name)
    shutil.copy2(table, args.docs_dir / table.name)
    command = "python scripts/readme_report.py " + " ".join(
        shlex.quote(a)
        for a in ["--from", _rel(args.source), "--plot", args.plot, "--table", args.table]
        + (["--columns", args.columns] if args.columns else [])
        + (["--max-rows", str(args.max_rows)] if table.suffix == ".csv" else [])
    )
    text = snippet(prov, table_md, shown, total, table, plot, command, columns)
    data = {
        **prov,
        "plot": _rel(args.docs_dir / plot.name),
        "table": _rel(args.docs_dir / table.name),
        "rows_shown": shown,
        "rows": total,
        "command": command,
        "source": _rel(report),
    }
    write_section(STEM, text, data, results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
