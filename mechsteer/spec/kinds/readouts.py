"""Readout specs: measurements taken on a (steered) model besides benchmark evaluation.

Readouts record raw per-sample data (`samples.jsonl`) and summary metrics; comparisons across conditions
(e.g. the shift of the first-token distribution against the baseline) are computed by the report.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import readout_kind


class PromptSource(StrictModel):
    """Prompts for a readout: inline `prompts`, or problems from a task (`mini`, or a benchmark)."""

    prompts: list[str] | None = None
    """Inline user messages."""
    task: str | None = None
    """Take problems (and gold answers) from this task, e.g. `mini` or `math500`; `deepscaler` (with
    `split: train`) is the paper's training set, whose prompts the authors' readouts analysed."""
    split: Literal["test", "train"] = "test"
    """Split of the task (the bundled `mini` task has both; benchmarks only `test`; `deepscaler` only
    `train`)."""
    limit: int | None = Field(default=None, gt=0)
    """Use at most this many problems."""
    shuffle: int | None = None
    """Shuffle the task's problems with this seed before taking `limit` (a numpy `default_rng(seed)`
    permutation, the one `datasets.Dataset.shuffle(seed=...)` draws; the authors' DeepScaleR subsets use seed 0,
    Figure 6's seed 1); null keeps the file order."""
    data_dir: str | None = None
    """Local benchmark folder (see `evaluation.data_dir`)."""
    template: Literal["qwen_math", "r1", "raw"] = "qwen_math"
    """Prompt template: the paper's qwen_math (system prompt asking for \\boxed{}), r1, or raw (user text only)."""
    conditions: list[str] | None = None
    """Run this readout only under these conditions (names or shell patterns such as `single_*`); null = all."""

    @model_validator(mode="after")
    def _one_source(self):
        if (self.prompts is None) == (self.task is None):
            raise ValueError("give exactly one of `prompts` or `task`")
        if self.shuffle is not None and self.task is None:
            raise ValueError("shuffle orders a task's problems: give `task`")
        return self


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
