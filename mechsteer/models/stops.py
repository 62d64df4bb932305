"""Which tokens end a completion: the chat template's end-of-turn token and a model entry's `stop:` strings.

The generation config's eos is not always the token that closes an assistant turn (Qwen2.5-Math-7B's is
`<|endoftext|>` while its chat template closes turns with `<|im_end|>`), so the end-of-turn token is read
from the template itself: a conversation with a marked assistant message is rendered and the special token
that directly follows the mark is the one the template writes to close the turn. No token names are guessed.
"""

from __future__ import annotations

from mechsteer.errors import ModelLoadError

_MARK = "MECHSTEERENDOFTURNPROBE"


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant message, or None (no template,
    a template that does not render a plain user/assistant exchange, or no special token after the text)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    conv = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": _MARK}]
    try:
        text = tokenizer.apply_chat_template(conv, tokenize=False)
    except Exception:  # noqa: BLE001 - a template may reject this conversation shape; nothing is derived
        return None
    if not isinstance(text, str) or _MARK not in text:
        return None
    tail = text[text.rindex(_MARK) + len(_MARK) :]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    if ids and ids[0] in _special_ids(tokenizer):
        return int(ids[0])
    return None


def stop_string_ids(tokenizer, strings, model_id: str = "?") -> list[int]:
    """Token ids of a model entry's `stop:` strings; each must be exactly one token of the vocabulary."""
    out = []
    for s in strings or ():
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ModelLoadError(
                f"models[{model_id!r}].stop: {s!r} is {len(ids)} tokens for this tokenizer, not one",
                hint="list single tokens only (e.g. '<|im_end|>' or '<|eot_id|>'); "
                "the tokenizer's special tokens are in its tokenizer_config.json",
            )
        out.append(int(ids[0]))
    return out
