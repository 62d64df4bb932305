"""Attach functions of the block-surgery kinds (`skip_attn`, `skip_layer`, `qkv`, `head`): each turns its spec
into a `SplicePlan` (which heads of which projection take the vanilla value) and hands it to a
`BlockSplicer` (mechanism: `mechsteer.interventions.splice`; semantics: `mechsteer.spec.kinds.circuit`).

The vector s is row B-1 of the named vector set for spliced block B.
"""

from __future__ import annotations

import torch

from mechsteer.errors import CompileError
from mechsteer.interventions.base import SteeringContext
from mechsteer.interventions.splice import BlockSplicer, SplicePlan

_BLOCKS_KEY = "surgery.blocks"
"""ctx.extras key: the blocks spliced in this condition (a second splice of one block is an error: the two
would overwrite each other's inputs)."""


def _check(spec, ctx: SteeringContext) -> int:
    """Shape checks (the same as `validate`, now against the real model) and the spliced block index."""
    problems = spec.shape_problems(ctx.shape)
    if problems:
        raise CompileError("; ".join(f"{spec.kind}.{'.'.join(map(str, sub))}: {msg}" for sub, msg in problems))
    (b,) = ctx.layers(spec.layer, f"{spec.kind}.layer")
    spliced = ctx.extras.setdefault(_BLOCKS_KEY, [])
    if b in spliced:
        raise CompileError(
            f"{spec.kind}: block {b} is already spliced by another intervention of this condition",
            hint="one surgery per block and condition; qkv takes several projections at once",
        )
    spliced.append(b)
    return b


def _vector(spec, ctx: SteeringContext, b: int) -> torch.Tensor:
    vs = ctx.vector(spec.vector)
    if b - 1 not in vs.layers:
        raise CompileError(
            f"{spec.kind} on block {b} takes s from row {b - 1} (the block before it) of vector set "
            f"{spec.vector!r}, which has no such row",
            hint=f"its rows: {vs.layers}; splice block r+1 to use row r",
        )
    return vs.row(b - 1)


def _mask(heads, n: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    if heads == "all":
        m[:] = True
    elif heads:
        m[list(heads)] = True
    return m


def _apply(plan: SplicePlan, spec, ctx: SteeringContext, b: int) -> None:
    BlockSplicer(plan, _vector(spec, ctx, b), ctx).attach(ctx.scope)


def attach_skip_attn(spec, ctx: SteeringContext) -> None:
    """Splice the block so that its attention (Q, K and V of every head) sees the vanilla stream."""
    b = _check(spec, ctx)
    sh = ctx.shape
    van = {"q": _mask("all", sh.n_heads), "k": _mask("all", sh.n_kv_heads), "v": _mask("all", sh.n_kv_heads)}
    _apply(SplicePlan(b, van, spec.patch_path), spec, ctx, b)


def attach_skip_layer(spec, ctx: SteeringContext) -> None:
    """Run the whole block on the vanilla stream and add s after it."""
    b = _check(spec, ctx)
    _apply(SplicePlan(b, skip_layer=True), spec, ctx, b)


def attach_qkv(spec, ctx: SteeringContext) -> None:
    """Splice the selected heads of the named projections: vanilla for `remove_from`, the only steered ones for
    `steer_only`."""
    b = _check(spec, ctx)
    sh = ctx.shape
    n = {"q": sh.n_heads, "k": sh.n_kv_heads, "v": sh.n_kv_heads}
    van = {}
    for p in ("q", "k", "v"):
        if p in spec.proj:
            sel = _mask(spec.heads, n[p])
            van[p] = sel if spec.mode == "remove_from" else ~sel
        elif spec.mode == "steer_only":
            van[p] = _mask("all", n[p])
    _apply(SplicePlan(b, van, spec.patch_path), spec, ctx, b)


def attach_head(spec, ctx: SteeringContext) -> None:
    """Splice the selected heads' (or KV groups') attention outputs before o_proj: vanilla for `remove_from`, the
    only steered ones for `steer_only`."""
    b = _check(spec, ctx)
    sh = ctx.shape
    sel = _mask(spec.heads or [], sh.n_heads)
    rep = sh.n_heads // sh.n_kv_heads
    for g in spec.groups or []:
        sel[g * rep : (g + 1) * rep] = True
    van = {"o": sel if spec.mode == "remove_from" else ~sel}
    _apply(SplicePlan(b, van, spec.patch_path), spec, ctx, b)
