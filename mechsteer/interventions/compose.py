"""`compose`: several single-layer vectors, each from its own vector set, added together after their blocks
(paper Appendix D). Each part adds row l of its set after block l at every position, exactly like `add`.
"""

from __future__ import annotations

from mechsteer.errors import CompileError
from mechsteer.interventions.add import add_hook
from mechsteer.interventions.base import SteeringContext


def attach_compose(spec, ctx: SteeringContext) -> None:
    """Add each part's row at its own block (single-layer vectors trained alone, combined), checking that every set
    has the row it is asked for."""
    for i, part in enumerate(spec.parts):
        vs = ctx.vector(part.vector)
        (layer,) = ctx.layers(part.layer, f"compose.parts[{i}].layer")
        if layer not in vs.layers:
            raise CompileError(
                f"compose.parts[{i}]: vector set {part.vector!r} has no row for layer {layer}",
                hint=f"its rows: {vs.layers}",
            )
        vec = (vs.vectors[layer] * part.scale).to(ctx.device, ctx.dtype)
        ctx.scope.forward_hook(ctx.adapter.layer(ctx.model, layer), add_hook(vec))
