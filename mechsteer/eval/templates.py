"""The paper's prompt templates (digest section 3.4, the authors' `policy_model.tokenize_example`).

* A tokenizer WITH a chat template gets the `qwen_math` messages: system = `QWEN_MATH_SYSTEM`, user = the
  problem, rendered by `tokenizer.apply_chat_template(..., add_generation_prompt=True)`.
* A tokenizer WITHOUT one (base models) gets a plain-text template: the authors' `qwen_math` or `r1`, or
  mechsteer's `qa` / `qa_fewshot` ("Question: ...\nAnswer:"), written for small base models such as the
  embedded Gemma 3 270M that do not follow an instruction to reason and box: they answer on one line and then
  go on to invent the next question, so these two are used with a newline stop (a model entry's
  `stop: ["\n"]`). `qa_fewshot` shows three worked examples first; their problems (a subtraction, a half, a
  count) share no problem with any variant of the bundled `mini` task, which only adds and multiplies.
  Measured on the `mini` task: `benchmarks/gemma_templates.py`.
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

from mechsteer.spec.templates import PLAIN_TEMPLATES

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

# mechsteer's one-line-answer templates for small base models (not the paper's; see the module docstring).
QA_PLAIN = "Question: {question}\nAnswer:"
QA_FEWSHOT_EXAMPLES = (
    ("What is 15 - 8?", "7"),
    ("What is half of 18?", "9"),
    ("How many legs do 3 cats have?", "12"),
)
QA_FEWSHOT_PLAIN = (
    "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in QA_FEWSHOT_EXAMPLES).replace("{", "{{").replace("}", "}}")
    + QA_PLAIN
)

_PLAIN = {"qwen_math": QWEN_MATH_PLAIN, "r1": R1_PLAIN, "qa": QA_PLAIN, "qa_fewshot": QA_FEWSHOT_PLAIN}
TEMPLATES = PLAIN_TEMPLATES
assert set(_PLAIN) == set(TEMPLATES), "every template name (mechsteer.spec.templates) needs a text here"


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
    """The plain-text (no chat template) prompt for `template` (one of `TEMPLATES`), without BOS."""
    if template not in _PLAIN:
        raise ValueError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}")
    return _PLAIN[template].format(question=problem)


def _chat_prompt(tokenizer: Any, problem: str, template: str) -> str:
    if template != "qwen_math":
        # The authors assert this too: `r1` is a base-model template with its own "Assistant: <think>" turn
        # (and `qa` / `qa_fewshot` are base-model templates too).
        raise ValueError(
            f"template {template!r} is for tokenizers without a chat template; "
            "a chat-template tokenizer uses 'qwen_math' (as in the paper)"
        )
    return tokenizer.apply_chat_template(qwen_math_messages(problem), add_generation_prompt=True, tokenize=False)


def build_prompt(tokenizer: Any, problem: str, template: str = "qwen_math", prefix: str | None = None) -> str:
    """The prompt text for one problem, as the paper builds it; `prefix` forces the assistant's opening.

    With a chat template: the rendered `qwen_math` messages with the generation prompt. Without: the plain
    text of `template`. `prefix` (e.g. "To") is appended verbatim after the generation prompt.
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
