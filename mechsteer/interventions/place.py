"""`add_at_place`: row l of a vector set added to the output of a named submodule of block l (paper
Appendix C): after input_layernorm (attention input only), self_attn (attention output, on the residual),
post_attention_layernorm (MLP input only) or mlp (= a down_proj bias = `add`). The adapter maps place names
to modules; the hook is `add`'s (same position selectors, tuple outputs of self_attn handled). Without
`place`, the vector set's metadata `place` (written by `mechsteer train` for `at_place` setups) is used.
"""

from __future__ import annotations

from mechsteer.errors import CompileError
from mechsteer.interventions.add import selected_add_hook, selector_value, vector_rows
from mechsteer.interventions.base import SteeringContext


def attach_add_at_place(spec, ctx: SteeringContext) -> None:
    """Add row l to the output of the chosen submodule of block l (the spec's `place`, else the one the vector set
    records)."""
    vs, layers = vector_rows(spec, ctx)
    place = spec.place or vs.meta.get("place")
    if place is None:
        raise CompileError(
            f"add_at_place: no `place` given and vector set {spec.vector!r} records none",
            hint="set place: input_layernorm | self_attn | post_attention_layernorm | mlp",
        )
    selector = selector_value(spec.positions)
    for i in layers:
        module = ctx.adapter.place_module(ctx.model, i, place)
        vec = (vs.vectors[i] * spec.scale).to(ctx.device, ctx.dtype)
        ctx.scope.forward_hook(module, selected_add_hook(vec, selector, ctx))
