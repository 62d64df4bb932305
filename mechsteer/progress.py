"""A rich progress display for study runs (CLI and notebooks): one bar for cells (with ETA) and one for the
current cell. It implements the executor's progress protocol (start_cell, advance, end_cell, message)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    def __init__(self, total_cells: int, console: Console | None = None):
        console = console or Console(highlight=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.total = total_cells
        self.cells = None
        self.inner = None

    def __enter__(self):
        self.progress.__enter__()
        self.cells = self.progress.add_task("cells", total=self.total)
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def start_cell(self, cell, index, total):
        if self.inner is not None:
            self.progress.remove_task(self.inner)
        desc = escape(f"{cell.model} · {cell.condition} · {cell.measurement.id} · seed {cell.seed}")  # user text
        self.inner = self.progress.add_task(f"  {desc}", total=None)

    def advance(self, n, total=None):
        if self.inner is None:
            return
        if total is not None:
            self.progress.update(self.inner, total=total)
        if n:
            self.progress.advance(self.inner, n)

    def end_cell(self, cell, seconds):
        self.progress.advance(self.cells, 1)
        self.progress.console.print(
            f"  [green]done[/] {cell.short} {escape(cell.condition)} · {escape(cell.measurement.id)} ({seconds:.1f} s)"
        )

    def message(self, text):
        self.progress.console.print(f"[dim]{escape(text)}[/]")
