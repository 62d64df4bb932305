"""`mechsteer` commands: validate, schema, plan, run, report (and train, select-checkpoints: registered from
cli/train.py).

Each command is thin: parse -> load and validate -> call the library -> render. Heavy imports (torch,
transformers, lm-eval) happen inside the commands that run models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mechsteer.cli.output import console, handle_errors, print_problems
from mechsteer.spec.base import LIMIT_MAX
from mechsteer.spec.bounds import DEFAULT_MAX_CELLS

app = typer.Typer(
    name="mechsteer",
    help="Declarative mechanistic steering studies: YAML spec -> steered runs -> the paper's tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StudyFile = Annotated[Path, typer.Argument(help="Study YAML file.", show_default=False)]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", help="Profile to merge (e.g. mini, paper).")]
LimitOpt = Annotated[
    Optional[int],
    typer.Option("--limit", min=1, max=LIMIT_MAX, help="At most N problems/prompts per measurement."),
]
OutputOpt = Annotated[Path, typer.Option("--output-dir", "-o", help="Root folder for results.")]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        help="Local benchmark folder with <task>/test.jsonl "
        "files; overrides evaluation.data_dir and readouts' data_dir.",
    ),
]

MaxCellsOpt = Annotated[
    int,
    typer.Option(
        "--max-cells",
        min=1,
        help="Refuse a study that compiles to more cells (model x condition x measurement x seed) than this.",
    ),
]

FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help="text: a summary table sized to the terminal and the report's paths; json: the same facts for scripts.",
    ),
]

SCHEMA_DIR = Path("schemas")


def _check_format(fmt: str) -> None:
    if fmt not in ("text", "json"):
        raise typer.BadParameter(f"--format {fmt!r}: use text or json")


@app.command()
@handle_errors
def validate(
    files: Annotated[list[Path], typer.Argument(help="Study files to check.")],
    max_cells: MaxCellsOpt = DEFAULT_MAX_CELLS,
) -> None:
    """Check syntax, schema and cross-references of study files (and every profile they define)."""
    import functools

    from mechsteer.errors import MechsteerError
    from mechsteer.spec.loader import load_study

    failed = 0
    for f in files:
        try:
            from mechsteer.spec.training import is_training_file, load_train_spec

            # studies and training files (which compile to no cells)
            load = load_train_spec if is_training_file(f) else functools.partial(load_study, max_cells=max_cells)
            ls = load(f)
            profiles = list(ls.spec.profiles)
            for p in profiles:
                load(f, p)
            extra = f" (profiles: {', '.join(profiles)})" if profiles else ""
            console.print(f"[green]ok[/] {escape(str(f))}{escape(extra)}")
        except MechsteerError as e:
            failed += 1
            print_problems(e)
    if failed:
        raise typer.Exit(1)


@app.command()
@handle_errors
def schema(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where to write the schema files.")] = SCHEMA_DIR,
    check: Annotated[bool, typer.Option("--check", help="Fail if the files differ from the models.")] = False,
) -> None:
    """Write the JSON Schemas of study (and training) files, for editors and CI drift checks."""
    stale = []
    for name, schema_obj in schemas().items():
        path = out_dir / name
        text = json.dumps(schema_obj, indent=2, ensure_ascii=False) + "\n"
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(escape(f"wrote {path}"))
    if stale:
        console.print(f"[red]out of date[/]: {escape(', '.join(stale))} (run `mechsteer schema`)")
        raise typer.Exit(1)


def schemas() -> dict[str, dict]:
    """The JSON Schemas `mechsteer schema` writes, by file name (study, and training when its module is there)."""
    from mechsteer.spec.study import json_schema

    out = {"study.schema.json": json_schema()}
    try:
        from mechsteer.spec.training import json_schema as train_schema
    except ImportError:
        return out
    out["train.schema.json"] = train_schema()
    return out


@app.command()
@handle_errors
def plan(
    study: Annotated[
        Optional[Path],
        typer.Argument(
            help="Study YAML file (with --estimate --all: the folder of studies, default studies).", show_default=False
        ),
    ] = None,
    profile: ProfileOpt = None,
    limit: LimitOpt = None,
    output_dir: OutputOpt = Path("outputs"),
    data_dir: DataDirOpt = None,
    max_cells: MaxCellsOpt = DEFAULT_MAX_CELLS,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Tokens each cell prefills, generates and teacher-forces, and GPU hours on a stated GPU "
            "(mechsteer/data/throughput.yaml; docs/rehearsal.md).",
        ),
    ] = False,
    all_paper: Annotated[
        bool,
        typer.Option(
            "--all",
            help="With --estimate: every paper* profile of every study in the folder and the training runs they "
            "read, with the total against the goal (8 GPUs x 24 h).",
        ),
    ] = False,
    throughput: Annotated[
        Optional[Path],
        typer.Option("--throughput", help="A throughput file whose rows, GPUs and assumptions replace the package's."),
    ] = None,
    gpu: Annotated[
        Optional[str], typer.Option("--gpu", help="GPU kind of the estimate (default: the table's).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json (with --estimate).")] = "text",
) -> None:
    """Show the compiled cells (model x condition x measurement x seed), their hashes and cache state; with
    --estimate, the tokens and GPU hours they take."""
    from rich.table import Table

    from mechsteer.api import load_study, plan_status

    _check_format(fmt)
    if not estimate and (all_paper or throughput or gpu or fmt != "text"):
        raise typer.BadParameter("--all, --throughput, --gpu and --format go with --estimate")
    if estimate:
        from mechsteer.cli import estimate as render
        from mechsteer.engine.estimate import estimate_paper, estimate_plan, load_throughput

        table = load_throughput(throughput)
        gpu = gpu or table.gpu
        if all_paper:
            est = estimate_paper(study or Path("studies"), table, gpu)
            typer.echo(json.dumps(est, indent=1)) if fmt == "json" else render.render_paper(console, est, table)
            return
        if study is None:
            raise typer.BadParameter("give a study file (or --all)")
        p = load_study(study, profile, data_dir=data_dir, max_cells=max_cells).plan(limit, output_dir)
        cells, sources, notes = estimate_plan(p, table, gpu)
        if fmt == "json":
            typer.echo(render.plan_json(p, cells, sources, notes, table, gpu))
        else:
            render.render_plan(console, p, cells, sources, notes, table, gpu)
        return
    if study is None:
        raise typer.BadParameter("give a study file")
    st = load_study(study, profile, data_dir=data_dir, max_cells=max_cells)
    p = st.plan(limit, output_dir)
    status = plan_status(p)
    t = Table(title=escape(f"{p.study}" + (f" [{p.profile}]" if p.profile else "") + f" -> {p.output_dir}"))
    for col in ("cell", "model", "condition", "measurement", "seed", "status"):
        t.add_column(col)
    for r in status.itertuples():  # names are user text: escaped, so `[x]` in a name is shown, not read as markup
        t.add_row(
            *(escape(str(v)) for v in (r.cell, r.model, r.condition, r.measurement, r.seed)), _STATUS_TEXT[r.state]
        )
    console.print(t)
    uniq = status.drop_duplicates("hash")
    counts = uniq.state.value_counts()
    stale = uniq[uniq.state.isin(["stale", "damaged"])]
    console.print(
        f"{len(uniq)} unique cells: {counts.get('fresh', 0)} cached, "
        f"{len(uniq) - counts.get('fresh', 0)} to run" + (f" ({len(stale)} stale or damaged)" if len(stale) else "")
    )
    for r in stale.itertuples():
        console.print(escape(f"  {r.cell} {r.state}: {r.reason}"))
    _print_notes(p)
    if (status.backend == "vllm").any() or status.backend_note.notna().any():
        on = uniq[uniq.backend == "vllm"]
        console.print(f"backend vllm: {len(on)} evaluation cells run on bias-compiled checkpoints")
        for cond, note in uniq[uniq.backend_note.notna()].groupby("condition").backend_note.first().items():
            console.print(escape(f"  {cond} stays on HF: {note}"))


def _print_notes(p, out=console) -> None:
    """What the cell keys could not pin down (`Plan.notes`), one line each, plain text."""
    for note in p.notes:
        out.print(f"note: {note}", markup=False, soft_wrap=True)


_STATUS_TEXT = {
    "fresh": "cached",
    "missing": "to run",
    "shared": "shared",
    "stale": "stale (to run)",
    "damaged": "damaged (to run)",
}


@app.command()
@handle_errors
def run(
    study: StudyFile,
    profile: ProfileOpt = None,
    limit: LimitOpt = None,
    output_dir: OutputOpt = Path("outputs"),
    data_dir: DataDirOpt = None,
    max_cells: MaxCellsOpt = DEFAULT_MAX_CELLS,
    force: Annotated[bool, typer.Option("--force", help="Re-run cells even when cached.")] = False,
    reuse_stale: Annotated[
        bool,
        typer.Option(
            "--reuse-stale",
            help="Keep cells computed by other code or package versions (recorded in each reused cell).",
        ),
    ] = False,
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch (1 is often fastest on a busy 2-core machine; with Ray: per worker).",
        ),
    ] = None,
    executor: Annotated[str, typer.Option("--executor", help="local (this process) or ray.")] = "local",
    address: Annotated[
        Optional[str], typer.Option("--address", help="Ray cluster address (default: a local Ray instance).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    fmt: FormatOpt = "text",
    rehearse: Annotated[
        bool,
        typer.Option(
            "--rehearse",
            help="Rehearse the profile before GPU time: random-weight twins of every model (same architecture, "
            "blocks and heads), stand-in data, vectors and training runs, every condition at full size, into "
            "<output>-rehearsal/ (docs/rehearsal.md).",
        ),
    ] = False,
) -> None:
    """Run every cell of a study that is not cached yet, write its report, and print a summary of the effects
    (`--format json`: the same as JSON on stdout; progress and notes then go to stderr or are left out)."""
    import time

    from mechsteer.api import load_study, plan_status, rehearsal_plan, run_plan
    from mechsteer.cli.output import err_console

    _check_format(fmt)
    out = console if fmt == "text" else err_console
    t0 = time.perf_counter()
    if rehearse:
        if data_dir is not None:
            raise typer.BadParameter("--data-dir has no effect with --rehearse (a rehearsal reads stand-in data)")
        p = rehearsal_plan(study, profile, limit=limit, output_dir=output_dir, max_cells=max_cells)
        out.print(f"[bold reverse] {escape(p.rehearsal['banner'])} [/]", soft_wrap=True)
    else:
        p = load_study(study, profile, data_dir=data_dir, max_cells=max_cells).plan(limit, output_dir)
    status = plan_status(p).drop_duplicates("hash")
    todo = len(status) if force else int((status.state != "fresh").sum())
    if reuse_stale and not force:
        todo -= int((status.state == "stale").sum())
    out.print(
        f"[bold]{escape(p.study)}[/]"
        + escape(
            (f" (profile {p.profile})" if p.profile else "") + f": {len(status)} cells, {todo} to run -> {p.output_dir}"
        )
    )
    _print_notes(p, out)
    results = run_plan(
        p,
        force=force,
        reuse_stale=reuse_stale,
        threads=threads,
        progress=not quiet and fmt == "text",
        executor=executor,
        address=address,
    )
    ran = results.run_summary
    seconds = time.perf_counter() - t0
    line = (
        f"ran {len(ran.executed)} cells, {len(ran.cached)} cached"
        + (f" ({len(ran.reused_stale)} stale reused)" if ran.reused_stale else "")
        + f", in {seconds:.0f} s"
    )
    _summary(
        results,
        fmt,
        ran=line,
        facts={
            "executed": len(ran.executed),
            "cached": len(ran.cached),
            "reused_stale": len(ran.reused_stale),
            "seconds": round(seconds, 1),
        },
    )


def _summary(results, fmt: str, *, ran: str | None = None, facts: dict | None = None) -> None:
    """The end of `run` and `report`: the summary table and the report's paths, or the JSON document."""
    from mechsteer.cli.summary import print_summary, summary_json

    if fmt == "json":
        typer.echo(summary_json(results, facts))
    else:
        print_summary(results, console, ran=ran)


@app.command()
@handle_errors
def report(
    target: Annotated[Path, typer.Argument(help="A study file, or an output folder of a run.", show_default=False)],
    profile: ProfileOpt = None,
    limit: LimitOpt = None,
    output_dir: OutputOpt = Path("outputs"),
    data_dir: DataDirOpt = None,
    max_cells: MaxCellsOpt = DEFAULT_MAX_CELLS,
    fmt: FormatOpt = "text",
) -> None:
    """Rebuild a study's report from its recorded cells (no model is loaded) and print a summary of the
    effects and the report's paths (`--format json`: as JSON)."""
    import warnings

    from mechsteer.api import load_results, load_study
    from mechsteer.report import write_report
    from mechsteer.results import RehearsalWarning, Results

    _check_format(fmt)
    if target.is_dir():
        with warnings.catch_warnings():  # the summary leads with the rehearsal's banner itself
            warnings.simplefilter("ignore", RehearsalWarning)
            results = load_results(target)
    else:
        study = load_study(target, profile, data_dir=data_dir, max_cells=max_cells)
        results = Results.from_plan(study.plan(limit, output_dir))
    write_report(results)
    _summary(results, fmt)


@app.command("diff")
@handle_errors
def diff_command(
    a: Annotated[Path, typer.Argument(help="Output folder of one run.", show_default=False)],
    b: Annotated[
        Optional[Path],
        typer.Argument(
            help="Output folder of another run of the same study (leave out with --models).", show_default=False
        ),
    ] = None,
    models: Annotated[
        Optional[tuple[str, str]],
        typer.Option(
            "--models",
            help="Compare two models inside the one folder A (a study that declares both): model B - model A, "
            "named as the study names them.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table (rich), markdown, csv or json.")] = "table",
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Also write diff.md, paired.csv, metrics.csv, matches.csv and diff.json here."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the paired bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option("--n-boot", min=100, help="Bootstrap resamples.")] = 10_000,
) -> None:
    """Compare two runs of the same study, B - A (or two models of one run: `diff FOLDER --models A B`):
    conditions matched by name (layer sweeps by relative depth), paired statistics on shared problems (exact
    McNemar, paired bootstrap 95% CI), readout metrics side by side."""
    from mechsteer.api import diff

    if fmt not in ("table", "markdown", "csv", "json"):
        raise typer.BadParameter(f"--format {fmt!r}: use table, markdown, csv or json")
    d = diff(a, b, models=models, seed=seed, n_boot=n_boot)
    if fmt == "json":
        typer.echo(d.to_json())
    elif fmt == "csv":
        typer.echo(d.to_csv())
    elif fmt == "markdown":
        typer.echo(d.to_markdown())
    else:
        for table in d.rich_tables():
            console.print(table)
    if out is not None:
        for path in d.write(out):
            console.print(escape(f"wrote {path}"))


@app.command("ls")
@handle_errors
def ls_command(
    root: Annotated[Path, typer.Argument(help="Folder to look in (default: outputs).")] = Path("outputs"),
    fmt: FormatOpt = "text",
) -> None:
    """List the output folders under ROOT: study, profile, models, cells recorded / stale / damaged, the last
    run and the report's path (limited runs, `limit-N/`, marked with their limit)."""
    from mechsteer.api import list_outputs
    from mechsteer.cli.summary import ls_table

    _check_format(fmt)
    df = list_outputs(root)
    if fmt == "json":
        typer.echo(df.to_json(orient="records", indent=1))
        return
    if df.empty:
        console.print(escape(f"no output folders under {root}"))
        return
    t = ls_table(df, root, console.size.width)
    console.print(t)
    for r in df[df.note != ""].itertuples():
        console.print(escape(f"{os.path.relpath(r.folder, root)}: {r.note}"), soft_wrap=True)


def _register_optional_commands() -> None:
    try:
        from mechsteer.cli.train import select_checkpoints_command, train_command
    except ImportError:
        return
    app.command("train")(handle_errors(train_command))
    app.command("select-checkpoints")(handle_errors(select_checkpoints_command))


_register_optional_commands()


def main() -> None:
    """The `mechsteer` console script."""
    app()


if __name__ == "__main__":
    main()
