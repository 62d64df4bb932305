"""What a training run tells its caller while it runs: the progress protocol of `Trainer` and `train_per_block`.

Library code never prints: the trainer reports each finished step and evaluation as its metrics record, and
anything else a user should read (resuming, an earlier run's files removed, the best checkpoint) as a line of
plain text. The default sink ignores all of it, so tests, scripts and notebooks train silently; the CLI
passes `mechsteer.progress.RichTrainProgress`, which draws the progress bar and the per-step lines.
"""

from __future__ import annotations


class TrainProgress:
    """The training progress protocol, doing nothing: subclass it and override what you want to show.

    Call order of one run: `message`s and the evaluation before training (`eval`), then `start`, a `step` per
    optimizer step (with an `eval` after the steps that evaluate), then `end` (also when a step raises), then
    the messages about the finished run. `train_per_block` sends one such sequence per block."""

    def start(self, name: str, total: int, done: int) -> None:
        """The step loop of run `name` begins: `total` optimizer steps, `done` of them already (resumed)."""

    def step(self, record: dict, total: int) -> None:
        """Optimizer step `record["step"]` (1-based) of `total` finished; `record` is its metrics.jsonl line."""

    def eval(self, record: dict) -> None:
        """A held-out evaluation finished; `record` is its metrics.jsonl line (`greedy` / `sampled` accuracy)."""

    def message(self, text: str) -> None:
        """A line of plain text for the user (not markup)."""

    def warning(self, text: str) -> None:
        """A line of plain text about something the user should change (not markup)."""

    def end(self) -> None:
        """The step loop is over (finished, or left by an exception)."""
