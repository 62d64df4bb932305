"""The vLLM evaluation path, as far as it can be checked without vLLM: the task dict is the HF path's with
only the generation kwargs made explicit for vLLM (stop tokens, sampling, special-token decoding), and
asking for an engine here fails with the one-line reason."""

from __future__ import annotations

import pytest

from mechsteer import machine
from mechsteer.errors import MechsteerError
from mechsteer.eval.lm_eval_tasks import TaskSettings, build_task_config, generation_kwargs
from mechsteer.eval.mini_task import generate_mini
from mechsteer.eval.vllm_backend import vllm_engine, vllm_generation_kwargs, vllm_task_config

SAMPLING_PARAMS_FIELDS = {
    # vllm.SamplingParams fields (the ones lm-eval's VLLM passes through after its own normalisation)
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "max_tokens",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "ignore_eos",
    "min_tokens",
    "logprobs",
}


def test_greedy_kwargs_are_explicit():
    out = vllm_generation_kwargs(generation_kwargs("greedy", 64), [2, 7])
    assert out["temperature"] == 0.0 and out["do_sample"] is False
    assert out["stop_token_ids"] == [2, 7]
    assert out["skip_special_tokens"] is True and out["spaces_between_special_tokens"] is False
    assert out["until"] == [] and out["max_gen_toks"] == 64
    assert "top_k" not in out and "top_p" not in out


def test_paper_sampling_turns_top_k_off_the_vllm_way():
    hf = generation_kwargs("paper", 4096)
    assert hf["top_k"] == 0  # transformers' "off"
    out = vllm_generation_kwargs(hf, [151645])
    assert out["top_k"] == -1 and out["top_p"] == 1.0 and out["temperature"] == 1.0
    assert out["stop_token_ids"] == [151645]


def test_kwargs_reach_sampling_params_cleanly():
    from lm_eval.models.utils import normalize_gen_kwargs

    for protocol in ("greedy", "paper"):
        norm = dict(normalize_gen_kwargs(vllm_generation_kwargs(generation_kwargs(protocol, 32), [2])))
        for k in ("until", "max_gen_toks", "do_sample"):  # lm-eval's VLLM consumes these itself
            norm.pop(k)
        assert set(norm) <= SAMPLING_PARAMS_FIELDS, set(norm) - SAMPLING_PARAMS_FIELDS


def test_task_dict_is_the_hf_one_except_generation():
    rows = generate_mini("test", 4)
    hf = build_task_config(
        TaskSettings(task="mini", protocol="greedy", samples=2, max_gen_toks=32, chat=True), rows, len
    )
    vl = vllm_task_config(hf, [2])
    assert set(vl) == set(hf)
    for key in set(hf) - {"generation_kwargs", "metadata"}:
        assert vl[key] is hf[key], key
    assert vl["metadata"] == {**hf["metadata"], "backend": "vllm"}
    assert hf["generation_kwargs"].get("stop_token_ids") is None  # the HF dict is not modified


def test_engine_refuses_in_one_line_without_vllm(monkeypatch):
    monkeypatch.setattr(machine, "vllm_installed", lambda: False)
    with pytest.raises(MechsteerError) as e:
        vllm_engine("/nonexistent", dtype="bfloat16", seed=0, max_length=128)
    assert "\n" not in str(e.value) and "backend vllm cannot run here" in str(e.value)
