"""Which tokens end a completion: the chat template's end-of-turn token and a model entry's `stop:` strings.

A `stop:` entry is one token of the vocabulary, or `"\n"`: the end of the line, i.e. every token whose text is
only newlines. Base models such as the embedded Gemma 3 270M answer on one line and then go on to invent the
next question; Gemma's tokenizer has one token per run of 1 to 31 newlines, so the single
`\n` token alone would miss a blank line (measured: `benchmarks/gemma_templates.py`).

The generation config's eos is not always the token that closes an assistant turn (Qwen2.5-Math-7B's is
`<|endoftext|>` while its chat template closes turns with `<|im_end|>`), so the end-of-turn token is read
from the template itself: a conversation with a marked assistant message is rendered and the special token
that directly follows the mark is the one the template writes to close the turn. No token names are guessed.
"""

from __future__ import annotations

import weakref

from mechsteer.errors import ModelLoadError

_MARK = "MECHSTEERENDOFTURNPROBE"
NEWLINE = "\n"
"""The `stop:` entry that means "at the end of the line" (every newline-only token)."""
_NEWLINE_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def newline_ids(tokenizer) -> list[int]:
    """Every token id whose decoded text is one or more newlines and nothing else (memoised per tokenizer:
    the scan decodes the whole vocabulary once)."""
    try:
        return _NEWLINE_IDS[tokenizer]
    except (KeyError, TypeError):
        pass
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
    ids = [i for i, t in enumerate(texts) if t and not t.strip("\n")]
    try:
        _NEWLINE_IDS[tokenizer] = ids
    except TypeError:  # a tokenizer that cannot be weakly referenced is scanned each time
        pass
    return ids


def stop_string_ids(tokenizer, strings, model_id: str = "?") -> list[int]:
    """Token ids of a model entry's `stop:` strings: each must be exactly one token of the vocabulary, except
    `"\n"`, which stands for every newline-only token (`newline_ids`)."""
    out = []
    for s in strings or ():
        if s == NEWLINE:
            found = newline_ids(tokenizer)
            if not found:
                raise ModelLoadError(
                    f"models[{model_id!r}].stop: this tokenizer has no newline token", hint="remove the '\\n' entry"
                )
            out += [i for i in found if i not in out]
            continue
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ModelLoadError(
                f"models[{model_id!r}].stop: {s!r} is {len(ids)} tokens for this tokenizer, not one",
                hint="list single tokens only (e.g. '<|im_end|>' or '<|eot_id|>'), or '\\n' for the end of the "
                "line; the tokenizer's special tokens are in its tokenizer_config.json",
            )
        if int(ids[0]) not in out:
            out.append(int(ids[0]))
    return out
