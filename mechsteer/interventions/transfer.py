"""`transfer`: add a donor model's vector set to the recipient model (paper section 4.10: the donor's
`down_proj` biases copied layer by layer, no rescaling). Row l goes after recipient block l
(`same_index`), or after the block at the same relative depth (`relative_depth`). Width must match, and
depth too for `same_index`; the error names both shapes. The layer map used is recorded in
`ctx.extras["transfer"]` for provenance.

A set read by `transfer` keeps its own shape when a study builds it (the engine skips the recipient-shape
check for it and `validate` leaves it to this check), so a donor of another depth works from a study file
(`tests/integration/test_transfer_yaml.py`).
"""

from __future__ import annotations

from mechsteer.errors import CompileError
from mechsteer.interventions.add import add_hook
from mechsteer.interventions.base import SteeringContext
from mechsteer.spec.kinds.combine import depth_map, transfer_problem


def attach_transfer(spec, ctx: SteeringContext) -> None:
    """Add a donor model's rows to the recipient's blocks (same index, or mapped by relative depth), refusing shapes
    that do not map and two rows landing on one block; records the map in `ctx.extras["transfer"]`."""
    vs = ctx.vector(spec.vector)
    sh = ctx.shape
    donor = spec.donor or vs.meta.get("model") or f"vector set {spec.vector!r}"
    recipient = getattr(ctx.model.config, "_name_or_path", "") or sh.architecture
    msg = transfer_problem(donor, vs.n_layers, vs.d_model, recipient, sh.n_layers, sh.d_model, spec.layer_map)
    if msg:
        raise CompileError(msg)
    targets: dict[int, int] = {}
    for src in vs.layers:
        dst = depth_map(vs.n_layers, sh.n_layers, src) if spec.layer_map == "relative_depth" else src
        if dst in targets:
            raise CompileError(
                f"transfer: donor rows {targets[dst]} and {src} both map to recipient block {dst} "
                f"({vs.n_layers} -> {sh.n_layers} layers by relative depth)",
                hint="select fewer donor rows (the vector set's `layers:`)",
            )
        targets[dst] = src
    for dst, src in sorted(targets.items()):
        vec = (vs.vectors[src] * spec.scale).to(ctx.device, ctx.dtype)
        ctx.scope.forward_hook(ctx.adapter.layer(ctx.model, dst), add_hook(vec))
    ctx.extras.setdefault("transfer", []).append(
        {"vector": spec.vector, "donor": donor, "layer_map": {src: dst for dst, src in targets.items()}}
    )
