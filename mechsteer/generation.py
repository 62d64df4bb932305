"""Generation on a loaded (steered) model: prompt rendering and encoding, the model's stop tokens, and the
bridge from a loaded model and a measurement spec to the one sampler (`mechsteer.sequences`: length-sorted
left-padded batches, explicit sampling settings, never the checkpoint's generation_config defaults, and the
`begin()` call that keeps position-selective interventions correct across decode steps)."""

from __future__ import annotations

from collections.abc import Callable

from mechsteer.interventions.base import SteeringContext
from mechsteer.models.loading import LoadedModel
from mechsteer.sequences import SamplingSettings, Sequence, pad, pad_id, sample


def uses_chat_template(lm: LoadedModel) -> bool:
    """Whether prompts go through the tokenizer's chat template: when it has one, unless the model entry's
    `chat_template` turns it off."""
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
    """Prompt texts as one left-padded batch on the model's device: {"input_ids", "attention_mask"}."""
    ids, mask = pad(encode(lm, texts), pad_id(lm.tokenizer), "left", lm.device)
    return {"input_ids": ids, "attention_mask": mask}


def encode(lm: LoadedModel, texts: list[str]) -> list[list[int]]:
    """Token ids of each prompt text, unpadded. Chat-templated text already holds its special tokens;
    plain text gets the tokenizer's BOS."""
    add_special = not uses_chat_template(lm)
    return [lm.tokenizer(t, add_special_tokens=add_special)["input_ids"] for t in texts]


def model_sampling(lm: LoadedModel, **fields) -> SamplingSettings:
    """`SamplingSettings(**fields)` that stop at the model's stop tokens (`lm_stop_token_ids`)."""
    return SamplingSettings(stop_ids=tuple(lm_stop_token_ids(lm)), **fields)


def spec_sampling(lm: LoadedModel, spec, seed: int) -> SamplingSettings:
    """The sampling settings of a measurement spec (its max_new_tokens, temperature, samples and batch_size;
    top-p and top-k off, as the paper samples), seeded with the cell's seed, stopping at the model's stops."""
    return model_sampling(
        lm,
        max_new_tokens=spec.max_new_tokens,
        temperature=spec.temperature,
        samples=spec.samples,
        batch_size=spec.batch_size,
        seed=seed,
    )


def sample_texts(
    lm: LoadedModel,
    ctx: SteeringContext | None,
    prompts: list[str],
    settings: SamplingSettings,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[Sequence]:
    """`settings.samples` sequences per prompt text (rendered by `render_prompts`), sampled under the
    condition whose steering context is `ctx` (None: whatever is on the model), in prompt order. Every
    copy of a prompt is prefilled (a condition's hooks may keep per-row state); see
    `mechsteer.sequences.sample`."""
    return sample(
        lm.model,
        encode(lm, prompts),
        settings,
        pad_id=pad_id(lm.tokenizer),
        ctx=ctx,
        device=lm.device,
        on_batch=on_batch,
    )
