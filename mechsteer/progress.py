"""Rich progress displays for the CLI and notebooks. `RichProgress`: study runs, one bar for cells (with ETA)
and one for the current cell (the executor's progress protocol: start_cell, advance, end_cell, message).
`RichTrainProgress`: training runs (the `train.progress.TrainProgress` protocol)."""

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
    """The study-run progress display (the executor's progress protocol): one bar for the cells, with ETA, and a
    spinner for the running cell."""

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
        """Replace the previous cell's spinner by one naming this cell (model, condition, measurement, seed)."""
        if self.inner is not None:
            self.progress.remove_task(self.inner)
        desc = escape(f"{cell.model} · {cell.condition} · {cell.measurement.id} · seed {cell.seed}")  # user text
        self.inner = self.progress.add_task(f"  {desc}", total=None)

    def advance(self, n, total=None):
        """Advance the running cell's bar by `n`, setting its total once it is known."""
        if self.inner is None:
            return
        if total is not None:
            self.progress.update(self.inner, total=total)
        if n:
            self.progress.advance(self.inner, n)

    def end_cell(self, cell, seconds):
        """Count the cell as done and print a line with its time."""
        self.progress.advance(self.cells, 1)
        self.progress.console.print(
            f"  [green]done[/] {cell.short} {escape(cell.condition)} · {escape(cell.measurement.id)} ({seconds:.1f} s)"
        )

    def message(self, text):
        """Print a dimmed line of the executor's plain text (cache states, model loads)."""
        self.progress.console.print(f"[dim]{escape(text)}[/]")


class RichTrainProgress:
    """The training progress display of `mechsteer train` (the `train.progress.TrainProgress` protocol): a bar
    with reward, loss and throughput during the step loop, one line per step and per evaluation, and the
    trainer's messages. `bar=False` (`--quiet`) keeps the lines and drops the bar."""

    def __init__(self, console: Console | None = None, bar: bool = True):
        self.console = console or Console(highlight=False)
        self.bar = bar
        self.progress: Progress | None = None
        self.task = None

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(text)

    def start(self, name: str, total: int, done: int) -> None:
        """Open the bar of run `name` at `done` of `total` steps."""
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.bar,
        )
        self.progress.__enter__()
        self.task = self.progress.add_task(escape(name), total=total, completed=done, stats="")

    def step(self, record: dict, total: int) -> None:
        """Advance the bar and print the step's reward, accuracy, loss, gradient norm, lr, length and time."""
        r = record
        if self.progress is not None:
            stats = f"reward {r['reward_mean']:+.3f} loss {r['loss']:+.4f} {r['tokens_per_s']:.0f} tok/s"
            self.progress.update(self.task, advance=1, stats=stats)
        skipped = " [yellow](all advantages 0: backward skipped)[/]" if r["backward_skipped"] else ""
        self._print(
            f"step {r['step']}/{total} reward {r['reward_mean']:+.3f} acc {r['accuracy']:.3f} "
            f"loss {r['loss']:+.5f} |g| {r['grad_norm']:.3g} lr {r['lr']:.2e} len {r['mean_len']:.1f} "
            f"signal {r['groups_with_signal']}/{r['groups']} {r['t_step']:.1f} s{skipped}"
        )

    def eval(self, record: dict) -> None:
        """Print the held-out accuracy (lenient, and boxed) of each decoding the evaluation ran."""
        parts = [
            f"{k} {record[k]['lenient']:.3f} (boxed {record[k]['boxed']:.3f})"
            for k in ("greedy", "sampled")
            if k in record
        ]
        self._print(f"[cyan]eval @ step {record['step']}[/]: " + ", ".join(parts) + f" [{record['seconds']:.0f} s]")

    def message(self, text: str) -> None:
        """Print a line of the trainer's plain text."""
        self._print(escape(text))

    def warning(self, text: str) -> None:
        """Print a line of the trainer's plain text in yellow."""
        self._print(f"[yellow]{escape(text)}[/]")

    def end(self) -> None:
        """Close the bar (it stays on screen at its last state)."""
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None
