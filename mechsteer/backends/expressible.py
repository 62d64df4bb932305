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


def vllm_expressible(interventions: list) -> tuple[bool, str]:
    """(can a bias-compiled checkpoint run this condition exactly?, why). Only `add` at positions `all` (any
    layers, any scale, several summed) is a constant down_proj bias; the empty condition is the base model."""
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
