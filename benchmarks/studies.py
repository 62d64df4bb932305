"""Run every bundled study end to end on its default profile (the embedded model, CPU) and record its runtime.

    python benchmarks/studies.py [--only quickstart,logit_lens] [--threads 2] [--output-dir DIR] [--merge]

For every study file in `studies/` (training files are not studies: `mechsteer train` runs those), the
script first checks that the default profile can run here: it validates and plans the study, and lists
what the validated spec needs beyond the embedded model and the bundled data (a hub model, a GPU or vLLM, a
hub benchmark, a local data folder or trained vectors that are not there). A study that needs any of these
is recorded as skipped with that one-line reason. Every other study runs as `mechsteer run FILE -o ROOT
--threads N` in a subprocess, into a fresh output root (default `outputs/studies_bench/<UTC time>`), so no
cell is served from a cache. A study that fails is recorded with the last lines of its stderr, the others
still run, and the script exits 1 at the end.

Per study it records the subprocess's wall time (interpreter start, model load, every cell, the report),
the number of cells, the sum of the compute seconds the cells recorded themselves (`cell.json` timing), the
status, and the date, commit and machine facts of the sitting. It writes `benchmarks/results/studies.md`
(the table `python benchmarks/collect.py` copies into the README block `results:studies`) and
`benchmarks/results/studies.json`. `--merge` keeps the rows of studies not run this time from the previous
`studies.json`, each with its own date, commit and machine, so the set can be run in several sittings
without a stale row looking fresh.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _sections  # noqa: E402

STEM = "studies"
STUDIES = REPO / "studies"
TAIL_LINES = 15
"""Lines of a failed study's stderr kept in studies.json."""


# ---------------------------------------------------------------------------------------- which studies


def study_files(studies_dir: Path, only: list[str] | None = None) -> tuple[list[Path], list[Path]]:
    """(study files, training files) among `studies_dir/*.yaml`, sorted by name; `only` keeps those stems
    (an unknown name is an error naming the known ones)."""
    from mechsteer.spec.training import is_training_file

    files = sorted(studies_dir.glob("*.yaml"))
    if only:
        known = {f.stem: f for f in files}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise SystemExit(
                f"error: --only {','.join(unknown)}: no such file in {studies_dir} (known: {', '.join(known)})"
            )
        files = [known[n] for n in only]
    training = [f for f in files if is_training_file(f)]
    return [f for f in files if f not in training], training


def first_sentence(text: str | None) -> str:
    """The first sentence of a study's `description:` (what it reproduces), on one line."""
    if not text:
        return ""
    one = " ".join(str(text).split())
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z(\"'`])", one)
    return one[: m.start()] if m else one


def description(path: Path) -> str:
    """First sentence of the file's top-level `description:` (read as plain YAML, so an invalid study still
    gets its row)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ""
    return first_sentence(doc.get("description") if isinstance(doc, dict) else None)


def offline_needs(loaded) -> list[str]:
    """What the validated default profile of a study needs beyond the embedded model, the bundled data and this
    CPU machine (hub models, a GPU or vLLM, hub benchmarks, local data or vector files that are not there), as
    short phrases; empty when it runs here. Validation alone does not say this (it is offline and torch-free
    by design, and a hub id is a valid model), so these facts are read from the validated spec."""
    from mechsteer.spec.models import EMBEDDED_MODELS

    spec = loaded.spec
    hub_models, gpu, hub_data, missing = [], [], [], []
    for name, m in spec.models.items():
        if m.id not in EMBEDDED_MODELS and not (loaded.resolve_path(m.id) / "config.json").is_file():
            hub_models.append(m.id)
        if m.device.startswith("cuda"):
            gpu.append(f"{name} on {m.device}")
        if (m.backend or spec.backend) == "vllm":
            gpu.append(f"{name} on vLLM")
    sources = []
    if spec.evaluation is not None:
        sources += [(t, spec.evaluation.data_dir) for t in spec.evaluation.tasks]
    sources += [(getattr(r, "task", None), getattr(r, "data_dir", None)) for r in spec.readouts.values()]
    for task, data_dir in sources:
        if task in (None, "mini"):
            continue
        if data_dir is None:
            hub_data.append(task)
        elif not (loaded.resolve_path(data_dir) / task / "test.jsonl").is_file():
            missing.append(f"{data_dir}/{task}/test.jsonl")
    for v in spec.vectors.values():
        path = getattr(v, "path", None)
        if path and not loaded.resolve_path(path).is_file():
            missing.append(path)
    needs = [
        ("hub models", hub_models),
        ("a GPU", gpu),
        ("hub benchmarks", hub_data),
        ("files that are not here", missing),
    ]
    return [f"{what}: {', '.join(dict.fromkeys(items))}" for what, items in needs if items]


def skip_reason(path: Path, output_root: Path) -> tuple[str | None, object]:
    """(why the default profile cannot run here, or None; the plan when it can). Validates and plans the study
    (a MechsteerError's first line is the reason), then checks `offline_needs`."""
    from mechsteer.api import load_study
    from mechsteer.errors import MechsteerError

    try:
        study = load_study(path)
        needs = offline_needs(study.loaded)
        if needs:
            return "needs " + "; ".join(needs), None
        return None, study.plan(None, output_root)
    except MechsteerError as e:
        return str(e).splitlines()[0], None


# ---------------------------------------------------------------------------------------- measuring a run


def cell_timings(output_dir: Path, since: datetime | None = None) -> dict:
    """Cells recorded in a study's output folder (`cells/<hash>/` with a readable record, as the store counts
    them): how many, how many started at or after `since` (computed by this run), and the sum of the compute
    seconds each cell recorded."""
    from mechsteer.engine.store import CellStore

    store = CellStore(output_dir / "cells")
    n = fresh = 0
    seconds = 0.0
    root = output_dir / "cells"
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith(".") or not d.is_dir() or not store.is_done(d.name):
            continue
        timing = store.read_record(d.name).get("timing") or {}
        n += 1
        seconds += float(timing.get("seconds") or 0.0)
        started = timing.get("started")
        if since is not None and started and datetime.fromisoformat(started) >= since.replace(microsecond=0):
            fresh += 1
    return {"cells": n, "cells_computed": fresh if since is not None else None, "cell_seconds": round(seconds, 3)}


def stderr_tail(text: str, n: int = TAIL_LINES) -> list[str]:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return lines[-n:]


def run_study(path: Path, plan, root: Path, threads: int, progress=None, label: str | None = None) -> dict:
    """Run one study in a subprocess into `root`; its stdout/stderr go to `root/logs/`. Returns the measured
    part of its row."""
    out_dir = Path(plan.output_dir)
    expected = len(plan.unique_cells())
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args = ["run", str(path), "-o", str(root), "--threads", str(threads), "-q"]
    cmd = [sys.executable, "-m", "mechsteer.cli.app", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = datetime.now(UTC)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    task = progress.add_task(label or path.stem, total=expected) if progress is not None else None
    t0 = time.perf_counter()
    with open(logs / f"{path.stem}.out", "w") as out, open(logs / f"{path.stem}.err", "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        while proc.poll() is None:
            if progress is not None:
                done = len(list((out_dir / "cells").glob("[!.]*/cell.json"))) if (out_dir / "cells").is_dir() else 0
                progress.update(task, completed=done)
            time.sleep(0.5)
    wall = time.perf_counter() - t0
    timings = cell_timings(out_dir, since=started)
    if progress is not None:
        progress.update(task, completed=timings["cells"], visible=False)
    row = {
        "date": started.isoformat(timespec="seconds"),
        "load_avg_1m_at_start": round(load, 2) if load is not None else None,
        "status": "ok" if proc.returncode == 0 else "failed",
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 1),
        "cells_planned": expected,
        **timings,
        "output_dir": _rel(out_dir),
        "command": "mechsteer run " + " ".join([_rel(path), "-o", _rel(root), "--threads", str(threads), "-q"]),
    }
    if proc.returncode != 0:
        row["stderr_tail"] = stderr_tail((logs / f"{path.stem}.err").read_text(errors="replace"))
    return row


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


# ---------------------------------------------------------------------------------------- rows and table


def merge_rows(previous: list[dict], new: list[dict], known: list[str] | None = None) -> list[dict]:
    """This sitting's rows, plus the previous rows of studies not in it (unchanged: their own date, commit
    and machine). Rows of studies no longer in `known` (when given) are dropped. Sorted by study."""
    ran = {r["study"] for r in new}
    kept = [r for r in previous if r["study"] not in ran and (known is None or r["study"] in known)]
    return sorted([*kept, *new], key=lambda r: r["study"])


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def status_text(row: dict) -> str:
    if row["status"] == "ok":
        return "ok"
    if row["status"] == "skipped":
        return f"skipped: {row['reason']}"
    last = (row.get("stderr_tail") or ["(no stderr)"])[-1]
    return f"failed (exit {row.get('exit_code')}): {last[:160]}"


def table(rows: list[dict]) -> str:
    """The Markdown table of the README block: one row per study."""
    head = "| study | what it reproduces | cells | wall time | cells' compute | status | date (UTC) | commit |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        ran = r["status"] != "skipped"
        commit = (r.get("commit") or "?")[:10] + (" (dirty)" if r.get("dirty") else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{r['file']}`",
                    _cell(r.get("reproduces") or ""),
                    str(r["cells"]) if ran and r.get("cells") is not None else "-",
                    _duration(r.get("wall_seconds")) if ran else "-",
                    _duration(r.get("cell_seconds")) if ran else "-",
                    _cell(status_text(r)),
                    r["date"][:16].replace("T", " "),
                    commit,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def section(rows: list[dict]) -> list[str]:
    """benchmarks/results/studies.md: the table, then each sitting's command and machine."""
    lines = [
        "# Every study, end to end (benchmarks/studies.py)",
        "",
        "Each study's default profile (the embedded SmolLM2-135M-Instruct on the CPU) run with `mechsteer run` "
        "into a fresh output folder, so nothing came from a cache. Wall time = the whole subprocess (start-up, "
        "model load, every cell, the report); cells' compute = the sum of the seconds the cells recorded. "
        "Studies whose default profile needs a hub model, a GPU or data that is not here are listed as skipped "
        "with the reason; training files (`mechsteer train`) are not studies and are not listed.",
        "",
        table(rows),
        "",
    ]
    sittings: dict[str, dict] = {}
    for r in rows:
        if r["status"] != "skipped":
            sittings.setdefault(r["sitting"], r)
    for sid, r in sorted(sittings.items()):
        studies = ", ".join(x["study"] for x in rows if x.get("sitting") == sid and x["status"] != "skipped")
        lines += [f"Sitting {sid} ({studies}): `{r['script_command']}`, {r['threads']} torch thread(s) per study", ""]
        lines += _sections.facts_lines(r["machine"]) + [""]
    return lines


def load_previous(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return list(data.get("rows", []))


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated study names (file stems); default: every study")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per study (passed to mechsteer run)")
    ap.add_argument("--output-dir", type=Path, help="fresh output root (default outputs/studies_bench/<UTC time>)")
    ap.add_argument("--merge", action="store_true", help="keep the previous rows of studies not run this time")
    ap.add_argument("--studies-dir", type=Path, default=STUDIES, help=argparse.SUPPRESS)
    ap.add_argument("--results-dir", type=Path, default=_sections.RESULTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    _sections.setup_env()
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mechsteer.engine.provenance import git_revision

    torch.set_num_threads(args.threads)  # so the recorded machine facts name the studies' thread count
    console = Console(stderr=True)
    now = datetime.now(UTC)
    root = (args.output_dir or REPO / "outputs" / "studies_bench" / now.strftime("%Y%m%d-%H%M%S")).resolve()
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    files, training = study_files(args.studies_dir, only)
    for f in training:
        console.print(f"[dim]not a study (training file, run by `mechsteer train`): {_rel(f)}[/]")

    git = git_revision()
    sitting = {
        "sitting": now.strftime("%Y-%m-%d %H:%M"),
        "date": now.isoformat(timespec="seconds"),
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "threads": args.threads,
        "script_command": _sections.command_line(),
        "machine": _sections.machine_facts(),
    }
    checked = []
    for f in files:
        reason, plan = skip_reason(f, root)
        if plan is not None and Path(plan.output_dir).exists() and any(Path(plan.output_dir).iterdir()):
            console.print(f"[red]error[/]: {plan.output_dir} is not empty (choose a fresh --output-dir)")
            return 2
        checked.append((f, reason, plan))

    json_path = args.results_dir / f"{STEM}.json"
    previous = load_previous(json_path) if args.merge else []
    known = [f.stem for f in study_files(args.studies_dir)[0]]
    rows: list[dict] = []

    def write() -> None:  # after every study, so an interrupted sitting keeps what it measured
        # re-read the file each time: another sitting running at once may have written rows meanwhile
        out = merge_rows(load_previous(json_path) or previous, rows, known) if args.merge else rows
        _sections.write_section(STEM, section(out), {"rows": out}, results_dir=args.results_dir)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells")]
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        for i, (f, reason, plan) in enumerate(checked, 1):
            base = {"study": f.stem, "file": _rel(f), "reproduces": description(f), **sitting}
            if reason is not None:
                rows.append({**base, "status": "skipped", "reason": reason})
                progress.console.print(f"[{i}/{len(checked)}] [yellow]skipped[/] {f.stem}: {reason}")
                continue
            row = {**base, **run_study(f, plan, root, args.threads, progress, f"[{i}/{len(checked)}] {f.stem}")}
            rows.append(row)
            write()
            colour = "green" if row["status"] == "ok" else "red"
            progress.console.print(
                f"[{i}/{len(checked)}] [{colour}]{row['status']}[/] {f.stem}: {row['cells']} cells, "
                f"wall {_duration(row['wall_seconds'])}, cells' compute {_duration(row['cell_seconds'])}"
            )
            if row["status"] != "ok":
                progress.console.print("\n".join(f"    {ln}" for ln in row["stderr_tail"][-5:]))

    write()
    failed = [r["study"] for r in rows if r["status"] == "failed"]
    console.print(f"output root: {root}")
    if failed:
        console.print(f"[red]failed[/]: {', '.join(failed)} (stderr in {root / 'logs'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
