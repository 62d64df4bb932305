"""Vector-set sources: where a study's named steering vectors come from.

A vector set is an `[n_layers, d_model]` stack (rows may be absent). Sources here are torch-free specs;
`mechsteer.engine.vectors` builds the tensors.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import vector_kind
from mechsteer.spec.layers import LayerSelection


@vector_kind("file", impl="mechsteer.builders.basic:build_file")
class FileVectors(StrictModel):
    """A safetensors vector set written by mechsteer (`mechsteer train`, export) or by hand."""

    kind: Literal["file"] = "file"
    path: str = Field(min_length=1)
    """Path to a `.safetensors` file, relative to the study file."""
    layers: LayerSelection | None = None
    """Keep only these rows (e.g. `penultimate` of an all-layer set); null keeps every row in the file."""


@vector_kind("bundled", impl="mechsteer.builders.basic:build_bundled")
class BundledVectors(StrictModel):
    """A vector set shipped inside the mechsteer package (trained for the embedded model)."""

    kind: Literal["bundled"] = "bundled"
    name: str = Field(min_length=1)
    """Name of the bundled set, e.g. `smollm2-135m/all_layers`; an unknown name is an error that lists the
    bundled sets (mechsteer/data/vectors)."""
    layers: LayerSelection | None = None
    """Keep only these rows; null keeps every row."""


@vector_kind("random", impl="mechsteer.builders.basic:build_random")
class RandomVectors(StrictModel):
    """Random Gaussian directions: the control every steering result needs.

    Give either a fixed per-layer `norm`, or `norm_like: <vector set>` to copy that set's per-layer norms
    (the norm-matched random control)."""

    kind: Literal["random"] = "random"
    seed: int = 0
    """Seed of the random directions (torch CPU generator; identical on every device)."""
    norm: float | None = Field(default=None, gt=0)
    """L2 norm of each row."""
    norm_like: str | None = None
    """Name of another vector set whose per-layer norms (and present rows) are copied."""
    layers: LayerSelection = "all"
    """Rows to fill (ignored with `norm_like`, which copies the other set's rows)."""


@vector_kind("zeros", impl="mechsteer.builders.basic:build_zeros")
class ZeroVectors(StrictModel):
    """All-zero vectors: steering that must reproduce the unsteered model exactly (a sanity control)."""

    kind: Literal["zeros"] = "zeros"
    layers: LayerSelection = "all"
    """Rows to create."""


@vector_kind("scaled", impl="mechsteer.builders.basic:build_scaled")
class ScaledVectors(StrictModel):
    """Another vector set multiplied by a factor (the paper's unpublished magnitude sweep)."""

    kind: Literal["scaled"] = "scaled"
    of: str
    """Name of the vector set to scale."""
    factor: float
    """Multiplier."""


@vector_kind("trained", impl="mechsteer.builders.trained:build_trained")
class TrainedVectors(StrictModel):
    """The vectors a `mechsteer train` run wrote: its final `vectors.safetensors`, or a checkpoint's. `validate`
    checks the training file; a missing output is an error at run time that names the command to run."""

    kind: Literal["trained"] = "trained"
    train: str = Field(min_length=1)
    """The training file (relative to the study file), e.g. `train_paper.yaml`."""
    profile: str | None = None
    """The training file's profile the run used (its output folder: the file's `output` suffixed `-<profile>`,
    or outputs/train/<name>-<profile> next to the training file)."""
    checkpoint: Annotated[int, Field(gt=0)] | Literal["best"] | None = None
    """Read this checkpoint's vectors (its optimizer step, e.g. 265) instead of the final ones; `best` = the
    checkpoint in the run's `best.json`: the paper's selection by the six-benchmark Average (`mechsteer
    select-checkpoints` on a study that evaluated the checkpoints, studies/checkpoints.yaml), or the training
    file's held-out `eval.select`. The cells record the step actually read."""
    output: str | None = None
    """The run's output folder when `mechsteer train -o` moved it (relative to the study file)."""
    per_block: list[int] | Literal["all"] | None = None
    """Stack single-layer runs, one per block (the paper's per-layer study): row k comes from the run of
    block k under `<output>/layer-KK/` (its final vectors, or `checkpoint`: a step or `best`, per block), as
    `mechsteer train <file> --profile <profile> --per-block <blocks>` writes them. `all` = every block."""
    layers: LayerSelection | None = None
    """Keep only these rows; null keeps every row."""
