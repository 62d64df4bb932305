"""Console output and the one error path: a MechsteerError prints one line per problem, exits 1, and never
shows a traceback. Unexpected exceptions keep their traceback (they are bugs)."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_problems(exc) -> None:
    """One line per problem; the problem's text is escaped (a file `run[abc].yaml` or a condition `base[/]`
    is shown as written, never read as rich markup)."""
    for p in exc.problems:
        err_console.print(f"[bold red]error[/]: {escape(p.format())}", markup=True, soft_wrap=True, emoji=False)


def handle_errors(fn):
    """Wrap a command: user errors -> clear lines + exit 1; Ctrl-C -> exit 130 with finished work kept."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mechsteer.errors import MechsteerError

        try:
            return fn(*args, **kwargs)
        except MechsteerError as e:
            print_problems(e)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished cells are kept; run the same command again to resume")
            sys.stderr.flush()
            raise typer.Exit(130) from None

    return wrapper
