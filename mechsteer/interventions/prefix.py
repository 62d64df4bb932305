"""`prefix_token`: force the assistant turn to open with a token ("To" for Qwen, "Step" for Llama; paper
section 4.5). No hooks: the text goes into `ctx.prompt_suffix`, which the generation engine appends right
after the chat generation prompt, so the model continues after it exactly as if the token were part of the
prompt. With `single_token`, the text must add exactly one token when appended to a rendered generation
prompt (checked in context, since tokenizers may merge text across the boundary); its id is exposed as
`ctx.extras["prefix_token.id"]`. The check needs `ctx.tokenizer` (the engine always passes it); without
one (unit tests) it is skipped.

A spec without `token` takes the model entry's `prefix_token`: the compiler must apply
`PrefixTokenSpec.bind(model_spec, ...)` per model; otherwise attaching reports the missing token.
"""

from __future__ import annotations

from mechsteer.errors import CompileError
from mechsteer.interventions.base import SteeringContext


def _generation_prompt(tokenizer) -> str:
    """A rendered generation prompt to test the token in context (plain text for template-less tokenizers)."""
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
            )
        except Exception:  # noqa: BLE001, S110 - a template that needs other roles/fields: fall back to plain text
            pass
    return "User: 1+1? Assistant:"


def appended_token_ids(tokenizer, text: str) -> list[int]:
    """The ids `text` adds when appended to a generation prompt (error if it changes the prompt's own ids)."""
    base = _generation_prompt(tokenizer)
    ids0 = tokenizer(base, add_special_tokens=False)["input_ids"]
    ids1 = tokenizer(base + text, add_special_tokens=False)["input_ids"]
    if ids1[: len(ids0)] != ids0:
        raise CompileError(
            f"prefix_token {text!r} merges with the end of the generation prompt when tokenized",
            hint="choose text that starts a new token",
        )
    return ids1[len(ids0) :]


def attach_prefix_token(spec, ctx: SteeringContext) -> None:
    """Force the assistant's opening: set the condition's prompt suffix to the token (checked to be one token when
    `single_token`); no hook, only the prompt changes."""
    if spec.token is None:
        raise CompileError(
            "prefix_token names no token and the model entry has no `prefix_token`",
            hint="set `token:` (e.g. To for Qwen, Step for Llama) or the model's `prefix_token`",
        )
    if ctx.prompt_suffix:
        raise CompileError(
            f"this condition already forces the opening {ctx.prompt_suffix!r}; one prefix_token per condition"
        )
    if spec.single_token and ctx.tokenizer is not None:
        ids = appended_token_ids(ctx.tokenizer, spec.token)
        if len(ids) != 1:
            pieces = ctx.tokenizer.convert_ids_to_tokens(ids)
            raise CompileError(
                f"prefix_token {spec.token!r} is {len(ids)} tokens for this tokenizer ({pieces}), not one",
                hint="pick a single-token opening (To for Qwen, Step for Llama) or set single_token: false",
            )
        ctx.extras["prefix_token.id"] = ids[0]
    ctx.prompt_suffix = spec.token
