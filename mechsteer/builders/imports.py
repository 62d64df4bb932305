"""Builders for the `mean_diff`, `lm_eval_steered` and `gguf_control` vector kinds (specs in
`mechsteer.spec.kinds.vector_sources`). Imported at the end of `mechsteer.engine.vectors` so they register with
VECTOR_BUILDERS. `mean_diff` needs the model: it reads `BuildContext.lm` (a LoadedModel or a callable
returning one), which the engine sets when it loads each model.
"""

from __future__ import annotations

from mechsteer.engine.vectors import BuildContext, subset
from mechsteer.vectors.vector_set import VectorSet


def build_lm_eval_steered(spec, ctx: BuildContext) -> VectorSet:
    from mechsteer.vectors.io_formats import load_lm_eval_steered

    vs = load_lm_eval_steered(spec.path, ctx.n_layers, ctx.d_model, apply_coefficient=spec.apply_coefficient)
    return subset(vs, spec.layers, ctx, f"lm-eval steering file {spec.path}")


def build_gguf_control(spec, ctx: BuildContext) -> VectorSet:
    from mechsteer.vectors.io_formats import load_gguf_control

    vs = load_gguf_control(spec.path, ctx.n_layers, ctx.d_model, scale=spec.scale)
    return subset(vs, spec.layers, ctx, f"GGUF control vector {spec.path}")
