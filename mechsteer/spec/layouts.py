"""Decoder-block layouts as plain facts (torch-free): how a block's attention and MLP outputs reach the residual
stream, and so where an intervention acts on a model of that layout. Intervention kinds describe their site
from these facts (`InterventionBase.site`), which the report lists per model ("Models and intervention sites")
from the architecture its cells recorded, without loading a model.

The architecture adapters (`mechsteer.models.adapters`, which need torch) carry the same layout name per
architecture; `tests/unit/test_intervention_sites.py` checks that the two tables agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Layout = Literal["pre_norm", "sandwich"]
"""`pre_norm` (Llama, Qwen2): h + Attn(LN1 h), then + MLP(LN2 .). `sandwich` (Gemma 2/3): extra norms after
the attention and after the MLP (post_attention_layernorm, post_feedforward_layernorm) before each residual
add."""


@dataclass(frozen=True)
class BlockLayout:
    """How one block layout adds its sublayers' outputs to the residual stream (what a site description says)."""

    name: Layout
    """The layout's name (as the adapters name it)."""
    formula: str
    """The block as a formula of its input h."""
    attn_to_residual: str
    """How the attention output (o_proj's) reaches the residual stream."""
    mlp_to_residual: str
    """How the MLP output (down_proj's) reaches the residual stream."""
    add_vs_down_proj_bias: str
    """What adding a vector to block l's output is in terms of a bias on block l's `mlp.down_proj` (the
    authors' implementation of steering)."""


LAYOUTS: dict[Layout, BlockLayout] = {
    "pre_norm": BlockLayout(
        name="pre_norm",
        formula="r = h + o_proj(Attn(input_layernorm(h))); out = r + down_proj(MLP(post_attention_layernorm(r)))",
        attn_to_residual="added to the residual stream as it is",
        mlp_to_residual="added to the residual stream as it is",
        add_vs_down_proj_bias="identical to a bias on block l's mlp.down_proj (the authors' implementation)",
    ),
    "sandwich": BlockLayout(
        name="sandwich",
        formula=(
            "r = h + post_attention_layernorm(o_proj(Attn(input_layernorm(h)))); "
            "out = r + post_feedforward_layernorm(down_proj(MLP(pre_feedforward_layernorm(r))))"
        ),
        attn_to_residual="normalised by post_attention_layernorm, then added to the residual stream",
        mlp_to_residual="normalised by post_feedforward_layernorm, then added to the residual stream",
        add_vs_down_proj_bias=(
            "after post_feedforward_layernorm's residual add, so NOT a bias on block l's mlp.down_proj "
            "(that norm would rescale a bias with the rest of the MLP output)"
        ),
    ),
}
"""Every layout the adapters know, by name."""

ARCHITECTURE_LAYOUTS: dict[str, Layout] = {
    "LlamaForCausalLM": "pre_norm",
    "Qwen2ForCausalLM": "pre_norm",
    "Gemma3ForCausalLM": "sandwich",
}
"""Architecture (model class name, as cells record it) -> its block layout."""


def layout_of(architecture: str | None) -> BlockLayout | None:
    """The block layout of an architecture (None when it is not one mechsteer has an adapter for)."""
    name = ARCHITECTURE_LAYOUTS.get(architecture or "")
    return LAYOUTS[name] if name else None


def add_site(layout: BlockLayout | None, what: str = "row l") -> str:
    """Where an additive vector on the block output acts: `what` added to the residual stream after block l,
    with what that is on this layout (the sentence `add`, `compose` and `transfer` share)."""
    text = f"{what} added to the residual stream after block l (to block l's output)"
    return f"{text}: {layout.add_vs_down_proj_bias}" if layout is not None else text


__all__ = ["ARCHITECTURE_LAYOUTS", "LAYOUTS", "BlockLayout", "Layout", "add_site", "layout_of"]
