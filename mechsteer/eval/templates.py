"""The paper's prompt templates (digest section 3.4, the authors' `policy_model.tokenize_example`).

* A tokenizer WITH a chat template gets the `qwen_math` messages: system = `QWEN_MATH_SYSTEM`, user = the
  problem, rendered by `tokenizer.apply_chat_template(..., add_generation_prompt=True)`.
* A tokenizer WITHOUT one (base models) gets a plain-text template: `qwen_math` or `r1`.
* `prefix` (the paper's `append_to`, e.g. "To") is appended right after the generation prompt so that the
  assistant turn is forced to open with it.

`build_prompt` returns TEXT, not token ids. Decision on BOS: the text never contains a BOS token of its own
making. The authors prepended `bos` to the plain templates by hand; here the tokenizer adds it when the
caller tokenizes plain prompts with `add_special_tokens=True` (Llama, Gemma and SmolLM tokenizers do; Qwen
has no BOS, as in the authors' runs). Chat-template text already contains whatever BOS the template writes
(e.g. Llama-3's `<|begin_of_text|>`), so it must be tokenized with `add_special_tokens=False` to avoid a
second BOS. `add_special_tokens_for(tokenizer)` returns the right flag for a prompt built here.
"""

from __future__ import annotations

from typing import Any

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

# Plain-text templates for tokenizers without a chat template (verbatim from the authors' code).
QWEN_MATH_PLAIN = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "Please reason step by step, and put your final answer within \\boxed{{}}."
    "\n\nUser: {question} Assistant:"
)
R1_PLAIN = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer "
    "here </answer>.\nUser: {question}\nAssistant: <think>"
)

TEMPLATES = ("qwen_math", "r1")


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template (a non-empty string or a dict of named templates)."""
    template = getattr(tokenizer, "chat_template", None)
    return bool(template)


def qwen_math_messages(problem: str) -> list[dict[str, str]]:
    """The chat messages the paper uses: the boxed-answer system prompt, then the problem as the user."""
    return [
        {"role": "system", "content": QWEN_MATH_SYSTEM},
        {"role": "user", "content": problem},
    ]


def plain_prompt(problem: str, template: str = "qwen_math") -> str:
    """The plain-text (no chat template) prompt for `template` ("qwen_math" or "r1"), without BOS."""
    if template == "qwen_math":
        return QWEN_MATH_PLAIN.format(question=problem)
    if template == "r1":
        return R1_PLAIN.format(question=problem)
    raise ValueError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}")


def _chat_prompt(tokenizer: Any, problem: str, template: str) -> str:
    if template != "qwen_math":
        # The authors assert this too: `r1` is a base-model template with its own "Assistant: <think>" turn.
        raise ValueError(
            f"template {template!r} is for tokenizers without a chat template; "
            "a chat-template tokenizer uses 'qwen_math' (as in the paper)"
        )
    return tokenizer.apply_chat_template(qwen_math_messages(problem), add_generation_prompt=True, tokenize=False)


def build_prompt(tokenizer: Any, problem: str, template: str = "qwen_math", prefix: str | None = None) -> str:
    """The prompt text for one problem, as the paper builds it; `prefix` forces the assistant's opening.

    With a chat template: the rendered `qwen_math` messages with the generation prompt. Without: the plain
    `qwen_math` / `r1` template. `prefix` (e.g. "To") is appended verbatim after the generation prompt.
    Tokenize the result with `add_special_tokens=add_special_tokens_for(tokenizer)`.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}")
    if has_chat_template(tokenizer):
        text = _chat_prompt(tokenizer, problem, template)
    else:
        text = plain_prompt(problem, template)
    return text + prefix if prefix else text


def add_special_tokens_for(tokenizer: Any) -> bool:
    """`add_special_tokens` to use when tokenizing a `build_prompt` text (False for chat, True for plain)."""
    return not has_chat_template(tokenizer)
