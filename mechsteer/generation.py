"""Batched generation on a (steered) model: prompt rendering, length-sorted left-padded batches, explicit
sampling settings (never the checkpoint's generation_config defaults), and the `begin()` call that keeps
position-selective interventions correct across decode steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mechsteer.interventions.base import SteeringContext
from mechsteer.models.loading import LoadedModel


@dataclass
class Completion:
    text: str
    n_tokens: int
    finished: bool
    """True when the model emitted a stop token (False = truncated at max_new_tokens)."""
    first_token: str


def uses_chat_template(lm: LoadedModel) -> bool:
    has = bool(getattr(lm.tokenizer, "chat_template", None))
    return has if lm.spec.chat_template is None else (lm.spec.chat_template and has)


def render_prompts(lm: LoadedModel, problems: list[str], template: str, suffix: str = "") -> list[str]:
    """Prompt texts (chat template applied when the model uses one) with the forced-prefix suffix."""
    from mechsteer.eval.templates import build_prompt

    out = []
    for p in problems:
        if template == "raw":
            text = p
            if uses_chat_template(lm):
                text = lm.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                )
        else:
            tok = lm.tokenizer if uses_chat_template(lm) else _NoChat(lm.tokenizer)
            text = build_prompt(tok, p, template=template)
        out.append(text + suffix)
    return out


class _NoChat:
    """A tokenizer view without a chat template (for models whose spec sets chat_template: false)."""

    def __init__(self, tok):
        self._tok = tok
        self.chat_template = None

    def __getattr__(self, name):
        return getattr(self._tok, name)


def stop_token_ids(model, tokenizer, extra: list[str] | tuple = ()) -> list[int]:
    """Every stop token id, in this order: the generation config's eos ids (Llama-3.1 has three), the
    tokenizer's eos, the chat template's end-of-turn token (Qwen2.5-Math's `<|im_end|>` is not its eos) when
    the tokenizer has a template, and the model entry's `stop:` strings. The one definition used by
    generation, the lm-eval bridge, training rollouts and vector builders."""
    from mechsteer.models.stops import end_of_turn_id, stop_string_ids

    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    more = [tokenizer.eos_token_id, end_of_turn_id(tokenizer), *stop_string_ids(tokenizer, extra)]
    for i in more:
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def lm_stop_token_ids(lm: LoadedModel) -> list[int]:
    """`stop_token_ids` for a loaded model, with its entry's `stop:` strings."""
    return stop_token_ids(lm.model, lm.tokenizer, getattr(lm.spec, "stop", None) or ())


def stop_info(tokenizer, ids: list[int]) -> dict:
    """What a measurement records about its stop tokens: ids and their texts."""
    return {"stop_token_ids": list(ids), "stop_tokens": [tokenizer.decode([i]) for i in ids]}


def tokenize(lm: LoadedModel, texts: list[str]) -> dict:
    # Chat-templated text already holds its special tokens; plain text gets the tokenizer's BOS.
    add_special = not uses_chat_template(lm)
    enc = lm.tokenizer(texts, add_special_tokens=add_special, padding=True, return_tensors="pt")
    return {k: v.to(lm.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


@torch.no_grad()
def generate(
    lm: LoadedModel,
    ctx: SteeringContext | None,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[Completion]]:
    """Generate `samples` completions per prompt. Returns completions in prompt order."""
    from transformers import GenerationConfig

    stops = lm_stop_token_ids(lm)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=1.0 if temperature > 0 else None,
        top_k=0 if temperature > 0 else None,  # the paper samples with top_k -1 (off) and top_p 1
        num_return_sequences=samples,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=stops,
    )
    torch.manual_seed(seed)
    lengths = [len(lm.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # batch by length: less padding
    results: dict[int, list[Completion]] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenize(lm, [prompts[i] for i in idx])
        if ctx is not None:
            ctx.begin()
        out = lm.model.generate(**enc, generation_config=cfg)
        new = out[:, enc["input_ids"].shape[1] :]
        for row, seq in enumerate(new):
            ids = seq.tolist()
            finished = False
            for j, t in enumerate(ids):
                if t in stops:
                    ids, finished = ids[:j], True
                    break
            comp = Completion(
                text=lm.tokenizer.decode(ids, skip_special_tokens=True),
                n_tokens=len(ids) + (1 if finished else 0),
                finished=finished,
                first_token=lm.tokenizer.decode(ids[:1]) if ids else "",
            )
            results.setdefault(idx[row // samples], []).append(comp)
        if on_batch:
            on_batch(len(idx))
    return [results[i] for i in range(len(prompts))]
