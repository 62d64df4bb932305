"""Builders for the `lm_eval_steered` and `gguf_control` vector kinds (specs in
`mechsteer.spec.kinds.vector_sources`, whose registrations name these functions; `mean_diff` has its own
module, `mechsteer.builders.mean_diff`)."""

from __future__ import annotations

from mechsteer.builders.context import BuildContext, subset
from mechsteer.vectors.vector_set import VectorSet


def build_lm_eval_steered(spec, ctx: BuildContext) -> VectorSet:
    """Rows from an lm-eval `steered` .pt file (`action: add` entries only)."""
    from mechsteer.vectors.io_formats import load_lm_eval_steered

    vs = load_lm_eval_steered(spec.path, ctx.n_layers, ctx.d_model, apply_coefficient=spec.apply_coefficient)
    return subset(vs, spec.layers, ctx, f"lm-eval steering file {spec.path}")


def build_gguf_control(spec, ctx: BuildContext) -> VectorSet:
    """Rows from a llama.cpp / repeng GGUF control vector (`direction.N` = added after block N)."""
    from mechsteer.vectors.io_formats import load_gguf_control

    vs = load_gguf_control(spec.path, ctx.n_layers, ctx.d_model, scale=spec.scale)
    return subset(vs, spec.layers, ctx, f"GGUF control vector {spec.path}")
