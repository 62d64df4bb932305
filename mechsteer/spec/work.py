"""The work a cell or a training run asks of a GPU, in tokens (`mechsteer plan --estimate`), torch-free.

Each measurement kind answers `work(ctx)` in its own class (`MeasurementBase.work`), from its spec and the
facts the estimator knows (`WorkContext`: the model's depth and length budget, the size of a task, the
expected prompt and completion lengths); `mechsteer.engine.estimate` turns tokens into GPU hours.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol


@dataclass(frozen=True)
class Work:
    """Tokens one cell (or training run) processes. Generated and teacher-forced tokens come as expected
    (completions of the expected length, `WorkContext.completion_tokens`) and at the cap (every sample runs to
    its `max_new_tokens`)."""

    sequences: int = 0
    """Sampled sequences (completions)."""
    prompt_tokens: int = 0
    """Prompt tokens prefilled (a prompt sampled several times is prefilled once per sample)."""
    generated: int = 0
    """Generated tokens, expected."""
    generated_cap: int = 0
    """Generated tokens if every sample ran to its cap."""
    scored: int = 0
    """Teacher-forced tokens (forward passes over prompt + completion), expected."""
    scored_cap: int = 0
    """Teacher-forced tokens at the cap."""
    trained: int = 0
    """Tokens of a forward and backward pass (training), expected."""
    trained_cap: int = 0
    """The same at the cap."""
    batch: int = 1
    """Sequences per generate call (how many decode together on HF)."""

    def __add__(self, other: Work) -> Work:
        """Sum of two works (the batch of the larger generation kept)."""
        out = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self) if f.name != "batch"}
        return Work(**out, batch=self.batch if self.generated >= other.generated else other.batch)

    def times(self, k: int) -> Work:
        """This work repeated `k` times (e.g. once per source layer)."""
        out = {f.name: getattr(self, f.name) * k for f in fields(self) if f.name != "batch"}
        return Work(**out, batch=self.batch)


class WorkContext(Protocol):
    """What a kind's `work` may ask (the estimator answers)."""

    n_layers: int
    """The model's blocks."""

    def problems(self, task: str, split: str, limit: int | None) -> int:
        """Problems a measurement reads from `task` (its size, capped by `limit`)."""

    def prompt_tokens(self, task: str | None) -> int:
        """Expected prompt length (template + problem) in tokens."""

    def budget(self, max_new_tokens: int | None, task: str | None) -> int:
        """The cap on generated tokens: `max_new_tokens`, else the model's max_length minus the prompt."""

    def completion_tokens(self, task: str | None, cap: int) -> int:
        """Expected completion length, at most `cap`."""

    def layers(self, selection) -> int:
        """How many blocks a layer selection names (`all`: every block)."""


def sampled(
    ctx: WorkContext,
    task: str | None,
    split: str,
    limit: int | None,
    samples: int,
    max_new: int | None,
    batch: int,
    *,
    passes: int = 0,
    prompts: int | None = None,
) -> Work:
    """The work of sampling `samples` completions of each problem, then teacher-forcing prompt + completion
    `passes` times (`prompts`: a number of inline prompts instead of a task)."""
    n = prompts if prompts is not None else ctx.problems(task, split, limit)
    seqs = n * samples
    p = ctx.prompt_tokens(task)
    cap = ctx.budget(max_new, task)
    exp = ctx.completion_tokens(task, cap)
    return Work(
        sequences=seqs,
        prompt_tokens=seqs * p,
        generated=seqs * exp,
        generated_cap=seqs * cap,
        scored=passes * seqs * (p + exp),
        scored_cap=passes * seqs * (p + cap),
        batch=batch,
    )


def prompts_only(ctx: WorkContext, task: str | None, split: str, limit: int | None, prompts: int | None = None) -> Work:
    """The work of one forward pass over each prompt (a next-token distribution)."""
    n = prompts if prompts is not None else ctx.problems(task, split, limit)
    return Work(prompt_tokens=n * ctx.prompt_tokens(task))
