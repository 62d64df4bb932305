"""Which conditions a bias-compiled checkpoint (and so stock vLLM) can run exactly (torch-free: the compiler
asks it for every cell)."""

from __future__ import annotations

WHY_NOT = {
    "skip_attn": "circuit surgery (skip_attn) changes a block's computation, not a bias",
    "skip_layer": "circuit surgery (skip_layer) changes a block's computation, not a bias",
    "qkv": "circuit surgery (qkv) edits attention internals per head",
    "head": "head splicing edits attention internals per head",
    "transfer": "transfer is only compiled when written as `add`",
    "compose": "compose is only compiled when written as `add` interventions",
    "add_at_place": "add_at_place adds at one place inside a block, not on the residual stream at all positions",
    "lora1": "lora1 is an input-dependent rank-1 update, not a constant bias",
    "prefix_token": (
        "prefix_token is a prompt-text suffix, not a bias; lm-eval's gen_prefix could carry it to vLLM, but it "
        "renders it through the chat template as a partial assistant turn whose token ids are not checked "
        "against mechsteer's raw suffix, so it stays on hf"
    ),
}


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
    """(can a bias-compiled checkpoint run this condition exactly?, why). Only `add` at positions `all` (any
    layers, any scale, several summed) is a constant down_proj bias; the empty condition is the base model.
    `architecture` (the model's, when known): a Gemma model runs nothing there (`architecture_problem`)."""
    arch_why = architecture_problem(architecture)
    if arch_why:
        return False, arch_why
    for spec in interventions:
        kind = getattr(spec, "kind", type(spec).__name__)
        if kind == "add":
            if spec.positions != "all":
                sel = spec.positions if isinstance(spec.positions, str) else spec.positions.model_dump()
                return False, (
                    f"add with positions {sel!r} is position-selective; a checkpoint bias acts on "
                    "every position (only positions: all compiles)"
                )
            continue
        return False, WHY_NOT.get(kind, f"{kind} is not an all-position add")
    return True, (
        "no intervention: the base model" if not interventions else "all-position add: compiled into down_proj biases"
    )
