"""Specs that apply vectors made elsewhere: `transfer` (another model's vector set, paper section 4.10) and
`compose` (several single-layer vectors trained in isolation, applied together, Appendix D), plus
`compose_pairs`, the grid helper that writes the paper's composition figure as conditions.

Torch implementations: `mechsteer.interventions.transfer` and `mechsteer.interventions.compose`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import intervention_kind
from mechsteer.spec.kinds.interventions import InterventionBase, first_of, resolved_selection
from mechsteer.spec.layers import LayerResolutionError, LayerSelection, resolve_layers
from mechsteer.spec.layouts import add_site
from mechsteer.spec.models import ModelShape, known_shape

LayerMap = Literal["same_index", "relative_depth"]


def depth_map(n_from: int, n_to: int, layer: int) -> int:
    """Layer `layer` of an `n_from`-block model -> the block of an `n_to`-block model at the same relative
    depth: round(layer / (n_from - 1) * (n_to - 1)) (identity when the depths agree)."""
    if n_from == n_to:
        return layer
    if n_from == 1:
        return 0
    return round(layer / (n_from - 1) * (n_to - 1))


def shape_str(n_layers: int, d_model: int) -> str:
    """`[n layers x d_model d]`, as errors name a model's or a vector set's shape."""
    return f"[{n_layers} layers x d_model {d_model}]"


def transfer_problem(
    donor: str, n_from: int, d_from: int, recipient: str, n_to: int, d_to: int, layer_map: str
) -> str | None:
    """Why a donor's vectors cannot be applied to a recipient (None if they can). Shared by `validate`
    (known shapes) and the torch side (actual tensors), so both say the same thing."""
    if d_from != d_to:
        return (
            f"cannot transfer vectors from {donor} {shape_str(n_from, d_from)} to {recipient} "
            f"{shape_str(n_to, d_to)}: the widths differ; vectors only transfer between models of the same "
            f"width (the same family and size)"
        )
    if n_from != n_to and layer_map == "same_index":
        return (
            f"cannot transfer vectors from {donor} {shape_str(n_from, d_from)} to {recipient} "
            f"{shape_str(n_to, d_to)} layer by layer: the depths differ (set layer_map: relative_depth to map "
            f"donor layer i to recipient layer round(i/({n_from}-1)*({n_to}-1)))"
        )
    return None


@intervention_kind("transfer", impl="mechsteer.interventions.transfer:attach_transfer")
class TransferSpec(InterventionBase):
    """Apply a vector set trained on another model (the donor): row l is added after the recipient's block l,
    as the paper copies `down_proj` biases layer by layer. Donor and recipient need the same width and, with
    `layer_map: same_index`, the same depth; anything else is a clear error naming both shapes."""

    kind: Literal["transfer"] = "transfer"
    checks_vector_shape: ClassVar[bool] = False
    vector: str
    """Name of the donor's vector set in `vectors:`."""
    donor: str | None = None
    """The donor model (hub id, known id or local directory), so `validate` can check shapes before anything
    runs; null = take it from the vector set's metadata (`model`) at run time."""
    layer_map: LayerMap = "same_index"
    """`same_index`: donor row l -> recipient block l (the paper). `relative_depth`: donor row l -> the
    recipient block at the same relative depth (for donors of another depth; two rows landing on one block is
    an error)."""
    scale: float = 1.0
    """Multiplier applied to the donor's vectors (the paper uses 1: no rescaling)."""

    def vector_refs(self) -> list[str]:
        """The donor's vector set."""
        return [self.vector]

    def layer_refs(self):
        """None to range-check: the donor-to-recipient layer map is checked in `shape_problems`."""
        return []

    def first_block(self, n_layers, vectors=None):
        """The first recipient block a donor row lands on (block 0 when the donor set is not given)."""
        vs = (vectors or {}).get(self.vector)
        if vs is None:
            return 0
        if self.layer_map == "relative_depth":
            return first_of([depth_map(vs.n_layers, n_layers, i) for i in vs.layers])
        return first_of(list(vs.layers))

    def vllm_unsupported(self):
        """A reason: the mapped rows only become a bias when the study writes the transfer as `add`."""
        return "transfer is only compiled when written as `add`"

    def site(self, layout):
        """Like `add`: the donor's row on the recipient's residual stream after the block it maps to."""
        rows = "the donor's row l" if self.layer_map == "same_index" else "the donor's row at the same relative depth"
        return add_site(layout, rows)

    def shape_problems(self, shape: ModelShape) -> list[tuple[tuple, str]]:
        """A donor whose depth or width cannot map onto this model (checked when the donor's shape is known)."""
        if self.donor is None:
            return []
        d = known_shape(self.donor)
        if d is None:
            return []
        msg = transfer_problem(
            self.donor, d.n_layers, d.d_model, "the recipient", shape.n_layers, shape.d_model, self.layer_map
        )
        return [(("donor",), msg)] if msg else []


class ComposePart(StrictModel):
    """One single-layer vector of a composition."""

    vector: str
    """Name of a vector set in `vectors:`."""
    layer: LayerSelection
    """The one layer (row of that set) to add after block `layer`."""
    scale: float = 1.0
    """Multiplier for this part."""

    @field_validator("layer")
    @classmethod
    def _one_layer(cls, v):
        if isinstance(v, list) or v == "all":
            raise ValueError("a compose part is one single-layer vector: give one layer, not a list or 'all'")
        return v


@intervention_kind("compose", impl="mechsteer.interventions.compose:attach_compose")
class ComposeSpec(InterventionBase):
    """Several single-layer vectors from different vector sets applied together (paper Appendix D: s_i and
    s_j trained in isolation, inserted at layers i and j). Two parts may share a layer (their sum is added);
    the same vector set and layer twice is an error. Use `compose_pairs` to generate the i <= j grid."""

    kind: Literal["compose"] = "compose"
    parts: list[ComposePart] = Field(min_length=1)
    """The single-layer vectors, e.g. [{vector: single_3, layer: 3}, {vector: single_17, layer: 17}]."""

    @model_validator(mode="after")
    def _distinct(self):
        seen = {}
        for i, p in enumerate(self.parts):
            key = (p.vector, repr(p.layer))
            if key in seen:
                raise ValueError(f"parts {seen[key]} and {i} both add layer {p.layer!r} of {p.vector!r}")
            seen[key] = i
        return self

    def vector_refs(self) -> list[str]:
        """Every part's vector set, once each."""
        return sorted({p.vector for p in self.parts})

    def layer_refs(self):
        """Each part's blocks, located as `parts[i].layer`."""
        return [(f"parts[{i}].layer", p.layer) for i, p in enumerate(self.parts)]

    def first_block(self, n_layers, vectors=None):
        """The smallest layer of its parts."""
        return first_of([i for p in self.parts for i in resolve_layers(p.layer, n_layers)])

    def vllm_unsupported(self):
        """A reason: a composition only becomes biases when the study writes its parts as `add` interventions."""
        return "compose is only compiled when written as `add` interventions"

    def site(self, layout):
        """Like `add`, one single-layer vector per part."""
        return add_site(layout, "each part's row l")

    def bind(self, model, shape, resolve_path):
        """Each part's layer resolved to its block index when the model's shape is known."""
        if shape is None:
            return self
        parts = [p.model_copy(update={"layer": resolved_selection(p.layer, shape.n_layers)}) for p in self.parts]
        return self.model_copy(update={"parts": parts})

    def shape_problems(self, shape: ModelShape) -> list[tuple[tuple, str]]:
        """Each part's blocks against the model's depth, located at `parts[i].layer`."""
        out = []
        for i, p in enumerate(self.parts):
            try:
                resolve_layers(p.layer, shape.n_layers)
            except LayerResolutionError as e:
                out.append((("parts", i, "layer"), str(e)))
        return out


def compose_pairs(
    layers: Iterable[int], vector: str = "single_{layer}", name: str = "pair_{i}_{j}", diagonal: bool = True
) -> dict[str, list[dict]]:
    """The paper's composition grid as study conditions: one condition per pair i <= j of `layers`.

    `vector` names the vector set holding layer l's single-layer vector; `{layer}` in it is replaced by l
    (one trained set per layer, the paper's `steering-layer-{k}` runs); without `{layer}` one set holding
    every row is used. The diagonal (i == j, on by default) is the single vector alone. Returns plain
    dicts, ready to merge into a study's `conditions:` (e.g. in a script that writes the YAML):

        conditions.update(compose_pairs(range(28)))
        # {"pair_0_0": [{"kind": "compose", "parts": [{"vector": "single_0", "layer": 0}]}],
        #  "pair_0_1": [{"kind": "compose", "parts": [{"vector": "single_0", "layer": 0},
        #                                            {"vector": "single_1", "layer": 1}]}], ...}
    """
    ls = sorted({int(x) for x in layers})
    out: dict[str, list[dict]] = {}
    for a, i in enumerate(ls):
        for j in ls[a:]:
            if i == j and not diagonal:
                continue
            parts = [{"vector": vector.format(layer=i), "layer": i}]
            if j != i:
                parts.append({"vector": vector.format(layer=j), "layer": j})
            out[name.format(i=i, j=j)] = [{"kind": "compose", "parts": parts}]
    return out
