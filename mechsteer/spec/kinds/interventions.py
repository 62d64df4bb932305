"""Intervention specs (torch-free). The torch implementations live in `mechsteer.interventions`.

`InterventionBase` declares what the engine asks of every intervention kind, and each kind answers it in its
own class, so that nothing outside a kind's two files knows its name:

* `vector_refs()` / `layer_refs()`: the vector sets it reads and its layer references (cross-reference and
  range checks, binding, the cell's vector sets);
* `first_block(n_layers, vectors)`: the first decoder block it can change, which teacher-forced replay
  (`mechsteer.replay`) re-runs from; it raises `NotReplayable` with the reason when replay cannot reproduce it;
* `vllm_unsupported()`: why a bias-compiled checkpoint (stock vLLM, `backend: vllm`) cannot run it exactly,
  or None when it can;
* `site(layout)`: where in a block of that layout it acts, in words (the report's "intervention sites" line
  per model, `mechsteer.spec.layouts`);
* optionally `shape_problems`, `file_problems` and `bind` (checks and compile-time binding).

The five answers without a default are abstract: a kind class that leaves one out cannot register (the
registry names the missing method), and `tests/unit/test_kinds.py` checks every registered kind.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, Literal, Protocol, Union

from pydantic import Field

from mechsteer.errors import NotReplayable
from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import INTERVENTION_KINDS, intervention_kind
from mechsteer.spec.layers import LayerResolutionError, LayerSelection, resolve_layers
from mechsteer.spec.layouts import BlockLayout, add_site
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


class VectorRows(Protocol):
    """What replay needs of a built vector set (`mechsteer.vectors.VectorSet` has it): its present rows and
    the depth of the model it was made for."""

    layers: list[int]
    n_layers: int


Problem2 = tuple[tuple, str]
"""(sub-path under the intervention, message)."""


class InterventionBase(StrictModel):
    """Base of every intervention spec: what the engine, replay, the vLLM backend and `validate` ask of a
    kind (see the module docstring). Subclasses register with `@intervention_kind(name, impl=...)`."""

    checks_vector_shape: ClassVar[bool] = True
    """Whether the vector sets this intervention reads must have the model's shape (False for `transfer`,
    whose donor vectors may come from a model of another depth and are checked by the intervention)."""

    @abstractmethod
    def vector_refs(self) -> list[str]:
        """Names of the study's vector sets this intervention reads (built for its cells, checked to exist)."""

    @abstractmethod
    def layer_refs(self) -> list[tuple[str, LayerSelection]]:
        """(field name, layer selection) pairs to range-check against the model and resolve when binding."""

    @abstractmethod
    def first_block(self, n_layers: int, vectors: Mapping[str, VectorRows] | None = None) -> int | None:
        """The first decoder block this intervention can change on a model with `n_layers` blocks (None: it
        changes no block). Replay re-runs a condition from the smallest answer of its interventions, so an
        answer that is too large gives wrong numbers; too small is only slower. `vectors` (name -> built set,
        optional) resolves `layer: all` to the rows present; without it, answer as if every row were.
        Raise `NotReplayable` (with the reason) when re-running blocks from a recorded input cannot reproduce
        it (it changes the prompt, or needs the decoder stack's own hooks)."""

    @abstractmethod
    def vllm_unsupported(self) -> str | None:
        """Why a bias-compiled checkpoint (stock vLLM, `backend: vllm`) cannot run this intervention exactly,
        shown by `mechsteer plan`; None when it can (only an all-position `add`, a constant down_proj bias)."""

    @abstractmethod
    def site(self, layout: BlockLayout | None) -> str:
        """Where this intervention acts inside a model whose blocks have `layout` (None: an architecture without
        known layout facts), as one sentence the report lists per model: the stream or module it changes,
        and what that means on this layout (on a sandwich-norm Gemma3 block, `add` after block l is not a
        down_proj bias). It describes the kind and its options, not one condition's layer numbers."""

    def shape_problems(self, shape: ModelShape) -> list[Problem2]:
        """Problems of this intervention on a model of this shape, as (sub-path, message) pairs.

        The default range-checks `layer_refs()`; kinds with heads or sites extend it."""
        out = []
        for fname, sel in self.layer_refs():
            try:
                resolve_layers(sel, shape.n_layers)
            except LayerResolutionError as e:
                out.append(((fname,), str(e)))
        return out

    def file_problems(self, resolve_path: Callable[[str], Path]) -> list[tuple[tuple, str, str | None]]:
        """Files this intervention reads that `validate` can check before anything loads, as (sub-path,
        message, hint): the default checks that a `path` field names an existing file (relative to the study
        file); kinds reading other files (a training run's output) override it."""
        path = getattr(self, "path", None) if "path" in type(self).model_fields else None
        if isinstance(path, str) and not resolve_path(path).is_file():
            return [(("path",), f"file not found: {resolve_path(path)}", "paths are relative to the study file")]
        return []

    def training_run(self) -> tuple[str, str | None, list[int] | str | None] | None:
        """(training file, profile, per-block blocks or None) of a training run this intervention reads itself
        (not through a vector set), for the estimate of what a study needs trained; None (the default) when it
        reads none."""
        return None

    @classmethod
    def rehearsed_raw(cls, raw: dict, r) -> dict:
        """This intervention as written (a dict, possibly with sweep placeholders such as `"{layer}"`) in a
        rehearsal (`mechsteer.spec.rehearsal.Rehearsal` `r`): a kind that reads a file or a training run of its
        own returns the dict that reads its stand-in (asking `r` for it); the default (vectors come from the
        study's vector sets, stood in there) returns it unchanged."""
        return raw

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


INTERVENTION_KINDS.require_base(InterventionBase)


def rows_or_all(vector: str, sel: LayerSelection, n_layers: int, vectors: Mapping[str, VectorRows] | None) -> list[int]:
    """Blocks an additive intervention touches: its layer selection, where `all` means the rows its vector set
    has (every block when the set is not given)."""
    if sel == "all":
        vs = (vectors or {}).get(vector)
        return list(vs.layers) if vs is not None and vs.layers else list(range(n_layers))
    return resolve_layers(sel, n_layers)


def check_positions_replayable(kind: str, positions) -> None:
    """Raise NotReplayable for a position selector other than `all`: selectors read the attention mask the
    decoder stack's own pre-hook sees, and replay calls the blocks without the stack."""
    if positions != "all":
        raise NotReplayable(
            f"{kind} with positions {positions!r} is not replayable: position selectors read the decoder "
            "stack's attention mask, which replay skips",
            hint="use a full forward for this condition",
        )


def positions_vllm_problem(kind: str, positions) -> str | None:
    """Why a position-selective additive intervention is not a checkpoint bias (None for `all`)."""
    if positions == "all":
        return None
    sel = positions if isinstance(positions, str) else positions.model_dump()
    return (
        f"{kind} with positions {sel!r} is position-selective; a checkpoint bias acts on every position "
        "(only positions: all compiles)"
    )


def positions_text(positions) -> str:
    """` at positions P` for a position selector other than `all` (empty for `all`), for site sentences."""
    if positions == "all":
        return ""
    sel = positions if isinstance(positions, str) else f"first {positions.first_k_generated} generated"
    return f", at positions {sel} only"


def first_of(layers: list[int]) -> int | None:
    """The smallest block of a list (None for none): the usual tail of `first_block`."""
    return min(layers) if layers else None


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
        """The added vector set."""
        return [self.vector]

    def layer_refs(self):
        """The steered blocks."""
        return [("layer", self.layer)]

    def first_block(self, n_layers, vectors=None):
        """The smallest steered block (`all`: the vector set's first row); not replayable with positions."""
        check_positions_replayable(self.kind, self.positions)
        return first_of(rows_or_all(self.vector, self.layer, n_layers, vectors))

    def vllm_unsupported(self):
        """None at positions `all` (exactly a down_proj bias on Llama and Qwen2); otherwise why not."""
        return positions_vllm_problem(self.kind, self.positions)

    def site(self, layout):
        """Row l on the residual stream after block l; on this layout a down_proj bias or not."""
        return add_site(layout) + positions_text(self.positions)
