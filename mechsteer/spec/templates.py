"""The names of the prompt templates a study or training file may choose (torch-free; the texts and their
rendering are `mechsteer.eval.templates`). One list, so every field that takes a template accepts the same
names and the schema says them once."""

from __future__ import annotations

from typing import Literal

PromptTemplate = Literal["qwen_math", "r1", "qa", "qa_fewshot"]
"""`qwen_math`: the paper's boxed-answer prompt (the chat messages on a chat model, the authors' plain text on
a base model). `r1`: the authors' <think>/<answer> base-model prompt. `qa` and `qa_fewshot`: short
"Question: ...\\nAnswer:" prompts for base models that answer on one line (zero-shot, or after three worked
examples that share no problem with the bundled `mini` task); use them with a newline stop
(`models.<name>.stop: ["\\n"]`), or the model goes on to write the next question."""

PromptTemplateOrRaw = Literal["qwen_math", "r1", "qa", "qa_fewshot", "raw"]
"""A template, or `raw`: the text as given (wrapped in the chat template on a chat model)."""

PLAIN_TEMPLATES: tuple[str, ...] = PromptTemplate.__args__
"""The template names, in order."""
