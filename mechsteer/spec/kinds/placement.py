"""Specs that put a vector somewhere other than the block output: `add_at_place` (after a submodule inside a
block, paper Appendix C) and `lora1` (a rank-1 LoRA on `down_proj`, i.e. a direction with a token-wise
magnitude alpha_t, paper section 4.12).

Torch implementations: `mechsteer.interventions.place` and `mechsteer.interventions.lora1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from mechsteer.spec.kinds import intervention_kind
from mechsteer.spec.kinds.interventions import (
    InterventionBase,
    PositionSelector,
    check_positions_replayable,
    first_of,
    positions_text,
    rows_or_all,
)
from mechsteer.spec.kinds.vectors import training_file_problems
from mechsteer.spec.layers import LayerSelection, resolve_layers
from mechsteer.spec.models import ModelShape

Place = Literal["input_layernorm", "self_attn", "post_attention_layernorm", "pre_feedforward_layernorm", "mlp"]
"""Submodules of a decoder block after which `add_at_place` adds (pre_feedforward_layernorm: Gemma3 only)."""

NO_DOWN_PROJ = frozenset(
    {
        "GPT2LMHeadModel",
        "GPTNeoXForCausalLM",
        "GPTJForCausalLM",
        "OPTForCausalLM",
        "BloomForCausalLM",
        "FalconForCausalLM",
        "PhiForCausalLM",
        "GPTNeoForCausalLM",
        "MptForCausalLM",
    }
)
"""Architectures known to have no `mlp.down_proj` (their MLP output projection has another name)."""


@intervention_kind("add_at_place", impl="mechsteer.interventions.place:attach_add_at_place")
class AddAtPlaceSpec(InterventionBase):
    """Row l of a vector set added to the output of a submodule of block l. After `input_layernorm` it
    changes only the attention input; after `self_attn` the attention output (residual); after
    `post_attention_layernorm` only the MLP input; after `mlp` it equals `add` (a down_proj bias)."""

    kind: Literal["add_at_place"] = "add_at_place"
    vector: str
    """Name of a vector set in `vectors:`; row l is used in block l."""
    place: Place | None = None
    """The submodule after which the vector is added; null = the place recorded in the vector set's metadata
    (`mechsteer train` with an `at_place` setup writes it). An explicit place wins over the metadata."""
    layer: LayerSelection = "all"
    """Blocks to steer; `all` = every row the vector set has."""
    scale: float = 1.0
    """Multiplier applied to the vector."""
    positions: PositionSelector = "all"
    """Token positions to steer: all (default), prompt, generated, or {first_k_generated: k}."""

    def vector_refs(self) -> list[str]:
        """The added vector set."""
        return [self.vector]

    def layer_refs(self):
        """The steered block, unless `all` (then the set's rows decide)."""
        return [] if self.layer == "all" else [("layer", self.layer)]

    def first_block(self, n_layers, vectors=None):
        """The smallest steered block (`all`: the vector set's first row); not replayable with positions."""
        check_positions_replayable(self.kind, self.positions)
        return first_of(rows_or_all(self.vector, self.layer, n_layers, vectors))

    def vllm_unsupported(self):
        """Always a reason: only a vector after the whole block is a down_proj bias."""
        return "add_at_place adds at one place inside a block, not on the residual stream at all positions"

    def site(self, layout):
        """The output of one submodule inside block l (the place the vector set's metadata names when unset)."""
        place = f"`{self.place}`" if self.place else "the submodule its vector set's metadata names"
        extra = ""
        if self.place == "mlp" and layout is not None:
            extra = f"; the MLP output is then {layout.mlp_to_residual}"
        elif self.place == "self_attn" and layout is not None:
            extra = f"; the attention output is then {layout.attn_to_residual}"
        return f"row l added to the output of {place} inside block l{extra}" + positions_text(self.positions)


@intervention_kind("lora1", impl="mechsteer.interventions.lora1:attach_lora1")
class Lora1Spec(InterventionBase):
    """A rank-1 LoRA on `mlp.down_proj`: for the down_proj input z_t (SiLU(gate) * up) the block output gains
    B (A z_t) = alpha_t * B/||B||, with the token-wise magnitude alpha_t = (A z_t) * ||B||, which is exposed
    to readouts. File: safetensors with `A` [n_layers, d_ff], `B` [n_layers, d_model] and `layers` [k]
    (int64, the rows present)."""

    kind: Literal["lora1"] = "lora1"
    path: str | None = Field(default=None, min_length=1)
    """The adapter file, relative to the study file (made absolute by the compiler)."""
    train: str | None = Field(default=None, min_length=1)
    """Instead of `path`: the training file (relative to the study file) whose `lora1` run wrote the adapter
    (`<its output>/lora1.safetensors`); a missing run is an error naming the `mechsteer train` command."""
    profile: str | None = None
    """The training file's profile that run used (with `train`)."""
    output: str | None = None
    """With `train`: the run's output folder when `mechsteer train -o` moved it (relative to the study file)."""
    per_block: bool = False
    """With `train`: read the single-block adapter of block `layer` from its own run under
    `<output>/layer-KK/` (what `mechsteer train FILE -p P --per-block K` writes; the paper's Appendix S trains
    one rank-1 LoRA per block, each with its own learning rate). `layer` must name one block."""
    checkpoint: Annotated[int, Field(gt=0)] | Literal["best"] | None = None
    """With `train`: this checkpoint's adapter (its optimizer step, or `best`: the run's best.json) instead of
    the final one."""
    layer: LayerSelection = "all"
    """Blocks to adapt; `all` = every row the file has."""
    scale: float = 1.0
    """The LoRA scaling (PEFT alpha / r; 1 in the paper)."""
    command: SkipJsonSchema[str | None] = Field(default=None, exclude=True)
    """With `train`: the command that writes the adapter, named by the compiler (`bind`); never written in a
    study, never hashed (the adapter file's content is)."""

    @field_validator("command", mode="before")
    @classmethod
    def _not_from_a_study(cls, v):
        if v is not None:
            raise ValueError("`command` is filled in by the compiler; remove it from the study")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.train is None):
            raise ValueError("give the adapter as `path` (a file) or `train` (+ `profile`), not both or neither")
        if (self.per_block or self.checkpoint is not None) and self.train is None:
            raise ValueError("per_block and checkpoint read a training run: give `train` (+ `profile`)")
        if self.per_block and (self.layer == "all" or isinstance(self.layer, list)):
            raise ValueError("per_block reads one block's own run: give `layer` as one block (e.g. 27 or last)")
        return self

    def bind(self, model, shape, resolve_path):
        """Resolve the block and, for a `train:` adapter, locate its file in the training run (the per-block run's with
        `per_block`, best.json's checkpoint with `best`) and the command that writes it, so attaching reads no training
        file."""
        out = super().bind(model, shape, resolve_path)
        if self.train is None:
            return out
        from mechsteer.errors import VectorError
        from mechsteer.spec.training import load_train_spec
        from mechsteer.train.layout import BEST_FILE, per_block_dir, run_vectors_file

        train = str(resolve_path(self.train))
        run = Path(resolve_path(self.output)) if self.output else load_train_spec(train, self.profile).output_dir()
        if self.per_block:
            if not isinstance(out.layer, int):  # the model's depth is not known before loading it
                raise ValueError(f"lora1 per_block: block {self.layer!r} of {model.id} cannot be resolved here")
            run = per_block_dir(run, out.layer)
        try:
            path = run_vectors_file(run, self.checkpoint, "", "lora1.safetensors")
        except VectorError:  # no best.json yet: attaching says which command picks it
            path = run / BEST_FILE
        update = {"train": train, "path": str(path)} | ({"output": str(run)} if self.output else {})
        bound = out.model_copy(update=update)
        return bound.model_copy(update={"command": bound.train_command()})

    def train_command(self) -> str:
        """The command that writes the adapter of a `train:` lora1 (the compiler names it in `bind`, from the
        training file, so attaching a missing adapter reads no YAML)."""
        if self.command is not None:
            return self.command
        if self.per_block:
            from mechsteer.train.layout import per_block_command

            command = per_block_command(self, [self.layer])
        else:
            command = (
                f"mechsteer train {self.train}"
                + (f" --profile {self.profile}" if self.profile else "")
                + (f" --output {self.output}" if self.output else "")
            )
        if self.checkpoint == "best":
            command += "; then evaluate its checkpoints and run `mechsteer select-checkpoints` (best.json)"
        return command

    def vector_refs(self) -> list[str]:
        """None: the adapter is a file of its own, not a vector set."""
        return []

    def layer_refs(self):
        """The adapted block, unless `all` (then the adapter's rows decide)."""
        return [] if self.layer == "all" else [("layer", self.layer)]

    def first_block(self, n_layers, vectors=None):
        """The smallest adapted block (`all`: block 0, since the file's rows are not known here)."""
        return 0 if self.layer == "all" else first_of(resolve_layers(self.layer, n_layers))

    def vllm_unsupported(self):
        """Always a reason: the update depends on the input, so it is no constant bias."""
        return "lora1 is an input-dependent rank-1 update, not a constant bias"

    def site(self, layout):
        """A rank-1 update of block l's mlp.down_proj output, which then reaches the residual per the layout."""
        how = f"; down_proj's output is {layout.mlp_to_residual}" if layout is not None else ""
        return f"a rank-1 LoRA on block l's mlp.down_proj (alpha_t * B/||B|| per token){how}"

    def training_run(self):
        """The training file and profile of a `train:` adapter (with its block when `per_block`)."""
        if self.train is None:
            return None
        return self.train, self.profile, ([self.layer] if self.per_block and isinstance(self.layer, int) else None)

    @classmethod
    def rehearsed_raw(cls, raw, r):
        """A stand-in adapter: with `train`, a stand-in run (`output`) holding the adapter file, its checkpoint
        and per-block runs; with `path`, a random adapter of the twin's shape at the file's rows."""
        if raw.get("train") is not None:
            layer = raw.get("layer", "all")
            blocks = None if not raw.get("per_block") else ((layer,) if isinstance(layer, int) else "all")
            out = r.run(
                raw["train"],
                raw.get("profile"),
                file="lora1.safetensors",
                blocks=blocks,
                checkpoint=raw.get("checkpoint"),
            )
            return {**raw, "train": str(r.resolve(raw["train"]).resolve()), "output": str(out)}
        from mechsteer.spec.rehearsal import file_rows

        source = r.resolve(raw["path"])
        info = file_rows(source)
        path = r.file(source.stem, file="lora1", rows=info[0] if info else "all")
        r.note(f"adapter {source.name}: a random rank-1 adapter of the twin's shape ({path.name})")
        return {**raw, "path": str(path)}

    def file_problems(self, resolve_path):
        """With `train`, the training file must exist and validate (its output may come later); else `path`."""
        if self.train is None:
            return super().file_problems(resolve_path)
        return [(("train",), msg, hint) for msg, hint in training_file_problems(resolve_path(self.train), self.profile)]

    def shape_problems(self, shape: ModelShape) -> list[tuple[tuple, str]]:
        """The layer range check, and architectures without an `mlp.down_proj` to adapt."""
        out = super().shape_problems(shape)
        if shape.architecture in NO_DOWN_PROJ:
            out.append((("kind",), f"lora1 needs mlp.down_proj, which {shape.architecture} does not have"))
        return out
