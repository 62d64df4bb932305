"""What every measurement kind (a readout, or `eval`: one benchmark task) answers for the compiler and the
executor, in its own class: the seeds it runs with, the conditions it runs under, the condition it compares
with, the data it reads (hashed into its cells), how a run's `--limit` applies to it, whether it applies the
condition's steering itself, and whether vLLM can run it. Torch-free.
"""

from __future__ import annotations

import fnmatch
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from mechsteer.spec.base import StrictModel
from mechsteer.spec.evaluation import MINI_DEFAULT_N
from mechsteer.spec.kinds import MEASUREMENT_KINDS, READOUT_KINDS

Problem3 = tuple[tuple, str, str | None]
"""(sub-path under the measurement, message, hint)."""


def resolved_limit(own: int | None, cli: int | None, task: str | None) -> int | None:
    """The problems a measurement uses: its own `limit`, capped by the run's `--limit`; the bundled `mini`
    task without either uses `MINI_DEFAULT_N` (it is generated, so it has no natural size)."""
    lim = own if cli is None else (min(cli, own) if own else cli)
    return MINI_DEFAULT_N if task == "mini" and lim is None else lim


class MeasurementBase(StrictModel):
    """Base of every measurement spec (readouts and `eval`). Subclasses register with `@readout_kind` (or
    `@measurement_kind` for one that is not written under `readouts:`)."""

    steers_itself: ClassVar[bool] = False
    """True when the runner applies the condition's interventions itself (teacher-forced readouts comparing
    the model with and without them, readouts about the condition's vectors): the executor then opens the
    cell's steering scope empty and hands the runner no steering context (`MeasurementTask.ctx` is None)."""

    @abstractmethod
    def seeds_to_run(self, seeds: list[int]) -> list[int]:
        """The seeds (the study's, or the evaluation block's for `eval`) this measurement runs with: every one
        when its result depends on the seed (sampling), else the first alone, so no identical cells run."""

    def condition_patterns(self) -> list[str] | None:
        """The conditions (names or shell patterns) it runs under, as written; None = every condition."""
        return None

    def applies_to(self, condition: str) -> bool:
        """Whether it runs under the condition named `condition`."""
        wanted = self.condition_patterns()
        return wanted is None or any(fnmatch.fnmatchcase(condition, w) for w in wanted)

    def reference_condition(self) -> str | None:
        """The condition it compares the cell's condition with (its interventions are bound into the cell and
        hashed); None when it compares with nothing, or with the unsteered model."""
        return None

    def bound(self, limit: int | None, resolve_path: Callable[[str], Path]):
        """This measurement as a cell runs it: the run's `--limit` applied and data folders made absolute
        (`resolve_path` resolves relative to the study file). Nothing to bind by default."""
        return self

    def data_source(self) -> tuple[str, str | None] | None:
        """(task, local data folder or None) of the benchmark data it reads, whose content or hub commit is
        hashed into its cells; None when it reads no task data."""
        return None

    def vllm_unsupported(self) -> str | None:
        """Why a cell of this measurement stays on HF when its model asks for `backend: vllm` (None: it can
        run on a bias-compiled checkpoint in vLLM). Readouts need hooks and their own passes."""
        return "readouts run on HF"

    def single_source_analysis(self) -> tuple[str, tuple[str, ...]] | None:
        """(what it measures, the intervention kinds whose vectors are its sources) when its object is
        independently trained single-layer vectors s_l, so `validate` refuses sources that are rows of a jointly
        trained set (`mechsteer.spec.vector_origin`); None (the default) when any vector will do."""
        return None

    def work(self, ctx):
        """The tokens a cell of this measurement processes (`mechsteer.spec.work.Work`: prompts prefilled,
        tokens generated and teacher-forced, expected and at the cap), from the facts `ctx` knows
        (`mechsteer.spec.work.WorkContext`), for `mechsteer plan --estimate`; None (the default) when the kind
        cannot say (the estimate lists it)."""
        return None

    def rehearsed(self, r):
        """This measurement in a rehearsal (`mechsteer.spec.rehearsal.Rehearsal` `r`): its problems, tokens and
        samples cut to `r.caps`, its benchmark data read from `r.data_dir`, anything else it sizes (an SAE)
        shrunk; the default (nothing to shrink) returns itself."""
        return self

    def study_problems(self, conditions: dict, shapes: dict) -> list[Problem3]:
        """Problems `validate` finds with the whole study in view (`conditions`: name -> interventions or
        sweep; `shapes`: model -> known shape or None), as (sub-path, message, hint). None by default."""
        return []


MEASUREMENT_KINDS.require_base(MeasurementBase)
READOUT_KINDS.require_base(MeasurementBase)
