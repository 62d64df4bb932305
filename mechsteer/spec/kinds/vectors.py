"""Vector-set sources: where a study's named steering vectors come from.

A vector set is an `[n_layers, d_model]` stack (rows may be absent). Sources here are torch-free specs;
builders (`mechsteer.builders`, named by each registration) build the tensors.

`VectorSourceBase` declares what the compiler and `validate` ask of every vector source kind, answered in
the kind's own class: the vector sets it is built from (`depends_on`), its content identity for the cell
hash (`content_key`: which files it covers), binding at compile time (`bind`: paths absolute, a training
run's files located), the problems `validate` can find before anything loads (`study_problems`), and the file
whose header tells its shape (`shape_file`), and how its rows were trained (`origin`: jointly, alone, a
per-block stack, a control), which readouts about single-layer vectors check.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from mechsteer.errors import MechsteerError, VectorError
from mechsteer.file_hash import sha256_file
from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import VECTOR_KINDS, vector_kind
from mechsteer.spec.layers import LayerSelection
from mechsteer.spec.paths import file_content_key
from mechsteer.spec.vector_origin import Origin, file_origin

Problem3 = tuple[tuple, str, str | None]
"""(sub-path under the vector set, message, hint)."""

BUNDLED_VECTOR_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "vectors"
"""Where the vector sets shipped with the package live (`<model>/<name>.safetensors`)."""


def bundled_vector_names() -> list[str]:
    """Names of vector sets shipped in the package (`<model>/<name>`)."""
    if not BUNDLED_VECTOR_DIR.is_dir():
        return []
    return sorted(
        str(p.relative_to(BUNDLED_VECTOR_DIR).with_suffix("")) for p in BUNDLED_VECTOR_DIR.rglob("*.safetensors")
    )


def training_file_problems(path: Path, profile: str | None) -> list[tuple[str, str | None]]:
    """(message, hint) pairs when a training file a study reads is missing or does not validate with its
    profile (its output may not exist yet: that is an error at run time, naming the command)."""
    from mechsteer.spec.training import load_train_spec

    if not path.is_file():
        return [(f"training file not found: {path}", "paths are relative to the study file")]
    try:
        load_train_spec(path, profile)
    except MechsteerError as e:
        return [(f"the training file does not validate: {e.problems[0].format()}", None)]
    return []


class VectorSourceBase(StrictModel):
    """Base of every vector source spec (see the module docstring). Subclasses register with
    `@vector_kind(name, impl="mechsteer.builders.<module>:build_<name>")`."""

    @abstractmethod
    def depends_on(self) -> dict[str, str]:
        """{field: vector set name} of the other sets this one is built from: `validate` checks they exist
        and form no cycle, and their content is part of this set's identity."""

    @abstractmethod
    def content_key(self) -> dict:
        """The content identity of this (bound) set, without its dependencies: hashed into every cell that
        reads it. Replace every file it reads by the file's sha256 (`mechsteer.spec.paths.file_content_key`
        does it for a `path` field), so that moving a file changes nothing and editing it recomputes the
        cells; a set computed from its spec alone is its `model_dump(mode="json")`."""

    def layer_refs(self) -> list[tuple[str, LayerSelection]]:
        """(field, layer selection) pairs `validate` range-checks against every model of known shape: the
        `layers` field (rows kept), when the kind has one and it is set."""
        sel = getattr(self, "layers", None) if "layers" in type(self).model_fields else None
        return [] if sel is None else [("layers", sel)]

    def bind(self, resolve_path: Callable[[str], Path]):
        """This spec made self-contained for execution (the compiler calls it once per study): a `path` field
        made absolute (`resolve_path` resolves relative to the study file). Kinds that read other files
        extend it (`trained` locates its training run's files)."""
        if "path" in type(self).model_fields and isinstance(getattr(self, "path", None), str):
            return self.model_copy(update={"path": str(resolve_path(self.path))})
        return self

    def study_problems(self, resolve_path: Callable[[str], Path]) -> list[Problem3]:
        """Problems `validate` can find before anything loads (a file or a bundled name that is not there),
        as (sub-path, message, hint). None by default."""
        return []

    def shape_file(self, resolve_path: Callable[[str], Path]) -> tuple[str, Path] | None:
        """(field, file) of a mechsteer vector file whose header gives this set's `[n_layers, d_model]`, so
        `validate` can check it against each model; None when the shape is known only once it is built."""
        return None

    def origin(self, resolve_path: Callable[[str], Path], origin_of: Callable[[str], Origin | None]) -> Origin | None:
        """How this set's rows were trained, as far as validation can tell without building it (`joint`,
        `single`, `per_block`, `control`; `mechsteer.spec.vector_origin`), `origin_of` answering for the sets
        it is built from; None (the default) when it cannot tell."""
        return None

    def model_sets(self) -> dict[str, str] | None:
        """For a set that is another set on each model (`per_model`): model name -> the set it is on that
        model. None (the default): a set of its own, the same on every model. The compiler, the executor and
        `validate` read a study's sets per model through `vectors_for_model`, so nothing names the kind."""
        return None

    def training_run(self) -> tuple[str, str | None, list[int] | str | None] | None:
        """(training file, profile, per-block blocks: a list, `all`, or None for the run itself) of the training
        run this set reads, for the estimate of what the study needs trained; None (the default) for a set that
        reads no training run."""
        return None

    def rehearsed(self, r) -> VectorSourceBase:
        """This set in a rehearsal (`mechsteer.spec.rehearsal.Rehearsal` `r`): a set that reads files returns
        the spec that reads its stand-in (asking `r` for it: `r.file`, `r.run`); one built from its spec and
        the model (random, zeros, scaled; the default) returns itself."""
        return self


VECTOR_KINDS.require_base(VectorSourceBase)


def stand_in_file(r, stem: str, source: Path | None, layers) -> FileVectors:
    """A `file` set reading a random stand-in of the twin's shape for a set that reads `source` (a mechsteer
    vector file when it exists: its rows, shape and `setup` are kept; otherwise every row)."""
    from mechsteer.spec.rehearsal import file_rows

    info = file_rows(source) if source is not None else None
    rows, shape, setup = info if info is not None else ("all", None, None)
    path = r.file(stem, file="vectors", rows=rows, setup=setup, shape=shape)
    r.note(f"vector file {source.name if source else stem}: random rows of the twin's shape ({path.name})")
    return FileVectors(path=str(path), layers=layers)


@vector_kind("file", impl="mechsteer.builders.basic:build_file")
class FileVectors(VectorSourceBase):
    """A safetensors vector set written by mechsteer (`mechsteer train`, export) or by hand."""

    kind: Literal["file"] = "file"
    path: str = Field(min_length=1)
    """Path to a `.safetensors` file, relative to the study file."""
    layers: LayerSelection | None = None
    """Keep only these rows (e.g. `penultimate` of an all-layer set); null keeps every row in the file."""

    def depends_on(self) -> dict[str, str]:
        """None: the set is read from its file."""
        return {}

    def content_key(self) -> dict:
        """The file's sha256 and the kept rows, so editing the file recomputes the cells that read it."""
        return file_content_key(self)

    def study_problems(self, resolve_path):
        """A missing file, found by `validate` before anything runs."""
        path = resolve_path(self.path)
        if path.is_file():
            return []
        hint = "paths are relative to the study file; `mechsteer train` writes vector sets"
        return [(("path",), f"vector file not found: {path}", hint)]

    def shape_file(self, resolve_path):
        """The `path` file, whose header gives the set's shape for the layer checks."""
        return "path", resolve_path(self.path)

    def origin(self, resolve_path, origin_of):
        """From the file header's `setup` (what the trainer wrote)."""
        return file_origin(resolve_path(self.path))

    def rehearsed(self, r):
        """Random rows of the twin's shape, at the rows the file has."""
        return stand_in_file(r, Path(self.path).stem, r.resolve(self.path), self.layers)


@vector_kind("bundled", impl="mechsteer.builders.basic:build_bundled")
class BundledVectors(VectorSourceBase):
    """A vector set shipped inside the mechsteer package (trained for the embedded model)."""

    kind: Literal["bundled"] = "bundled"
    name: str = Field(min_length=1)
    """Name of the bundled set, e.g. `smollm2-135m/all_layers`; an unknown name is an error that lists the
    bundled sets (mechsteer/data/vectors)."""
    layers: LayerSelection | None = None
    """Keep only these rows; null keeps every row."""

    def file(self) -> Path:
        """The bundled file this set reads."""
        return BUNDLED_VECTOR_DIR / f"{self.name}.safetensors"

    def depends_on(self) -> dict[str, str]:
        """None: the set ships with the package."""
        return {}

    def content_key(self) -> dict:
        """The spec and the bundled file's sha256 (a package update that changes the file changes the cells)."""
        fp = self.model_dump(mode="json")
        if self.file().is_file():
            fp["file_sha256"] = sha256_file(self.file())
        return fp

    def study_problems(self, resolve_path):
        """An unknown bundled name, with the names that exist."""
        if self.name in bundled_vector_names():
            return []
        return [
            (
                ("name",),
                f"no bundled vector set {self.name!r}",
                f"bundled sets: {', '.join(bundled_vector_names()) or 'none'}",
            )
        ]

    def shape_file(self, resolve_path):
        """The bundled file, whose header gives the set's shape for the layer checks."""
        return "name", self.file()

    def origin(self, resolve_path, origin_of):
        """From the bundled file header's `setup`."""
        return file_origin(self.file())

    def rehearsed(self, r):
        """Random rows of the twin's shape, at the rows the bundled file has."""
        return stand_in_file(r, self.name.replace("/", "-"), self.file(), self.layers)


@vector_kind("random", impl="mechsteer.builders.basic:build_random")
class RandomVectors(VectorSourceBase):
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

    def depends_on(self) -> dict[str, str]:
        """The set whose per-layer norms a `norm_like` control copies, if any."""
        return {"norm_like": self.norm_like} if self.norm_like else {}

    def content_key(self) -> dict:
        """The spec itself (seed, norms, layers): the vectors are a function of it."""
        return self.model_dump(mode="json")

    def origin(self, resolve_path, origin_of):
        """`control`: random directions are a baseline, not a trained object."""
        return "control"


@vector_kind("zeros", impl="mechsteer.builders.basic:build_zeros")
class ZeroVectors(VectorSourceBase):
    """All-zero vectors: steering that must reproduce the unsteered model exactly (a sanity control)."""

    kind: Literal["zeros"] = "zeros"
    layers: LayerSelection = "all"
    """Rows to create."""

    def depends_on(self) -> dict[str, str]:
        """None: the set is all zeros."""
        return {}

    def content_key(self) -> dict:
        """The spec itself: zeros of the model's shape need nothing else."""
        return self.model_dump(mode="json")

    def origin(self, resolve_path, origin_of):
        """`control`: a zero set is the do-nothing baseline."""
        return "control"


@vector_kind("scaled", impl="mechsteer.builders.basic:build_scaled")
class ScaledVectors(VectorSourceBase):
    """Another vector set multiplied by a factor (the paper's unpublished magnitude sweep)."""

    kind: Literal["scaled"] = "scaled"
    of: str
    """Name of the vector set to scale."""
    factor: float
    """Multiplier."""

    def depends_on(self) -> dict[str, str]:
        """The set it scales (`of`)."""
        return {"of": self.of}

    def content_key(self) -> dict:
        """The spec itself; the scaled set's own identity enters through `depends_on`."""
        return self.model_dump(mode="json")

    def origin(self, resolve_path, origin_of):
        """Scaling keeps the rows' origin."""
        return origin_of(self.of)


class TrainedRun(StrictModel):
    """Where a `trained` set's vectors are, as the compiler found them (`TrainedVectors.bind`): execution reads
    these files and never the training file."""

    output: str
    """The training run's output folder (absolute)."""
    command: str
    """The command that writes the run (named when its output is missing)."""
    file: str | None = None
    """The vector file read (final vectors or a checkpoint's); None with `per_block`, or when it cannot be
    named (`problem`)."""
    blocks: dict[str, str] | None = None
    """With `per_block`: every finished single-layer run's vector file, by run folder (`layer-KK`)."""
    block_command: tuple[str, str] | None = None
    """With `per_block`: the command that trains per-block runs, before and after its block list (with the
    training file's lr rule), so a missing block is named without reading the training file again."""
    problem: tuple[str, str | None] | None = None
    """(message, hint) when the file cannot be named yet (`checkpoint: best` before the run wrote its
    best.json); building the set raises it."""


@vector_kind("trained", impl="mechsteer.builders.trained:build_trained")
class TrainedVectors(VectorSourceBase):
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
    run: SkipJsonSchema[TrainedRun | None] = Field(default=None, exclude=True)
    """The run's files, filled in by the compiler (`bind`); never written in a study, never hashed (the files'
    contents are: `content_key`)."""

    @field_validator("run", mode="before")
    @classmethod
    def _not_from_a_study(cls, v):
        if v is not None:
            raise ValueError("`run` is filled in by the compiler; remove it from the study")
        return v

    def depends_on(self) -> dict[str, str]:
        """None: the set is read from a training run's files."""
        return {}

    def bind(self, resolve_path):
        """Paths absolute (`output` defaults to the training run's own folder, so a Ray worker whose working
        directory differs reads the run the driver planned with), and the run's files located: the vector
        file (a checkpoint's, `best` looked up in best.json) or every finished per-block run. Reads the
        training file; execution then never does."""
        from mechsteer.spec.training import load_train_spec
        from mechsteer.train.layout import per_block_command_parts, per_block_files, run_vectors_file, trained_run_dir

        update = {"train": str(resolve_path(self.train))}
        if self.output is not None:
            update["output"] = str(resolve_path(self.output))
        else:
            update["output"] = str(load_train_spec(update["train"], self.profile).output_dir())
        bound = self.model_copy(update=update)
        out, command = trained_run_dir(bound)
        run = {"output": str(out), "command": command}
        if self.per_block is not None:
            run["blocks"] = {k: str(f) for k, f in per_block_files(bound).items()}
            run["block_command"] = per_block_command_parts(bound)
        else:
            try:
                run["file"] = str(run_vectors_file(out, self.checkpoint, command))
            except MechsteerError as e:  # checkpoint: best before the run chose one
                run["problem"] = (e.problems[0].message, e.problems[0].hint)
        return bound.model_copy(update={"run": TrainedRun(**run)})

    def bound_run(self) -> TrainedRun:
        """The files `bind` located (a spec that was not compiled is an error, not a silent YAML read)."""
        if self.run is None:
            raise VectorError(
                f"trained vectors of {self.train} were not bound to their files",
                hint="compile the study (mechsteer.engine.plan.compile_study / bind_vectors) before building",
            )
        return self.run

    def content_key(self) -> dict:
        """The spec (without its paths: moving the run changes nothing) and the sha256 of the run's vector
        file, or of every finished per-block run's: a finished or continued run changes the cells."""
        fp = self.model_dump(mode="json")
        run = self.bound_run()
        if self.per_block is None:
            f = Path(run.file) if run.file else None
            fp["file_sha256"] = sha256_file(f) if f is not None and f.is_file() else "missing"
        else:
            fp["files_sha256"] = {k: sha256_file(f) for k, f in (run.blocks or {}).items()}
        fp.pop("train", None), fp.pop("output", None)
        return fp

    def origin(self, resolve_path, origin_of):
        """`per_block` stacks independent runs; otherwise the training file's setup says (one block or many)."""
        if self.per_block is not None:
            return "per_block"
        from mechsteer.spec.training import LayersSetup, SingleLayerSetup, load_train_spec

        try:
            setup = load_train_spec(resolve_path(self.train), self.profile).spec.setup
        except MechsteerError:
            return None  # the training file's own problem is reported where it is named
        if setup == "all_layers":
            return "joint"
        if isinstance(setup, SingleLayerSetup):
            return "single"
        if isinstance(setup, LayersSetup):
            sel = setup.layers
            return "joint" if sel == "all" or (isinstance(sel, list) and len(sel) > 1) else "single"
        return None

    def study_problems(self, resolve_path):
        """The training file must exist and validate (its output may not exist yet)."""
        return [(("train",), msg, hint) for msg, hint in training_file_problems(resolve_path(self.train), self.profile)]

    def training_run(self):
        """This set's training file, profile and per-block blocks."""
        return self.train, self.profile, self.per_block

    def rehearsed(self, r):
        """The same set read from a stand-in run (`output`): random parameters written in the trainer's layout,
        with the checkpoint (or best.json) and the per-block runs this set reads."""
        blocks = None if self.per_block is None else ("all" if self.per_block == "all" else tuple(self.per_block))
        out = r.run(self.train, self.profile, file="vectors.safetensors", blocks=blocks, checkpoint=self.checkpoint)
        return self.model_copy(update={"train": str(r.resolve(self.train).resolve()), "output": str(out)})


@vector_kind("per_model", impl="mechsteer.builders.basic:build_per_model")
class PerModelVectors(VectorSourceBase):
    """One name for a different vector set on each model, so one condition (`add trained`) steers every
    model of a study with its own vectors: `trained: {kind: per_model, models: {smol: smol_vectors, gemma:
    gemma_vectors}}`. On model `smol` the set `trained` IS `smol_vectors`: its cells are keyed by that set's
    content alone and read it as if the condition named it, and sets built from `trained` (a `random`
    control `norm_like: trained`) follow it per model. Every model of the study needs an entry."""

    kind: Literal["per_model"] = "per_model"
    models: dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    """Model name (a key of the study's `models:`) -> the name of the vector set this set is on that model."""

    def model_sets(self) -> dict[str, str]:
        """The mapping itself: on each model, this set is the set it names."""
        return dict(self.models)

    def depends_on(self) -> dict[str, str]:
        """Every model's set (checked to exist, no cycles); each model's cells depend on its own set only."""
        return {f"models.{m}": s for m, s in self.models.items()}

    def content_key(self) -> dict:
        """The mapping; cells never hash it (the compiler replaces the set by each model's own,
        `vectors_for_model`), so this identifies the spec itself only."""
        return self.model_dump(mode="json")

    def origin(self, resolve_path, origin_of):
        """The models' sets' common origin; `joint` as soon as one of them is joint (a readout of single-layer
        sources must refuse it on that model), else None when they differ."""
        found = {origin_of(s) for s in self.models.values()}
        if "joint" in found:
            return "joint"
        return found.pop() if len(found) == 1 else None
