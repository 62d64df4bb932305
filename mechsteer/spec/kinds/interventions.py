"""Intervention specs (torch-free). The torch implementations live in `mechsteer.interventions`.

Every intervention spec exposes `vector_refs()` and `layer_refs()` so that cross-reference and range checks
are generic: a new kind gets them by implementing the two methods.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal, Union

from pydantic import Field

from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import intervention_kind
from mechsteer.spec.layers import LayerResolutionError, LayerSelection, resolve_layers
from mechsteer.spec.models import ModelShape, ModelSpec


class FirstKGenerated(StrictModel):
    """Only the first k generated tokens (k=1: the first generated token only)."""

    first_k_generated: int = Field(gt=0)


PositionSelector = Union[Literal["all", "prompt", "generated", "last_prompt"], FirstKGenerated]
"""Which input token positions an additive intervention touches. Positions are counted per sequence from
the attention mask (padding is never a position) and across decode steps (correct with the KV cache).
`all` is every position, prompt and generated, as in the paper. Note the off-by-one that bit CAA: the
distribution of the first generated token is computed at the LAST PROMPT position (`last_prompt`);
`first_k_generated: k` selects the positions of the first k generated tokens, which shape the tokens after
them."""


class InterventionBase(StrictModel):
    checks_vector_shape: ClassVar[bool] = True
    """Whether the vector sets this intervention reads must have the model's shape (False for `transfer`,
    whose donor vectors may come from a model of another depth and are checked by the intervention)."""

    def vector_refs(self) -> list[str]:
        """Names of the study's vector sets this intervention reads."""
        return []

    def layer_refs(self) -> list[tuple[str, LayerSelection]]:
        """(field name, layer selection) pairs to range-check against the model."""
        return []

    def shape_problems(self, shape: ModelShape) -> list[tuple[tuple, str]]:
        """Problems of this intervention on a model of this shape, as (sub-path, message) pairs.

        The default range-checks `layer_refs()`; kinds with heads or sites extend it."""
        out = []
        for fname, sel in self.layer_refs():
            try:
                resolve_layers(sel, shape.n_layers)
            except LayerResolutionError as e:
                out.append(((fname,), str(e)))
        return out

    def bind(self, model: ModelSpec, shape: ModelShape | None, resolve_path: Callable[[str], Path]):
        """This intervention made self-contained for one model (the compiler calls it per model and cell):
        a `path` made absolute, and layer references (`penultimate`, `-1`, `{depth: 0.5}`) resolved to block
        indices when the model's shape is known. `all` stays symbolic where it means "every row of the vector
        set". Kinds that take defaults from the model entry extend this (`prefix_token`)."""
        update: dict = {}
        if "path" in type(self).model_fields and isinstance(self.path, str):
            update["path"] = str(resolve_path(self.path))
        if shape is not None:
            for fname, sel in self.layer_refs():
                if fname in type(self).model_fields and sel != "all":
                    update[fname] = resolved_selection(sel, shape.n_layers)
        return self.model_copy(update=update) if update else self


def resolved_selection(sel: LayerSelection, n_layers: int):
    """A layer selection as indices: one index for a single reference, a list for a list (or `all`)."""
    layers = resolve_layers(sel, n_layers)
    return layers[0] if not isinstance(sel, list) and len(layers) == 1 else layers


@intervention_kind("add", impl="mechsteer.interventions.add:attach_add")
class AddSpec(InterventionBase):
    """The paper's steering: row l of a vector set is added to the residual stream after block l (block l's
    output + v, i.e. the next block's input). On Llama and Qwen2 this is identical to a bias on block l's
    `mlp.down_proj` (the authors' implementation). Not on Gemma3: it normalises the MLP output
    (`post_feedforward_layernorm`) before adding it to the residual, so a down_proj bias there would be
    rescaled by that norm, while `add` still adds v itself to the block's output."""

    kind: Literal["add"] = "add"
    vector: str
    """Name of a vector set in `vectors:`."""
    layer: LayerSelection = "all"
    """Layers to steer. `all` = every row the vector set has (rows it lacks are an error when named
    explicitly)."""
    scale: float = 1.0
    """Multiplier applied to the vector."""
    positions: PositionSelector = "all"
    """Token positions to steer: all (default), prompt, generated, or {first_k_generated: k}."""

    def vector_refs(self) -> list[str]:
        return [self.vector]

    def layer_refs(self):
        return [("layer", self.layer)]
