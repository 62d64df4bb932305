"""`mechsteer` commands: validate, schema, plan, run, report (and train, registered from its own module).

Each command is thin: parse -> load and validate -> call the library -> render. Heavy imports (torch,
transformers, lm-eval) happen inside the commands that run models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mechsteer.cli.output import console, handle_errors, print_problems

app = typer.Typer(
    name="mechsteer",
    help="Declarative mechanistic steering studies: YAML spec -> steered runs -> the paper's tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StudyFile = Annotated[Path, typer.Argument(help="Study YAML file.", show_default=False)]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", help="Profile to merge (e.g. mini, paper).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="At most N problems/prompts per measurement.")]
OutputOpt = Annotated[Path, typer.Option("--output-dir", "-o", help="Root folder for results.")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Local benchmark folder with <task>/test.jsonl "
                                                    "files; overrides evaluation.data_dir and readouts' data_dir.")]

SCHEMA_DIR = Path("schemas")


@app.command()
@handle_errors
def validate(files: Annotated[list[Path], typer.Argument(help="Study files to check.")]) -> None:
    """Check syntax, schema and cross-references of study files (and every profile they define)."""
    from mechsteer.errors import MechsteerError
    from mechsteer.spec.loader import load_study

    failed = 0
    for f in files:
        try:
            from mechsteer.spec.training import is_training_file, load_train_spec

            load = load_train_spec if is_training_file(f) else load_study  # studies and training files
            ls = load(f)
            profiles = list(ls.spec.profiles)
            for p in profiles:
                load(f, p)
            extra = f" (profiles: {', '.join(profiles)})" if profiles else ""
            console.print(f"[green]ok[/] {f}{extra}")
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
        console.print(f"wrote {path}")
    if stale:
        console.print(f"[red]out of date[/]: {', '.join(stale)} (run `mechsteer schema`)")
        raise typer.Exit(1)


def schemas() -> dict[str, dict]:
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
def plan(study: StudyFile, profile: ProfileOpt = None, limit: LimitOpt = None,
         output_dir: OutputOpt = Path("outputs"), data_dir: DataDirOpt = None) -> None:
    """Show the compiled cells (model x condition x measurement x seed), their hashes and cache state."""
    from rich.table import Table

    from mechsteer.engine.plan import compile_study
    from mechsteer.engine.store import CellStore
    from mechsteer.spec.loader import load_study

    p = compile_study(load_study(study, profile, data_dir=data_dir), limit=limit, output_root=output_dir)
    store = CellStore(p.cells_dir)
    t = Table(title=f"{p.study}" + (f" [{p.profile}]" if p.profile else "") + f" -> {p.output_dir}")
    for col in ("cell", "model", "condition", "measurement", "seed", "status"):
        t.add_column(col)
    seen = set()
    for c in p.cells:
        status = "cached" if store.is_done(c.hash) else ("shared" if c.hash in seen else "to run")
        seen.add(c.hash)
        t.add_row(c.short, c.model, c.condition, c.measurement.id, str(c.seed), status)
    console.print(t)
    uniq = p.unique_cells()
    done = sum(store.is_done(c.hash) for c in uniq)
    console.print(f"{len(uniq)} unique cells: {done} cached, {len(uniq) - done} to run")


@app.command()
@handle_errors
def run(study: StudyFile, profile: ProfileOpt = None, limit: LimitOpt = None,
        output_dir: OutputOpt = Path("outputs"), data_dir: DataDirOpt = None,
        force: Annotated[bool, typer.Option("--force", help="Re-run cells even when cached.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False) -> None:
    """Run every cell of a study that is not cached yet, then write its tables."""
    from mechsteer.engine.execute import execute_plan
    from mechsteer.engine.plan import compile_study
    from mechsteer.engine.store import CellStore
    from mechsteer.report import write_report
    from mechsteer.spec.loader import load_study

    p = compile_study(load_study(study, profile, data_dir=data_dir), limit=limit, output_root=output_dir)
    store = CellStore(p.cells_dir)
    todo = [c for c in p.unique_cells() if force or not store.is_done(c.hash)]
    console.print(f"[bold]{p.study}[/]" + (f" (profile {p.profile})" if p.profile else "")
                  + f": {len(p.unique_cells())} cells, {len(todo)} to run -> {p.output_dir}")
    if quiet or not todo:
        summary = execute_plan(p, force=force)
    else:
        from mechsteer.cli.progress import RichProgress

        with RichProgress(len(todo)) as prog:
            summary = execute_plan(p, force=force, progress=prog)
    report = write_report(p)
    console.print(f"ran {len(summary.executed)} cells, {len(summary.cached)} cached, in {summary.seconds:.0f} s")
    typer.echo((report.parent / "table.md").read_text())  # plain echo: Markdown tables must not wrap
    console.print(f"report: {report}")


@app.command()
@handle_errors
def report(study: StudyFile, profile: ProfileOpt = None, limit: LimitOpt = None,
           output_dir: OutputOpt = Path("outputs"), data_dir: DataDirOpt = None) -> None:
    """Rebuild a study's tables from its recorded cells (no model is loaded)."""
    from mechsteer.engine.plan import compile_study
    from mechsteer.report import write_report
    from mechsteer.spec.loader import load_study

    p = compile_study(load_study(study, profile, data_dir=data_dir), limit=limit, output_root=output_dir)
    path = write_report(p)
    typer.echo((path.parent / "table.md").read_text())
    console.print(f"report: {path}")


def _register_optional_commands() -> None:
    try:
        from mechsteer.cli.train import train_command
    except ImportError:
        return
    app.command("train")(handle_errors(train_command))


_register_optional_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
