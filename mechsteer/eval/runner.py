"""`run_eval`: the `eval` measurement. One cell = one task x one condition x one seed, evaluated by lm-eval.

It runs inside the cell's steering scope (hooks already attached by the engine). It loads the task's
problems, builds the lm-eval task dict (`lm_eval_tasks`), wraps the loaded model in `SteeredHFLM` (the hooks
stay active for every lm-eval forward), and calls `lm_eval.simple_evaluate` with the paper's prompt settings
and the cell's seed. It returns lm-eval's metrics (flattened), lm-eval's per-problem sample logs as the
cell's samples, and lm-eval's results JSON as the cell file `lm_eval_results.json`.

lm-eval's request caches are never enabled (`use_cache=None`, `cache_requests=False`): they key on the
request text only, so a second condition would reuse the first condition's outputs. Identity of a result is
the engine's job: the cell hash covers model, interventions, vector contents, protocol, data and seed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mechsteer.errors import MechsteerError
from mechsteer.eval.lm_eval_tasks import (
    FILTER_NAME,
    TaskSettings,
    build_task_config,
    lm_eval_task_name,
    load_problems,
)
from mechsteer.measurement import MeasurementResult, MeasurementTask

DEFAULT_MAX_LENGTH = 4096
"""Total length budget when neither the model entry (`max_length`) nor the model config names one."""


def total_length(lm) -> int:
    """Max prompt + generation tokens: the model entry's `max_length` (the paper: 4096 for Qwen2.5-Math-7B,
    32768 for Llama-3.1-8B-Instruct), else the model's context size, else DEFAULT_MAX_LENGTH."""
    if lm.spec.max_length:
        return int(lm.spec.max_length)
    cfg = lm.model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_LENGTH


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """Keep the engine's progress display readable: lm-eval warns about things that are intended here (a
    preloaded model object, a custom dataset) and draws a tqdm bar per task while building requests (the
    generation bar is switched off by the bridge, which reports to the engine's progress instead)."""
    from functools import partial
    from unittest import mock

    import lm_eval.api.task as lm_eval_task
    import lm_eval.evaluator as lm_eval_evaluator
    from tqdm import tqdm

    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            mock.patch.object(lm_eval_task, "tqdm", partial(tqdm, disable=True)),
            mock.patch.object(lm_eval_evaluator, "add_env_info", _add_env_info_once),
        ):
            yield
    finally:
        logger.setLevel(level)


_ENV_INFO: dict = {}


def _add_env_info_once(storage: dict) -> None:
    """lm-eval's `add_env_info`, computed once per process: lm-eval calls it for every evaluation, and it runs
    torch's `collect_env` (a dozen subprocesses: pip, nvidia-smi, ...), about 0.7 s per cell here, which a
    study of thousands of cells paid every time for the same text. The results file keeps the same fields."""
    if not _ENV_INFO:
        from lm_eval.loggers.utils import add_env_info

        add_env_info(_ENV_INFO)
    storage.update(_ENV_INFO)


def evaluate_task(model_lm, task_config: dict, *, seed: int, chat: bool, limit: int | None) -> dict:
    """`lm_eval.simple_evaluate` on one task dict with the paper's prompt settings; returns lm-eval's results.

    `model_lm` is any lm-eval LM (the steered bridge, or lm-eval's own models in benchmarks)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from mechsteer.eval.templates import QWEN_MATH_SYSTEM

    with _quiet_lm_eval():
        return simple_evaluate(
            model=model_lm,
            tasks=[task_config],
            task_manager=TaskManager(include_defaults=False),
            apply_chat_template=chat,
            system_instruction=QWEN_MATH_SYSTEM if chat else None,
            fewshot_as_multiturn=True,
            log_samples=True,
            limit=limit,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            # Never lm-eval's caches: they key on the request text only, so one steering condition would
            # get another's outputs (see the module docstring).
            use_cache=None,
            cache_requests=False,
        )


def flatten_metrics(task_results: dict) -> dict[str, float]:
    """lm-eval's `{"acc_boxed,all_samples": x, "acc_boxed_stderr,all_samples": s, ...}` -> `{"acc_boxed": x}`."""
    out: dict[str, float] = {}
    for key, value in task_results.items():
        name, sep, filt = key.partition(",")
        if not sep or filt != FILTER_NAME or name.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        out["n_samples" if name == "graded" else name] = float(value)
    return out


def json_safe(obj):
    """lm-eval results (task configs hold functions) as plain JSON values."""
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable, ensure_ascii=False))


@dataclass
class EvalSetup:
    """What every evaluation engine (HF bridge, vLLM) needs for one cell: the problems, the task definition
    and the length budget. Built once by `prepare_eval`, so both engines evaluate exactly the same task."""

    name: str
    rows: list[dict]
    settings: TaskSettings
    config: dict
    chat: bool
    budget: int
    max_gen: int


def prepare_eval(task: MeasurementTask) -> EvalSetup:
    """Load the cell's problems and build its lm-eval task definition (the paper's prompt and protocol)."""
    from mechsteer.eval.datasets import DatasetUnavailableError
    from mechsteer.generation import uses_chat_template

    o, lm = task.spec, task.lm
    try:
        rows = load_problems(o.task, o.data_dir, o.limit)
    except DatasetUnavailableError as e:
        raise MechsteerError(str(e)) from None
    chat = uses_chat_template(lm)
    budget = total_length(lm)
    max_gen = min(int(o.max_new_tokens or budget), budget - 1)
    settings = TaskSettings(
        task=o.task, protocol=o.protocol, samples=o.samples, max_gen_toks=max_gen, chat=chat, template=o.template
    )

    def count_tokens(text: str) -> int:
        return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    config = build_task_config(settings, rows, count_tokens)
    return EvalSetup(o.task, rows, settings, config, chat, budget, max_gen)


def eval_result(setup: EvalSetup, results: dict, extra_info: dict) -> MeasurementResult:
    """lm-eval's results for one cell as the cell's metrics, per-problem samples, info and results file."""
    from lm_eval import __version__ as lm_eval_version

    lm_name = lm_eval_task_name(setup.name)
    metrics = flatten_metrics(results["results"][lm_name])
    samples = json_safe(results["samples"][lm_name])
    metrics["n_problems"] = float(len(samples))
    metrics["samples_per_problem"] = float(setup.settings.samples)
    summary = json_safe({k: v for k, v in results.items() if k != "samples"})
    info = {
        "lm_eval_version": lm_eval_version,
        "lm_eval_task": lm_name,
        "chat_template": setup.chat,
        "max_length": setup.budget,
        "max_gen_toks": setup.max_gen,
        "generation_kwargs": setup.config["generation_kwargs"],
        "repeats": setup.settings.samples,
        "prompt_example": samples[0]["arguments"][0][0] if samples else "",
        **extra_info,
    }
    files = {"lm_eval_results.json": json.dumps(summary, indent=2, ensure_ascii=False).encode()}
    return MeasurementResult(metrics, samples, files=files, info=info)


def run_eval(task: MeasurementTask) -> MeasurementResult:
    """The `eval` measurement on the loaded model inside the cell's steering scope (HF + hooks)."""
    from mechsteer.eval.lm_eval_bridge import SteeredHFLM
    from mechsteer.generation import stop_info

    o, lm = task.spec, task.lm
    setup = prepare_eval(task)
    task.progress(0, len(setup.rows) * setup.settings.samples)
    with _quiet_lm_eval():
        bridge = SteeredHFLM(
            lm.model,
            lm.tokenizer,
            task.ctx,
            batch_size=o.batch_size,
            max_length=setup.budget,
            on_batch=lambda n: task.progress(n, None),
            stop=getattr(lm.spec, "stop", None) or (),
        )
        results = evaluate_task(bridge, setup.config, seed=task.seed, chat=setup.chat, limit=o.limit)
    return eval_result(setup, results, stop_info(lm.tokenizer, bridge.stop_ids))
