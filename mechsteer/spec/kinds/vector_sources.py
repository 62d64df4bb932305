"""Cheaper vector sources (torch-free specs): activation differences computed with the model, and imports of
other tools' steering files. Builders live in `mechsteer.builders.imports`.

* `mean_diff`: mean residual-stream activation after each chosen block on prompts A minus prompts B
  (contrastive activation addition), or on the model's own correct minus incorrect generations;
* `lm_eval_steered`: a `.pt` file of lm-evaluation-harness's `steered` model (`{"layers.N": {...}}`),
  read with `torch.load(weights_only=True)` (never unpickling code);
* `gguf_control`: a llama.cpp / repeng control vector (GGUF, tensors `direction.N` = added after block N).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import vector_kind
from mechsteer.spec.kinds.vectors import VectorSourceBase, stand_in_file
from mechsteer.spec.layers import LayerSelection
from mechsteer.spec.paths import file_content_key
from mechsteer.spec.templates import PromptTemplateOrRaw


class CorrectVsIncorrect(StrictModel):
    """Sample the model on a task, grade it, and contrast the activations of correct and incorrect answers
    (averaged over the generated tokens)."""

    task: Literal["mini"] = "mini"
    """Task whose problems are sampled (the bundled task)."""
    split: Literal["train", "test"] = "train"
    """Split of the task; use `train` so that the held-out problems stay unseen."""
    n: int = Field(default=32, gt=0)
    """Problems."""
    samples: int = Field(default=4, gt=0)
    """Samples per problem."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature."""
    max_new_tokens: int = Field(default=64, gt=0)
    """New tokens per sample."""
    grader: Literal["boxed", "last_number", "boxed_or_last_number"] = "boxed_or_last_number"
    """Which grader decides correct."""
    seed: int = 0
    """Sampling seed."""


@vector_kind("mean_diff", impl="mechsteer.builders.mean_diff:build_mean_diff")
class MeanDiffVectors(VectorSourceBase):
    """Mean activation difference at chosen blocks (the output of block l, where `add` adds row l).

    Either two prompt sets (`positive` minus `negative`), or `generations` (correct minus incorrect)."""

    kind: Literal["mean_diff"] = "mean_diff"
    positive: list[str] | None = None
    """Prompts whose mean activation is the + side."""
    negative: list[str] | None = None
    """Prompts whose mean activation is the - side."""
    generations: CorrectVsIncorrect | None = None
    """Contrast the model's correct and incorrect answers instead of two prompt sets."""
    layers: LayerSelection = "all"
    """Blocks to compute (the vector set's rows)."""
    position: Literal["last", "mean"] = "last"
    """Prompt sets: the activation at each prompt's last token (as repeng does) or the mean over its tokens."""
    template: PromptTemplateOrRaw = "raw"
    """Render prompts with a template first (`raw` = the text as given, chat-wrapped for chat models)."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts per forward pass."""

    @model_validator(mode="after")
    def _one_source(self):
        pair = self.positive is not None or self.negative is not None
        if pair == (self.generations is not None):
            raise ValueError("give either `positive` and `negative` prompt lists, or `generations`")
        if pair and (not self.positive or not self.negative):
            raise ValueError("`positive` and `negative` must both be non-empty lists of prompts")
        return self

    def depends_on(self) -> dict[str, str]:
        """None: it is computed from prompts on the model."""
        return {}

    def content_key(self) -> dict:
        """The spec: the set is computed from it and the model (whose content is in the cell key)."""
        return self.model_dump(mode="json")

    def rehearsed(self, r):
        """Computed on the twin as written, with the generations contrast shrunk to the rehearsal's caps."""
        if self.generations is None:
            return self
        g, caps = self.generations, r.caps
        small = g.model_copy(
            update={
                "n": caps.cap(g.n, caps.problems),
                "samples": caps.cap(g.samples, caps.samples),
                "max_new_tokens": caps.cap(g.max_new_tokens, caps.new_tokens),
            }
        )
        return self.model_copy(update={"generations": small})


@vector_kind("lm_eval_steered", impl="mechsteer.builders.imports:build_lm_eval_steered")
class LmEvalSteeredVectors(VectorSourceBase):
    """Import the `.pt` steering file of lm-evaluation-harness's `steered` model.

    Each entry `layers.N` with `action: add` becomes row N (lm-eval hooks `model.base_model.layers.N`,
    i.e. the output of block N, as mechsteer's `add` does). `clamp`, `bias` and `head_index` have no
    `add` equivalent and are rejected with a clear error."""

    kind: Literal["lm_eval_steered"] = "lm_eval_steered"
    path: str = Field(min_length=1)
    """Path to the `.pt` file, relative to the study file."""
    apply_coefficient: bool = True
    """Multiply each vector by its `steering_coefficient` (what lm-eval adds)."""
    layers: LayerSelection | None = None
    """Keep only these rows; null keeps every row in the file."""

    def depends_on(self) -> dict[str, str]:
        """None: the set is imported from its file."""
        return {}

    def content_key(self) -> dict:
        """The spec with the `.pt` file's sha256 in place of its path."""
        return file_content_key(self)

    def rehearsed(self, r):
        """A mechsteer `file` set of random rows of the twin's shape (every row) in place of the imported file."""
        return stand_in_file(r, Path(self.path).stem, None, self.layers)


@vector_kind("gguf_control", impl="mechsteer.builders.imports:build_gguf_control")
class GgufControlVectors(VectorSourceBase):
    """Import a llama.cpp / repeng control vector (GGUF with 1-D float tensors `direction.N`, N = block)."""

    kind: Literal["gguf_control"] = "gguf_control"
    path: str = Field(min_length=1)
    """Path to the `.gguf` file, relative to the study file."""
    scale: float = 1.0
    """Strength multiplier (llama.cpp's `--control-vector-scaled FILE SCALE`)."""
    layers: LayerSelection | None = None
    """Keep only these rows; null keeps every row in the file."""

    def depends_on(self) -> dict[str, str]:
        """None: the set is imported from its file."""
        return {}

    def content_key(self) -> dict:
        """The spec with the GGUF file's sha256 in place of its path."""
        return file_content_key(self)

    def rehearsed(self, r):
        """A mechsteer `file` set of random rows of the twin's shape (every row) in place of the imported file."""
        return stand_in_file(r, Path(self.path).stem, None, self.layers)
