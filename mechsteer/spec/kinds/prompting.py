"""`prefix_token`: force the assistant turn to open with a token (paper section 4.5: "To" for Qwen, "Step"
for Llama, which the last-layer vector mostly boosts). No hooks: the text is appended right after the chat
generation prompt by the generation engine (`SteeringContext.prompt_suffix`). Torch side:
`mechsteer.interventions.prefix`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mechsteer.errors import NotReplayable
from mechsteer.spec.kinds import intervention_kind
from mechsteer.spec.kinds.interventions import InterventionBase
from mechsteer.spec.models import ModelSpec


@intervention_kind("prefix_token", impl="mechsteer.interventions.prefix:attach_prefix_token")
class PrefixTokenSpec(InterventionBase):
    """Append `token` after the generation prompt, so generation continues after it."""

    kind: Literal["prefix_token"] = "prefix_token"
    token: str | None = Field(default=None, min_length=1)
    """The forced opening ("To", "Step"); null = the model's `prefix_token` (the compiler binds it: `bind`)."""
    single_token: bool = True
    """Require the text to be exactly one token of the model's tokenizer (the paper's experiment); false
    allows a longer forced opening."""

    def vector_refs(self) -> list[str]:
        """None: it changes the prompt, not the activations."""
        return []

    def layer_refs(self):
        """None: it touches no block."""
        return []

    def first_block(self, n_layers, vectors=None):
        """Never: it changes the prompt, so no recorded pass of the unsteered prompt can be reused."""
        raise NotReplayable(
            "prefix_token changes the prompt, so a condition with it cannot reuse the base pass",
            hint="teacher-force its own sequences with a full forward",
        )

    def vllm_unsupported(self):
        """Always a reason: vLLM's prompt path would not carry mechsteer's exact suffix tokens."""
        return (
            "prefix_token is a prompt-text suffix, not a bias; lm-eval's gen_prefix could carry it to vLLM, but it "
            "renders it through the chat template as a partial assistant turn whose token ids are not checked "
            "against mechsteer's raw suffix, so it stays on hf"
        )

    def site(self, layout):
        """The prompt itself: no module of the model is touched."""
        token = repr(self.token) if self.token else "the model entry's prefix_token"
        return f"the prompt: {token} forced right after the generation prompt (no hook on the model)"

    def bind(self, model: ModelSpec, shape, resolve_path):
        """`token` filled from the model entry's `prefix_token` when it names none (Qwen and Llama want
        different openings)."""
        if self.token is not None or model.prefix_token is None:
            return self
        return self.model_copy(update={"token": model.prefix_token})
