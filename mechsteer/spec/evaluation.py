"""The `evaluation:` block: benchmark accuracy through lm-eval with the paper's protocol."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mechsteer.spec.base import LIMIT_MAX, StrictModel
from mechsteer.spec.templates import PromptTemplate

KNOWN_TASKS = ("aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench", "gsm8k", "mini")
"""Tasks mechsteer ships definitions for. The six paper benchmarks form the paper's Average."""

PROMPT_TASKS = ("deepscaler",)
"""Prompt sets a readout may draw from besides KNOWN_TASKS: training sets (split `train` only), never
evaluation tasks. `deepscaler` is the paper's training set (agentica-org/deep_scale_r-preview-dataset)."""

MINI_DEFAULT_N = 64
"""Problems of the bundled `mini` task an evaluation or readout uses when no limit is given."""

PAPER_AVERAGE_TASKS = ("aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench")
PAPER_MULTI_SAMPLE_TASKS = {"aime24": 32, "aime25": 32, "amc23": 32}
"""avg@32 on AIME24/AIME25/AMC23 under the paper protocol; one sample elsewhere."""


class EvaluationSpec(StrictModel):
    """Benchmark accuracy of every model x condition."""

    tasks: list[Literal[KNOWN_TASKS]] = Field(min_length=1)  # type: ignore[valid-type]
    """Tasks to run (aime24, aime25, amc23, math500, minerva_math, olympiadbench, gsm8k, mini)."""
    protocol: Literal["paper", "greedy"] = "greedy"
    """`paper`: temperature 1, top_p 1, avg@32 on AIME24/AIME25/AMC23, 1 sample elsewhere, several seeds.
    `greedy`: temperature 0, one sample, one seed."""
    seeds: list[int] | None = None
    """Evaluation seeds; default [0, 1, 2] for `paper`, [0] for `greedy`."""
    samples: dict[str, int] | None = None
    """Override samples per problem for some tasks (e.g. {aime24: 4} in a mini profile)."""
    data_dir: str | None = None
    """Folder with `<task>/test.jsonl` files (relative to the study file); null = hub datasets."""
    limit: int | None = Field(default=None, gt=0, le=LIMIT_MAX)
    """At most this many problems per task (smoke runs)."""
    max_new_tokens: int | None = Field(default=None, gt=0)
    """Cap on generated tokens; null = the model's max_length minus the prompt."""
    batch_size: int = Field(default=8, gt=0)
    """Sequences per generate call."""
    template: PromptTemplate = "qwen_math"
    """Prompt template: the paper's `qwen_math` or `r1` (section 3.4), or `qa` / `qa_fewshot` for base models
    that answer on one line (with a newline stop; `mechsteer.spec.templates`)."""
    reference: str | None = None
    """A condition the report's accuracy table normalises against (the paper: full fine-tuning): adds the
    columns Relative (%) = 100 x / x_ref and Relative Improvement (%) = 100 (x - x_base) / (x_ref - x_base)."""
    control: str | None = None
    """The control condition (e.g. a norm-matched random vector) every other condition is compared against in
    the report's effects, besides the unsteered baseline; a condition's own `control:` takes precedence."""

    @model_validator(mode="after")
    def _check(self):
        if self.protocol == "greedy" and self.seeds is not None and len(self.seeds) > 1:
            raise ValueError("greedy decoding is deterministic: give one seed (or none)")
        if self.samples:
            unknown = sorted(set(self.samples) - set(self.tasks))
            if unknown:
                raise ValueError(f"samples names tasks not in `tasks`: {unknown}")
        return self

    def resolved_seeds(self) -> list[int]:
        """The seeds to evaluate: `seeds` when given, else three for the `paper` protocol (its sampled tasks vary by
        seed) and one for `greedy`."""
        if self.seeds is not None:
            return list(self.seeds)
        return [0, 1, 2] if self.protocol == "paper" else [0]

    def samples_for(self, task: str) -> int:
        """Samples per problem for `task`: one under `greedy`; under `paper` the `samples` override, else the paper's
        avg@32 tasks' 32, else one."""
        if self.protocol == "greedy":
            return 1
        if self.samples and task in self.samples:
            return self.samples[task]
        return PAPER_MULTI_SAMPLE_TASKS.get(task, 1)
