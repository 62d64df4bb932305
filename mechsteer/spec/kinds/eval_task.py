"""The `eval` measurement: one benchmark task of a study's `evaluation:` block, as the compiler hands it to a
cell (the study-level block lists several tasks, seeds and per-task sample counts; a cell measures one task
with everything resolved). Not a readout: it is not written in `readouts:` and not part of the study schema.
Runner: `mechsteer.eval.runner.run_eval`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mechsteer.spec.base import LIMIT_MAX
from mechsteer.spec.kinds import measurement_kind
from mechsteer.spec.kinds.measurements import MeasurementBase
from mechsteer.spec.templates import PromptTemplate


@measurement_kind("eval", impl="mechsteer.eval.runner:run_eval")
class EvalTaskSpec(MeasurementBase):
    """One benchmark task under the evaluation protocol, with limits and sample counts resolved."""

    kind: Literal["eval"] = "eval"
    task: str
    """mechsteer task name (aime24, ..., gsm8k, mini)."""
    protocol: Literal["paper", "greedy"]
    """`paper` (temperature 1, top_p 1) or `greedy`."""
    samples: int = Field(gt=0)
    """Completions per problem."""
    limit: int | None = Field(default=None, gt=0, le=LIMIT_MAX)
    """At most this many problems."""
    max_new_tokens: int | None = Field(default=None, gt=0)
    """Cap on generated tokens (null = the model's max_length minus the prompt)."""
    batch_size: int = Field(default=8, gt=0)
    """Sequences per generate call."""
    template: PromptTemplate = "qwen_math"
    """Prompt template (`mechsteer.spec.templates`)."""
    data_dir: str | None = None
    """Absolute folder with `<task>/test.jsonl` (null = hub datasets)."""

    def seeds_to_run(self, seeds: list[int]) -> list[int]:
        """Every seed of the evaluation block (`evaluation.seeds`, resolved by the protocol), as written."""
        return list(seeds)

    def data_source(self) -> tuple[str, str | None]:
        """The benchmark and its local data folder: their content is hashed into the cell."""
        return self.task, self.data_dir

    def vllm_unsupported(self) -> str | None:
        """None: a benchmark task runs through lm-eval's `vllm` model with the same prompts and graders."""
        return None

    def work(self, ctx):
        """`samples` completions of each problem (every one prefilled and sampled)."""
        from mechsteer.spec.work import sampled

        return sampled(ctx, self.task, "test", self.limit, self.samples, self.max_new_tokens, self.batch_size)
