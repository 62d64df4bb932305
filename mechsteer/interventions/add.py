"""`add`: the paper's steering. Row l of a vector set is added to the residual stream after decoder block l
(the output of block l), which is exactly a bias on block l's `mlp.down_proj` (tested). Positions default to
all tokens, prompt and generated, as in the paper; a selector narrows them using the position tracker.
"""

from __future__ import annotations

import torch

from mechsteer.errors import CompileError
from mechsteer.interventions.base import SteeringContext
from mechsteer.models.adapters import decoder_output_tensor, replace_decoder_output


def selector_value(positions):
    """Spec selector -> tracker selector: "all" | "prompt" | "generated" | int k."""
    if isinstance(positions, str):
        return positions
    return positions.first_k_generated


def add_hook(vec: torch.Tensor, tracker=None, selector="all"):
    """A forward hook adding `vec` to a module's hidden-state output: at every position, or, with a position
    tracker, at the positions `selector` picks. `vec` may be a trainable parameter (training uses this same
    hook; the cast to the activation dtype keeps the gradient flowing to it)."""

    def hook(module, args, output):
        h = decoder_output_tensor(output)
        v = vec if vec.dtype == h.dtype and vec.device == h.device else vec.to(h.device, h.dtype)
        h = h + v if tracker is None else h + tracker.mask(selector, h.device, h.dtype) * v
        return replace_decoder_output(output, h)

    return hook


def selected_add_hook(vec: torch.Tensor, selector, ctx: SteeringContext):
    """`add_hook` for a spec's position selector (the tracker is attached only when positions matter)."""
    return add_hook(vec, ctx.positions() if selector != "all" else None, selector)


def vector_rows(spec, ctx: SteeringContext):
    """(vector set, layers) of an intervention with `vector` and `layer` fields: `all` = every row the set
    has; named layers must all be rows of the set."""
    vs = ctx.vector(spec.vector)
    if spec.layer == "all":
        return vs, list(vs.layers)
    layers = ctx.layers(spec.layer, f"{spec.kind}.layer of vector set {spec.vector!r}")
    missing = [i for i in layers if i not in vs.layers]
    if missing:
        raise CompileError(
            f"vector set {spec.vector!r} has no rows for layers {missing}", hint=f"its rows: {vs.layers}"
        )
    return vs, layers


def attach_add(spec, ctx: SteeringContext) -> None:
    """Add row l of the vector set (times `scale`) to block l's output for every selected block, at the positions
    the spec selects."""
    vs, layers = vector_rows(spec, ctx)
    selector = selector_value(spec.positions)
    for i in layers:
        vec = (vs.vectors[i] * spec.scale).to(ctx.device, ctx.dtype)
        ctx.scope.forward_hook(ctx.adapter.layer(ctx.model, i), selected_add_hook(vec, selector, ctx))
