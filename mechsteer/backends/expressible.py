"""Which conditions a bias-compiled checkpoint (and so stock vLLM) can run exactly (torch-free: the compiler
asks it for every cell). Each intervention kind answers for itself (`InterventionBase.vllm_unsupported`)."""

from __future__ import annotations

NORM_AFTER_MLP = (
    "its post-feed-forward norm (post_feedforward_layernorm) follows down_proj, so a down_proj bias is not an "
    "`add`, and a bias-compiled checkpoint (a Llama with MLP biases) cannot carry this architecture"
)
"""Why Gemma-family models never compile (Gemma2 and Gemma3 normalise the MLP output before the residual add)."""


def architecture_problem(architecture: str | None) -> str | None:
    """Why no condition of a model of this architecture (`Gemma3ForCausalLM`, or a config's `gemma3_text`)
    can run on a bias-compiled checkpoint, or None. Unknown (None) is left to the compiler."""
    if architecture and architecture.lower().startswith("gemma"):
        return f"{architecture}: {NORM_AFTER_MLP}"
    return None


def vllm_expressible(interventions: list, architecture: str | None = None) -> tuple[bool, str]:
    """(can a bias-compiled checkpoint run this condition exactly?, why). Each intervention answers for itself
    (`vllm_unsupported`: None when it is a constant down_proj bias, today `add` at positions `all`); the
    reason is the first one's answer when it cannot, and the empty condition is the base model.
    `architecture` (the model's, when known): a Gemma model runs nothing there (`architecture_problem`)."""
    arch_why = architecture_problem(architecture)
    if arch_why:
        return False, arch_why
    for spec in interventions:
        why = spec.vllm_unsupported()
        if why:
            return False, why
    return True, (
        "no intervention: the base model"
        if not interventions
        else "every intervention is a constant bias: compiled into down_proj biases"
    )
