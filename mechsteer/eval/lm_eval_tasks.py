"""lm-eval task definitions for the paper's math benchmarks (+ GSM8K and the offline `mini` task).

One function, `build_task_config`, turns a task name and the evaluation protocol into an lm-eval task dict:

* **data**: the problems are loaded by mechsteer (`datasets.load_benchmark`: the hub dataset the paper's code
  used, or `<data_dir>/<task>/test.jsonl`; `mini_task.generate_mini` for `mini`) and handed to lm-eval
  through `custom_dataset`. Why not `dataset_path: json` + `data_files`: lm-eval resolves `data_files` against
  the working directory, AIME25 is two hub configs, and every benchmark names its columns differently; the
  normalisers in `datasets.py` already solve all three, so they stay the single source of truth.
* **prompt**: `doc_to_text` is the bare problem; the runner asks lm-eval for `apply_chat_template=True` with
  the paper's system prompt (`templates.QWEN_MATH_SYSTEM`) as `system_instruction`, so lm-eval renders the
  paper's `qwen_math` messages through the model's chat template. Models without a chat template get the
  paper's plain-text template as `doc_to_text` instead (no system instruction, no chat template).
* **sampling**: `repeats` = samples per problem, kept whole by a `take_first_k` filter (lm-eval's default
  filter would keep only the first sample); generation kwargs from the protocol: `paper` = temperature 1,
  top_p 1, top_k 0 (off); `greedy` = temperature 0. `until` is empty: generation stops at the model's stop
  token only, as in the paper (lm-eval's default would stop at the first blank line).
* **grading**: `process_results` grades every sample with `grading.grade` (last `\\boxed{}` verified by
  math-verify; no box = wrong) and returns per-problem values that lm-eval aggregates: avg@k and pass@1
  (first sample) for the boxed and the lenient (boxed or last number) grader, the boxed rate, and the mean
  generation length overall / of correct / of incorrect samples (custom aggregations over per-sample lists,
  so the means are over samples, as in the paper's code).

Tasks are Python dicts rather than YAML under `tasks/` because `process_results` needs the model's tokenizer
(to count generated tokens) and the template (to pick the grader), which a static YAML cannot carry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mechsteer.spec.evaluation import MINI_DEFAULT_N

TASK_PREFIX = "mechsteer_"
"""lm-eval task names are `mechsteer_<task>`, so results never get confused with lm-eval's own `aime24` etc.
(which use other prompts and graders)."""

FILTER_NAME = "all_samples"
"""Name of the filter that keeps every sample of a problem; lm-eval suffixes metric keys with it."""


@dataclass(frozen=True)
class TaskSettings:
    """Everything that shapes one task's lm-eval definition."""

    task: str
    """mechsteer task name (aime24, ..., gsm8k, mini)."""
    protocol: str
    """`paper` (temperature 1) or `greedy` (temperature 0)."""
    samples: int
    """Completions per problem (lm-eval `repeats`)."""
    max_gen_toks: int
    """Upper bound on generated tokens; the bridge also caps each row at max_length - its prompt length."""
    chat: bool
    """True: the problem goes through the model's chat template with the paper's system prompt."""
    template: str = "qwen_math"
    """Prompt template (`qwen_math` or `r1`); also selects the grader (`r1` grades `<answer>` tags)."""


def lm_eval_task_name(task: str) -> str:
    """lm-eval's name of a mechsteer task (prefixed, so it never collides with lm-eval's own tasks)."""
    return TASK_PREFIX + task


def generation_kwargs(protocol: str, max_gen_toks: int) -> dict:
    """lm-eval generation kwargs of a protocol. top_k 0 disables top-k in transformers (its default is 50)."""
    if protocol == "paper":
        sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    elif protocol == "greedy":
        sampling = {"do_sample": False, "temperature": 0.0}
    else:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; known: paper, greedy")
    return {"until": [], **sampling, "max_gen_toks": int(max_gen_toks)}


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def load_problems(task: str, data_dir: str | Path | None, limit: int | None, split: str = "test") -> list[dict]:
    """Rows `{"id", "problem", "answer"}` of a task, in file order (first `limit` of them); the one loader of
    evaluation cells and task-based readouts.

    `mini` is generated (seed 0: the problems never depend on the evaluation seed, which only drives
    sampling; `split` picks its train or test pool; a limit above the test pool takes the whole pool, as a
    limit above a benchmark's size does). Benchmarks raise `datasets.DatasetUnavailableError` with the
    `data_dir` fix when they cannot be loaded (hub offline or unreachable, local file missing)."""
    if task == "mini":
        from mechsteer.eval.mini_task import generate_mini, mini_pool

        n = limit or MINI_DEFAULT_N
        return generate_mini(split, min(n, len(mini_pool(split))) if split == "test" else n)
    from mechsteer.eval.datasets import load_benchmark

    return load_benchmark(task, data_dir, limit=limit)


def _custom_dataset(rows: list[dict], **_lm_eval_metadata: Any):
    """lm-eval `custom_dataset` hook: a DatasetDict with the already loaded rows as its `test` split.
    lm-eval passes the task metadata as keyword arguments; they are not needed here."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else math.nan


def mean_of_lists(items: list[list[float]]) -> float:
    """Aggregation: the mean over all samples of all problems (per-problem values are lists of per-sample
    values, possibly empty); NaN when there is no sample at all (e.g. no correct answer)."""
    return _mean([x for item in items for x in item])


def count_samples(items: list[list]) -> float:
    """Aggregation: how many samples were graded."""
    return float(sum(len(item) for item in items))


def score_completions(completions: list[str], gold: str, template: str, count_tokens: Callable[[str], int]) -> dict:
    """Per-problem values for lm-eval from the problem's samples (in sample order).

    acc_* = mean over samples (avg@k; the accuracy itself when k = 1), acc_*_pass1 = the first sample,
    boxed_rate = share of samples with a complete box, len* = per-sample token counts (lists, aggregated
    over all samples), graded = per-sample details for the logs."""
    from mechsteer.eval.grading import grade

    graded = []
    for text in completions:
        g = grade(text, gold, template=template)
        graded.append(
            {
                "boxed": bool(g.boxed_correct),
                "lenient": bool(g.lenient_correct),
                "has_box": bool(g.has_box),
                "extracted": g.extracted_boxed if g.has_box else g.extracted_number,
                "n_tokens": int(count_tokens(text)),
            }
        )
    boxed = [float(s["boxed"]) for s in graded]
    lenient = [float(s["lenient"]) for s in graded]
    lengths = [s["n_tokens"] for s in graded]
    return {
        "acc_boxed": _mean(boxed),
        "acc_boxed_pass1": boxed[0] if boxed else math.nan,
        "acc_lenient": _mean(lenient),
        "acc_lenient_pass1": lenient[0] if lenient else math.nan,
        "boxed_rate": _mean([float(s["has_box"]) for s in graded]),
        "mean_len": list(lengths),
        "mean_len_correct": [s["n_tokens"] for s in graded if s["boxed"]],
        "mean_len_incorrect": [s["n_tokens"] for s in graded if not s["boxed"]],
        "mean_len_correct_lenient": [s["n_tokens"] for s in graded if s["lenient"]],
        "mean_len_incorrect_lenient": [s["n_tokens"] for s in graded if not s["lenient"]],
        "graded": graded,
    }


def _process_results(doc: dict, results: list, *, template: str, count_tokens: Callable[[str], int]) -> dict:
    """lm-eval `process_results`: `results` holds one entry (this problem's request) whose value, after the
    `take_first_k` filter, is the list of its samples."""
    completions = results[0]
    if isinstance(completions, str):  # a filter pipeline that keeps one sample only
        completions = [completions]
    return score_completions(list(completions), str(doc["answer"]), template, count_tokens)


MEAN_METRICS = ("acc_boxed", "acc_boxed_pass1", "acc_lenient", "acc_lenient_pass1", "boxed_rate")
LIST_METRICS = (
    "mean_len",
    "mean_len_correct",
    "mean_len_incorrect",
    "mean_len_correct_lenient",
    "mean_len_incorrect_lenient",
)


def metric_list() -> list[dict]:
    """The `metric_list` of every task's lm-eval config: accuracies (means), per-sample lengths (means of lists) and
    the count of graded samples."""
    out = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in MEAN_METRICS]
    out += [{"metric": m, "aggregation": mean_of_lists, "higher_is_better": False} for m in LIST_METRICS]
    out.append({"metric": "graded", "aggregation": count_samples, "higher_is_better": True})
    return out


# ---------------------------------------------------------------------------------------------------------
# The task dict
# ---------------------------------------------------------------------------------------------------------


def _plain_prompt(doc: dict, *, template: str) -> str:
    from mechsteer.eval.templates import plain_prompt

    return plain_prompt(doc["problem"], template)


def build_task_config(settings: TaskSettings, rows: list[dict], count_tokens: Callable[[str], int]) -> dict:
    """The lm-eval task dict for `settings` over the loaded `rows` (see the module docstring)."""
    if settings.chat and settings.template != "qwen_math":
        # Same rule as templates.build_prompt: `r1` is a base-model template with its own assistant turn.
        raise ValueError(
            f"template {settings.template!r} is for models without a chat template; "
            "a chat-template model uses 'qwen_math' (as in the paper)"
        )
    if settings.samples < 1:
        raise ValueError(f"samples per problem must be >= 1, got {settings.samples}")
    doc_to_text: Any = "problem" if settings.chat else partial(_plain_prompt, template=settings.template)
    return {
        "task": lm_eval_task_name(settings.task),
        "custom_dataset": partial(_custom_dataset, rows),
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": doc_to_text,
        "doc_to_target": "answer",
        "target_delimiter": "",
        "num_fewshot": 0,
        "generation_kwargs": generation_kwargs(settings.protocol, settings.max_gen_toks),
        "repeats": settings.samples,
        "filter_list": [{"name": FILTER_NAME, "filter": [{"function": "take_first_k", "k": settings.samples}]}],
        "process_results": partial(_process_results, template=settings.template, count_tokens=count_tokens),
        "metric_list": metric_list(),
        "metadata": {
            "version": 1,
            "mechsteer_task": settings.task,
            "protocol": settings.protocol,
            "samples": settings.samples,
            "template": settings.template,
            "chat": settings.chat,
        },
    }
