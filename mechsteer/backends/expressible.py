"""Which conditions a bias-compiled checkpoint (and so stock vLLM) can run exactly (torch-free: the compiler
asks it for every cell). Each intervention kind answers for itself (`InterventionBase.vllm_unsupported`)."""

from __future__ import annotations


def vllm_expressible(interventions: list) -> tuple[bool, str]:
    """(can a bias-compiled checkpoint run this condition exactly?, why). Only `add` at positions `all` (any
    layers, any scale, several summed) is a constant down_proj bias; the empty condition is the base model.
    The reason is the first intervention's own answer (`vllm_unsupported`) when it cannot."""
    for spec in interventions:
        why = spec.vllm_unsupported()
        if why:
            return False, why
    return True, (
        "no intervention: the base model" if not interventions else "all-position add: compiled into down_proj biases"
    )
