"""Block-surgery intervention specs (paper section 4.6): Skip-Attn, Skip-Layer, Q/K/V splicing, and per-head
splicing before o_proj (Skip-Head / Steer-Head), with the patch paths of the attention output.

Two options go beyond what the authors ran for the paper: `patch_path` (other than `all`) on `skip_attn` and
`qkv`, and `groups` on `head`. Their code has `patch_path` and KV-group combinations only in its HF Llama
head-patching code; mechsteer offers both everywhere, and the field descriptions say so.

Every kind here splices ONE decoder block B (`layer`, any block >= 1). The vector s is row B-1 of the named
vector set: the paper moves s_{B-1} from block B-1's output to block B's input (the same stream), and then
runs two copies of block B's internals, a vanilla one on the residual h and a steered one on h + s, and
splices them. So `{kind: skip_attn, layer: last, vector: pen}` splices the last block with s = the
penultimate row of `pen`. Torch implementation: `mechsteer.interventions.surgery` / `.splice`.

Head indices follow the model: query heads for `q` and for pre-o_proj heads, KV heads for `k`/`v` (with
GQA there are fewer KV heads than query heads; `validate` catches a KV index counted as a query head).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from mechsteer.spec.kinds import intervention_kind
from mechsteer.spec.kinds.interventions import InterventionBase
from mechsteer.spec.layers import LayerSelection, resolve_layers
from mechsteer.spec.layouts import BlockLayout
from mechsteer.spec.models import ModelShape

HeadIndex = Annotated[int, Field(ge=0)]
HeadList = Literal["all"] | list[HeadIndex]
"""`all`, or a list of head indices (an empty list selects no head: a control that must change nothing)."""

PatchPath = Literal["all", "residual", "mlp"]
SpliceMode = Literal["remove_from", "steer_only"]
Proj = Literal["q", "k", "v"]


def _no_duplicates(v, what: str):
    if isinstance(v, list) and len(set(v)) != len(v):
        raise ValueError(f"{what} lists the same index twice: {v}")
    return v


def _range_problems(field: str, heads, n: int, kind: str, hint_n_heads: int | None = None) -> list[tuple[tuple, str]]:
    """Out-of-range head indices. `hint_n_heads`: for KV-head lists, the query-head count, to explain an
    index that is a valid query head but not a valid KV head (the usual GQA mistake)."""
    if heads == "all" or heads is None:
        return []
    out = []
    for i, h in enumerate(heads):
        if h < n:
            continue
        msg = f"{kind} index {h} is out of range: the model has {n} {kind}s (0..{n - 1})"
        if hint_n_heads is not None and h < hint_n_heads:
            msg += (
                f"; {h} would be a query-head index (query heads 0..{hint_n_heads - 1}), but k/v heads are "
                f"counted as KV heads with GQA (KV head g serves query heads "
                f"g*{hint_n_heads // n}..g*{hint_n_heads // n}+{hint_n_heads // n - 1})"
            )
        out.append(((field, i), msg))
    return out


class SurgeryBase(InterventionBase):
    """Common fields of the block-surgery kinds."""

    vector: str
    """Name of a vector set in `vectors:`; its row `layer - 1` is the vector s (trained after the block
    before the spliced one)."""
    layer: LayerSelection = "last"
    """The ONE block to splice (any block >= 1; the paper splices the last block with the penultimate
    vector)."""

    @field_validator("layer")
    @classmethod
    def _one_layer(cls, v):
        if isinstance(v, list) or v == "all":
            raise ValueError(
                "block surgery splices exactly one block: give one layer (e.g. last, -1, 27, "
                "{depth: 1.0}), not a list or 'all'"
            )
        return v

    def vector_refs(self) -> list[str]:
        """The vector set whose row (block - 1) supplies s, the steered stream the splice feeds in."""
        return [self.vector]

    def layer_refs(self):
        """The spliced block."""
        return [("layer", self.layer)]

    def first_block(self, n_layers, vectors=None):
        """The spliced block: everything before it runs as in the unsteered model (s enters at its input)."""
        return self.block(n_layers)

    def vllm_unsupported(self):
        """Always a reason: a surgery rewires a block, which no down_proj bias can express."""
        return f"circuit surgery ({self.kind}) changes a block's computation, not a bias"

    def shape_problems(self, shape: ModelShape) -> list[tuple[tuple, str]]:
        """The layer range check, and block 0, which has no block before it to take s from."""
        out = super().shape_problems(shape)
        if out:
            return out
        (b,) = resolve_layers(self.layer, shape.n_layers)
        if b == 0:
            out.append(
                (
                    ("layer",),
                    (
                        "block 0 cannot be spliced: s comes from the block before the spliced one "
                        "(row layer-1 of the vector set); choose a block >= 1"
                    ),
                )
            )
        return out

    def block(self, n_layers: int) -> int:
        """The spliced block's index for a model with `n_layers` blocks."""
        (b,) = resolve_layers(self.layer, n_layers)
        return b

    def site(self, layout):
        """Inside the spliced block B, with s = row B-1 of the vector set (the kind's own `spliced`)."""
        return f"inside block B, s = row B-1 of the vector set at B's input: {self.spliced(layout)}"

    @abstractmethod
    def spliced(self, layout: BlockLayout | None) -> str:
        """What this kind takes from the unsteered stream h instead of h + s (the second half of `site`)."""


def _attention_after(layout: BlockLayout | None, patch_path: str) -> str:
    """Where the spliced attention output goes, by patch path and layout."""
    where = {"all": "", "residual": " (to the residual only)", "mlp": " (to the MLP input only)"}[patch_path]
    return f"; the attention output is {layout.attn_to_residual}{where}" if layout is not None else where


class AttentionSurgeryBase(SurgeryBase):
    """Surgery kinds that splice the attention output, which can then be routed by `patch_path`."""

    patch_path: PatchPath = "all"
    """Where the spliced attention output goes: `all` = residual and MLP input (the only behaviour of the
    authors' Skip-Attn and Q/K/V splicing); `residual` = only the residual (the MLP sees the fully steered
    attention); `mlp` = only the MLP input (the residual gets the fully steered attention). In the authors'
    code `patch_path` exists only in their HF Llama head-patching code (kind `head`); their vLLM Q/K/V
    splicing has none, so `residual` / `mlp` on `skip_attn` and `qkv` are a mechsteer extension that no paper
    number used."""


@intervention_kind("skip_attn", impl="mechsteer.interventions.surgery:attach_skip_attn")
class SkipAttnSpec(AttentionSurgeryBase):
    """Skip-Attn: the spliced block's attention runs on the vanilla stream (Q, K, V all vanilla), while the
    steered residual h + s still reaches the MLP and the block output (paper `all_attn`; `patch_path` other
    than `all` goes beyond the authors' code, see there)."""

    kind: Literal["skip_attn"] = "skip_attn"

    def spliced(self, layout):
        """The whole attention reads h."""
        return (
            "the attention reads h (Q, K, V from input_layernorm(h)), the residual stream and the MLP carry h + s"
            + (_attention_after(layout, self.patch_path))
        )


@intervention_kind("skip_layer", impl="mechsteer.interventions.surgery:attach_skip_layer")
class SkipLayerSpec(SurgeryBase):
    """Skip-Layer: attention and MLP of the spliced block both run on the unsteered stream; s is added after
    the block (only the direct path to the final norm and unembedding remains; paper `all_layer`)."""

    kind: Literal["skip_layer"] = "skip_layer"

    def spliced(self, layout):
        """The whole block reads h; s is added to its output."""
        return "attention and MLP both read h; s is added to block B's output (the residual stream after B)"


@intervention_kind("qkv", impl="mechsteer.interventions.surgery:attach_qkv")
class QKVSpec(AttentionSurgeryBase):
    """Q/K/V splicing (paper `q_proj`, `inverse_q_proj`, `all_v_proj`, ...). The residual stays steered
    (`patch_path` other than `all` goes beyond the authors' code, see there).

    `remove_from`: everything steered except the named projections' selected heads, which are vanilla
    ("remove steering from Q of head 5"). `steer_only`: Q, K and V all vanilla except the named projections'
    selected heads, which are steered ("steer only V"). So `steer_only` with no heads is Skip-Attn, and
    `steer_only` of all heads of q, k and v is plain steering."""

    kind: Literal["qkv"] = "qkv"
    proj: list[Proj] = Field(min_length=1)
    """Projection(s) to splice: `q`, `k`, `v`, or a list such as [q, k, v]."""
    heads: HeadList = "all"
    """`all`, or head indices: query heads for q, KV heads for k and v (GQA: 0..n_kv_heads-1)."""
    mode: SpliceMode = "remove_from"
    """`remove_from` (steered except these heads) or `steer_only` (vanilla except these heads)."""

    @field_validator("proj", mode="before")
    @classmethod
    def _proj_list(cls, v):
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"proj lists the same projection twice: {v}")
        return v

    @field_validator("heads")
    @classmethod
    def _heads(cls, v):
        return _no_duplicates(v, "heads")

    @model_validator(mode="after")
    def _one_head_kind(self):
        if self.heads != "all" and "q" in self.proj and len(self.proj) > 1:
            raise ValueError(
                "a head list is ambiguous when proj mixes q (query heads) with k/v (KV heads): "
                "use heads: all, or one intervention per head kind"
            )
        return self

    def vllm_unsupported(self):
        """Always a reason: it edits queries, keys or values per head."""
        return "circuit surgery (qkv) edits attention internals per head"

    def spliced(self, layout):
        """The named projections' heads read h (remove_from) or only they read h + s (steer_only)."""
        counted = "query heads" if "q" in self.proj else "KV heads"
        heads = f"all {counted}" if self.heads == "all" else f"{counted} {self.heads}"
        projs = "/".join(f"{p}_proj" for p in self.proj)
        if self.mode == "remove_from":
            what = f"{projs} of {heads} read input_layernorm(h), everything else reads h + s"
        else:
            what = f"only {projs} of {heads} read input_layernorm(h + s); the rest of the attention reads h"
        return what + _attention_after(layout, self.patch_path)

    def shape_problems(self, shape: ModelShape) -> list[tuple[tuple, str]]:
        """The block checks, and `heads` against the model's query heads (for q) or KV heads (for k and v)."""
        out = super().shape_problems(shape)
        if "q" in self.proj:
            out += _range_problems("heads", self.heads, shape.n_heads, "query head")
        else:
            out += _range_problems("heads", self.heads, shape.n_kv_heads, "KV head", hint_n_heads=shape.n_heads)
        return out


@intervention_kind("head", impl="mechsteer.interventions.surgery:attach_head")
class HeadSpec(AttentionSurgeryBase):
    """Per-head splicing of the attention output before o_proj (paper `head` / `inverse_head`; `groups`
    extends it, see there).

    `remove_from` = Skip-Head: the selected heads' outputs come from the vanilla attention pass, the others
    from the steered pass. `steer_only` = Steer-Head: all vanilla except the selected heads. The residual
    stays steered. The vanilla pass keeps its own KV cache during generation."""

    kind: Literal["head"] = "head"
    heads: HeadList | None = None
    """Query-head indices (0..n_heads-1), or `all`."""
    groups: list[HeadIndex] | None = None
    """KV groups (0..n_kv_heads-1): group g = the query heads sharing KV head g, combined with `heads`
    (union). Beyond the paper: group patching and its combinations (`group7_and1`, ...) exist only in the
    authors' HF Llama head-patching code (Llama-3.1-8B, last block), not in their vLLM code or the paper's
    figures; here they work on every architecture and block, so results with `groups` are mechsteer's
    extension, not a reproduction. `groups: [7], heads: [1]` corresponds to that code's `group7_and1`."""
    mode: SpliceMode = "remove_from"
    """`remove_from` (Skip-Head) or `steer_only` (Steer-Head)."""

    @field_validator("heads")
    @classmethod
    def _heads(cls, v):
        return _no_duplicates(v, "heads")

    @field_validator("groups")
    @classmethod
    def _groups(cls, v):
        return _no_duplicates(v, "groups")

    @model_validator(mode="after")
    def _something(self):
        if self.heads is None and self.groups is None:
            raise ValueError("give `heads` (query heads, a list or all) and/or `groups` (KV groups)")
        return self

    def vllm_unsupported(self):
        """Always a reason: it edits attention per head."""
        return "head splicing edits attention internals per head"

    def spliced(self, layout):
        """Per query head, the attention output before o_proj from the pass on h or on h + s."""
        sel = "all query heads" if self.heads == "all" else (f"query heads {self.heads}" if self.heads else "")
        if self.groups:
            sel = (sel + " and " if sel else "") + f"KV groups {self.groups}"
        if self.mode == "remove_from":
            what = f"the outputs of {sel} (before o_proj) come from an attention pass on h, the rest from h + s"
        else:
            what = f"only the outputs of {sel} (before o_proj) come from h + s, the rest from an attention pass on h"
        return what + _attention_after(layout, self.patch_path)

    def shape_problems(self, shape: ModelShape) -> list[tuple[tuple, str]]:
        """The block checks, `heads` against the query heads and `groups` against the KV groups."""
        out = super().shape_problems(shape)
        out += _range_problems("heads", self.heads, shape.n_heads, "query head")
        out += _range_problems("groups", self.groups, shape.n_kv_heads, "KV group")
        return out


__all__ = ["HeadSpec", "QKVSpec", "SkipAttnSpec", "SkipLayerSpec", "SurgeryBase"]
