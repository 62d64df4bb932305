"""Readout specs: measurements taken on a (steered) model besides benchmark evaluation.

Readouts record raw per-sample data (`samples.jsonl`) and summary metrics. Most compare nothing: the report
sets conditions side by side. A readout that compares two conditions on the same sequences does it inside its
own cell, with the compared condition bound into the cell (`token_shift` and its `reference`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mechsteer.spec.base import LIMIT_MAX
from mechsteer.spec.evaluation import KNOWN_TASKS, PROMPT_TASKS
from mechsteer.spec.kinds import readout_kind
from mechsteer.spec.kinds.measurements import MeasurementBase, resolved_limit
from mechsteer.spec.templates import PromptTemplateOrRaw


class PromptSource(MeasurementBase):
    """Prompts for a readout: inline `prompts`, or problems from a task (`mini`, or a benchmark)."""

    prompts: list[str] | None = None
    """Inline user messages."""
    task: str | None = None
    """Take problems (and gold answers) from this task, e.g. `mini` or `math500`; `deepscaler` (with
    `split: train`) is the paper's training set, whose prompts the authors' readouts analysed."""
    split: Literal["test", "train"] = "test"
    """Split of the task (the bundled `mini` task has both; benchmarks only `test`; `deepscaler` only
    `train`)."""
    limit: int | None = Field(default=None, gt=0, le=LIMIT_MAX)
    """Use at most this many problems."""
    shuffle: int | None = None
    """Shuffle the task's problems with this seed before taking `limit` (a numpy `default_rng(seed)`
    permutation, the one `datasets.Dataset.shuffle(seed=...)` draws; the authors' DeepScaleR subsets use seed 0,
    Figure 6's seed 1); null keeps the file order."""
    data_dir: str | None = None
    """Local benchmark folder (see `evaluation.data_dir`)."""
    template: PromptTemplateOrRaw = "qwen_math"
    """Prompt template: the paper's qwen_math (system prompt asking for \\boxed{}), r1, qa / qa_fewshot (base models
    answering on one line; `mechsteer.spec.templates`), or raw (user text only)."""
    conditions: list[str] | None = None
    """Run this readout only under these conditions (names or shell patterns such as `single_*`); null = all."""

    @model_validator(mode="after")
    def _one_source(self):
        if (self.prompts is None) == (self.task is None):
            raise ValueError("give exactly one of `prompts` or `task`")
        if self.shuffle is not None and self.task is None:
            raise ValueError("shuffle orders a task's problems: give `task`")
        return self

    def condition_patterns(self) -> list[str] | None:
        """The readout's `conditions` (None: every condition)."""
        return self.conditions

    def bound(self, limit, resolve_path):
        """A task's `limit` resolved (capped by the run's `--limit`) and its data folder absolute; inline
        prompts cut to the run's `--limit`."""
        if self.task:
            data_dir = str(resolve_path(self.data_dir)) if self.data_dir else None
            return self.model_copy(update={"limit": resolved_limit(self.limit, limit, self.task), "data_dir": data_dir})
        if limit is not None and self.prompts:
            return self.model_copy(update={"prompts": self.prompts[:limit]})
        return self

    def data_source(self) -> tuple[str, str | None] | None:
        """The task and its data folder when prompts come from a task (their content keys the cell); None for inline
        prompts."""
        return (self.task, self.data_dir) if self.task else None

    def sampled_work(self, ctx, samples: int, max_new_tokens: int | None, batch: int, passes: int = 0):
        """The work of sampling `samples` completions of each of this readout's prompts, then teacher-forcing
        each prompt + completion `passes` times."""
        from mechsteer.spec.work import sampled

        n = len(self.prompts) if self.prompts is not None else None
        return sampled(ctx, self.task, self.split, self.limit, samples, max_new_tokens, batch, passes=passes, prompts=n)

    def rehearsed(self, r):
        """At most `r.caps.problems` prompts (a benchmark or prompt set read from the stand-in files), and the
        generated tokens and samples of a readout that samples capped."""
        caps, update = r.caps, {}
        if self.task is not None:
            update["limit"] = caps.cap(self.limit, caps.problems)
            if self.task != "mini":
                update["data_dir"] = str(r.data_dir)
        if self.prompts is not None:
            update["prompts"] = self.prompts[: caps.problems]
        for name, cap in (("max_new_tokens", caps.new_tokens), ("samples", caps.samples)):
            if name in type(self).model_fields and getattr(self, name) is not None:
                update[name] = caps.cap(getattr(self, name), cap)
        return self.model_copy(update=update)

    def study_problems(self, conditions, shapes):
        """A task must be known; only the bundled `mini` task has a train split, and a training set
        (`deepscaler`) only its train split."""
        out = []
        known = KNOWN_TASKS + PROMPT_TASKS
        if self.task is not None and self.task not in known:
            out.append((("task",), f"unknown task {self.task!r}", f"known tasks: {', '.join(known)}"))
        elif self.task in PROMPT_TASKS and self.split != "train":
            out.append(
                (("split",), f"{self.task} is a training set: its prompts are the train split", "set split: train")
            )
        elif self.task is not None and self.task not in ("mini", *PROMPT_TASKS) and self.split != "test":
            hint = "use split: test (only the bundled `mini` task has a train split)"
            out.append((("split",), "benchmarks only have a test split", hint))
        return out


@readout_kind("generate", impl="mechsteer.readouts.generate:run_generate")
class GenerateReadout(PromptSource):
    """Generate completions under each condition; grade them when the prompts come from a task."""

    kind: Literal["generate"] = "generate"
    max_new_tokens: int = Field(default=64, gt=0)
    """New tokens per completion."""
    temperature: float = Field(default=0.0, ge=0.0)
    """0 = greedy; otherwise sampling with this temperature (top_p 1, top_k off), seeded per cell."""
    samples: int = Field(default=1, gt=0)
    """Completions per prompt (must be 1 when greedy)."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts per generate call (left padding)."""

    @model_validator(mode="after")
    def _greedy_one_sample(self):
        if self.temperature == 0.0 and self.samples != 1:
            raise ValueError("greedy decoding (temperature 0) gives identical samples: set samples: 1")
        return self

    def seeds_to_run(self, seeds: list[int]) -> list[int]:
        """Every seed when sampling; greedy decoding (temperature 0) is the same under every seed."""
        return list(seeds) if self.temperature > 0 else list(seeds[:1])

    def work(self, ctx):
        """`samples` completions of each prompt."""
        return self.sampled_work(ctx, self.samples, self.max_new_tokens, self.batch_size)


@readout_kind("first_token", impl="mechsteer.readouts.first_token:run_first_token")
class FirstTokenReadout(PromptSource):
    """The next-token distribution at the end of the prompt (the first generated token): top-k tokens and
    the probability of tracked tokens such as "To" or "Step" (the paper's last-layer finding)."""

    kind: Literal["first_token"] = "first_token"
    top_k: int = Field(default=5, gt=0)
    """Tokens to record per prompt."""
    track: list[str] = Field(default_factory=lambda: ["To"])
    """Strings whose first-token probability is recorded (each must encode to one token)."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts per forward pass."""

    def seeds_to_run(self, seeds: list[int]) -> list[int]:
        """The first seed: a next-token distribution involves no sampling."""
        return list(seeds[:1])

    def work(self, ctx):
        """One forward pass over each prompt."""
        from mechsteer.spec.work import prompts_only

        return prompts_only(ctx, self.task, self.split, self.limit, len(self.prompts) if self.prompts else None)
