"""Tests for mechsteer.eval.templates with small, real `PreTrainedTokenizerFast` tokenizers built in memory.

(Loading the embedded SmolLM2 tokenizer from its GGUF takes 12-17 s, too slow for a unit test; the ChatML
template below is the same kind of template it carries.)
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mechsteer.eval.templates import (
    QWEN_MATH_SYSTEM,
    add_special_tokens_for,
    build_prompt,
    has_chat_template,
    plain_prompt,
)

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "To": 3, "What": 4, "is": 5}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tok.chat_template = chat_template
    return tok


@pytest.fixture
def chat_tok():
    return _tokenizer(CHATML)


@pytest.fixture
def plain_tok():
    return _tokenizer(None)


def test_system_prompt_constant():
    assert QWEN_MATH_SYSTEM == "Please reason step by step, and put your final answer within \\boxed{}."


def test_has_chat_template(chat_tok, plain_tok):
    assert has_chat_template(chat_tok)
    assert not has_chat_template(plain_tok)
    assert not has_chat_template(object())


def test_chat_prompt_is_chatml_with_system_and_generation_prompt(chat_tok):
    prompt = build_prompt(chat_tok, "What is 3 + 4?")
    assert prompt == (
        "<|im_start|>system\n" + QWEN_MATH_SYSTEM + "<|im_end|>\n"
        "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert add_special_tokens_for(chat_tok) is False


def test_prefix_is_appended_after_generation_prompt(chat_tok):
    base = build_prompt(chat_tok, "What is 3 + 4?")
    forced = build_prompt(chat_tok, "What is 3 + 4?", prefix="To")
    assert forced == base + "To"
    assert forced.endswith("<|im_start|>assistant\nTo")
    assert build_prompt(chat_tok, "x", prefix="") == build_prompt(chat_tok, "x")


def test_plain_qwen_math_template_without_chat_template(plain_tok):
    prompt = build_prompt(plain_tok, "What is 3 + 4?")
    assert prompt == (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
        "Please reason step by step, and put your final answer within \\boxed{}."
        "\n\nUser: What is 3 + 4? Assistant:"
    )
    assert "<|im_start|>" not in prompt  # BOS is left to the tokenizer
    assert add_special_tokens_for(plain_tok) is True
    assert build_prompt(plain_tok, "Q", prefix="To").endswith("User: Q Assistant:To")


def test_plain_r1_template(plain_tok):
    prompt = build_prompt(plain_tok, "Find {x}.", template="r1")
    assert prompt.startswith("A conversation between User and Assistant. The User asks a question")
    assert "<answer> </answer> tags" in prompt
    assert prompt.endswith("\nUser: Find {x}.\nAssistant: <think>")
    assert prompt == plain_prompt("Find {x}.", "r1")


def test_r1_with_chat_template_is_rejected(chat_tok):
    with pytest.raises(ValueError, match="qwen_math"):
        build_prompt(chat_tok, "Q", template="r1")


def test_unknown_template_rejected(chat_tok, plain_tok):
    for tok in (chat_tok, plain_tok):
        with pytest.raises(ValueError, match="unknown prompt template"):
            build_prompt(tok, "Q", template="llama")


def test_problem_braces_are_kept_verbatim(chat_tok, plain_tok):
    problem = "Let $f(x)=\\frac{1}{x}$. Find {a}."
    assert problem in build_prompt(chat_tok, problem)
    assert problem in build_prompt(plain_tok, problem)
