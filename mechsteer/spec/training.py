"""The training spec: one YAML file for `mechsteer train FILE` (torch-free).

A training file says which model to steer, how the trainable parameters are laid out (`setup`), the RLOO
hyper-parameters (defaults = the authors' configs, paper digest section 3.5), the reward, the prompts, the
checkpoint cadence, a small held-out evaluation and where the outputs go. Profiles (`--profile mini`)
override any of these, exactly like study profiles, so one file serves the paper-scale run and a CPU smoke
run. Validation reports every problem as `file:line:col: field: message (hint)`.

`setup` is written the way people say it:

    setup: all_layers                       # one vector per decoder block (the paper's main setup)
    setup: {single_layer: 27}               # only block 27 (the paper's per-layer study)
    setup: {layers: [0, 5, last]}           # any subset
    setup: {at_place: {layer: 24, place: self_attn}}   # one vector after a named submodule (Appendix C)
    setup: {lora1: all}                     # rank-1 LoRA on down_proj (token-wise magnitude, section 4.12)
    setup: full                             # full fine-tuning baseline
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from mechsteer.errors import Problem, ProblemList, SpecError
from mechsteer.spec.base import LIMIT_MAX, StrictModel
from mechsteer.spec.layers import LayerResolutionError, LayerSelection, resolve_layer, resolve_layers
from mechsteer.spec.loader import MAX_SPEC_BYTES, LoadedSpecFile, apply_profile, read_spec_file, validate_document
from mechsteer.spec.models import ModelSpec, known_shape
from mechsteer.spec.templates import PromptTemplateOrRaw

TRAIN_SCHEMA_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

DEEPSCALER = "agentica-org/deep_scale_r-preview-dataset"
"""The paper's training set (problem / answer / solution), split `train`."""

# ----------------------------------------------------------------------------------------- setup


class SingleLayerSetup(StrictModel):
    """Train only the vector of one block (all other blocks get nothing)."""

    single_layer: LayerSelection
    """The block: an index (27, -1), `last`, `penultimate`, `first` or {depth: x}; must name one layer."""


class LayersSetup(StrictModel):
    """Train one vector per block for a subset of blocks."""

    layers: LayerSelection
    """Blocks to train (a layer reference or a list of them)."""


class Place(StrictModel):
    """A submodule of one decoder block after which the vector is added."""

    layer: LayerSelection
    """The block (one layer)."""
    place: str = Field(min_length=1)
    """Submodule name inside the block: input_layernorm, self_attn, post_attention_layernorm, mlp (Llama/Qwen2)."""


class AtPlaceSetup(StrictModel):
    """One vector added to the output of a named submodule (the authors' `steering_at_place`)."""

    at_place: Place


class Lora1Setup(StrictModel):
    """Rank-1 LoRA on `mlp.down_proj` of the chosen blocks (alpha = rank = 1, PEFT's default init)."""

    lora1: LayerSelection = "all"
    """Blocks that get a rank-1 adapter."""


_SETUP_KEYS = ("single_layer", "layers", "at_place", "lora1")
_SETUP_FORMS = (
    "`all_layers`, `full`, {single_layer: k}, {layers: [...]}, {at_place: {layer: k, place: name}} or {lora1: layers}"
)


def _setup_tag(v: Any) -> str | None:
    if isinstance(v, str):
        return "Named"
    if isinstance(v, dict):
        keys = [k for k in _SETUP_KEYS if k in v]
        return _SETUP_TAGS[keys[0]] if len(keys) == 1 and len(v) == 1 else None
    for cls in _SETUP_TAGS.values():
        if type(v).__name__ == cls:
            return cls
    return None


# Tags are class-like names: the error locator drops capitalised union tags from field paths.
_SETUP_TAGS = {
    "single_layer": "SingleLayerSetup",
    "layers": "LayersSetup",
    "at_place": "AtPlaceSetup",
    "lora1": "Lora1Setup",
}


Setup = Annotated[
    Union[
        Annotated[Literal["all_layers", "full"], Tag("Named")],
        Annotated[SingleLayerSetup, Tag("SingleLayerSetup")],
        Annotated[LayersSetup, Tag("LayersSetup")],
        Annotated[AtPlaceSetup, Tag("AtPlaceSetup")],
        Annotated[Lora1Setup, Tag("Lora1Setup")],
    ],
    Discriminator(
        _setup_tag, custom_error_type="invalid_setup", custom_error_message=f"unknown setup; expected {_SETUP_FORMS}"
    ),
]
"""What is trained (see the module docstring)."""


@dataclass(frozen=True)
class ResolvedSetup:
    """A setup resolved against a model's depth: the kind and the concrete block indices."""

    kind: Literal["vectors", "at_place", "lora1", "full"]
    layers: tuple[int, ...] = ()
    place: str | None = None


def resolve_setup(setup, n_layers: int) -> ResolvedSetup:
    """Resolve `setup` for a model with `n_layers` blocks (raises LayerResolutionError)."""
    if setup == "all_layers":
        return ResolvedSetup("vectors", tuple(range(n_layers)))
    if setup == "full":
        return ResolvedSetup("full")
    if isinstance(setup, SingleLayerSetup):
        return ResolvedSetup("vectors", (_one_layer(setup.single_layer, n_layers, "single_layer"),))
    if isinstance(setup, LayersSetup):
        return ResolvedSetup("vectors", tuple(resolve_layers(setup.layers, n_layers)))
    if isinstance(setup, AtPlaceSetup):
        return ResolvedSetup(
            "at_place", (_one_layer(setup.at_place.layer, n_layers, "at_place.layer"),), setup.at_place.place
        )
    if isinstance(setup, Lora1Setup):
        return ResolvedSetup("lora1", tuple(resolve_layers(setup.lora1, n_layers)))
    raise ValueError(f"unknown setup {setup!r}")  # pragma: no cover - the schema rejects it


def _one_layer(sel, n_layers: int, what: str) -> int:
    layers = resolve_layers(sel, n_layers)
    if len(layers) != 1:
        raise LayerResolutionError(f"{what} must name exactly one layer, got {layers}")
    return layers[0]


# ----------------------------------------------------------------------------------------- RLOO


class RlooSpec(StrictModel):
    """RLOO (REINFORCE leave-one-out) on a frozen model; defaults are the authors' configs."""

    group_size: int = Field(default=16, ge=2)
    """G: samples per prompt (the leave-one-out baseline needs at least 2)."""
    prompts_per_step: int = Field(default=128, gt=0)
    """P: prompts per optimizer step (the paper: 128, so 2,048 rollouts per step)."""
    steps: int | None = Field(default=None, gt=0)
    """Optimizer steps; null = one epoch of the prompt data (ceil(prompts / P); 314 on DeepScaleR)."""
    lr: float = Field(default=1e-3, gt=0)
    """Learning rate (1e-3 for all-layer vectors on Qwen2.5-Math-7B; 1e-6 for full fine-tuning)."""
    lr_per_layer: dict[int, float] | None = None
    """Per-block learning rates overriding `lr` (the paper's table for single-layer vectors); blocks not
    listed use `lr`. Keys are block indices (negative counts from the end)."""
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    """Linear warm-up over ceil(ratio * steps) steps, then constant (HF `constant_with_warmup`: the first
    step runs at LR 0 when there is any warm-up)."""
    max_grad_norm: float = Field(default=2.0, gt=0)
    """Gradient-norm clip."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = Field(default=1e-8, gt=0)
    """AdamW epsilon."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay (0, the HF default the authors used; torch's 0.01 would shrink the vectors)."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature of the rollouts; log-probs use logits / temperature too."""
    max_new_tokens: int | None = Field(default=None, gt=0)
    """Cap on generated tokens per rollout; null = the model's `max_length` minus the prompt length."""
    loss_chunk_prompts: int | None = Field(default=None, gt=0)
    """Prompt groups per forward/backward chunk of the loss (gradients accumulate; null = 4 groups).
    Only memory changes: the result is the same gradient."""
    negative_reward: float = -1.0
    """Reward of a wrong answer (the paper: -1; correct is +1)."""

    @model_validator(mode="after")
    def _check(self):
        if self.lr_per_layer is not None:
            bad = {k: v for k, v in self.lr_per_layer.items() if not v > 0}
            if bad:
                raise ValueError(f"lr_per_layer values must be > 0, got {bad}")
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if self.negative_reward >= 1.0:
            raise ValueError("negative_reward must be below the reward of a correct answer (+1)")
        return self


Reward = Literal["boxed", "last_number", "boxed_or_last_number"]
"""`boxed`: the paper's grader (math-verify on the last \\boxed{}). `last_number`: the last number of the
completion equals the gold answer. `boxed_or_last_number`: either. Small models that never box (the
embedded SmolLM2) get no learning signal from `boxed` at all."""

# ----------------------------------------------------------------------------------------- data


class DataBase(StrictModel):
    """What every data source of a training file shares: the prompt template, a forced opening, and how many problems
    (and how long) to use."""

    template: PromptTemplateOrRaw = "qwen_math"
    """Prompt template (paper section 3.4): qwen_math, r1, qa / qa_fewshot (base models answering on one line;
    `mechsteer.spec.templates`), or raw (the problem text only)."""
    prefix_token: str | None = None
    """Forced opening of the assistant turn (the paper's `append_to`, e.g. "To"), appended to every prompt
    during training and evaluation."""
    limit: int | None = Field(default=None, gt=0, le=LIMIT_MAX)
    """Use at most this many problems (after shuffling with the seed)."""
    max_prompt_tokens: int | None = Field(default=None, gt=0)
    """Drop problems whose prompt is longer (the authors dropped prompts longer than max_seq_length);
    null = the model's `max_length` when set."""


class MiniData(DataBase):
    """The bundled synthetic task (offline, calibrated for the embedded model)."""

    kind: Literal["mini"] = "mini"
    split: Literal["train"] = "train"
    """Training always uses the train split; the held-out `eval` uses the test split."""
    n: int | None = Field(default=None, gt=0)
    """Problems from the train split; null = the whole train pool (more than the pool repeats problems)."""
    variant: str | None = None
    """Variant of the bundled task (`arith1`, `addmul1`, ...); null = its default."""


class JsonlData(DataBase):
    """A local jsonl file, one problem per line."""

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(min_length=1)
    """Path to the jsonl file, relative to the training file."""
    problem_field: str = "problem"
    """Field holding the problem text."""
    answer_field: str = "answer"
    """Field holding the gold answer."""


class HubData(DataBase):
    """A Hugging Face hub dataset with problem / answer columns (DeepScaleR by default)."""

    kind: Literal["hub"] = "hub"
    id: str = DEEPSCALER
    """Dataset id."""
    split: str = "train"
    """Split to train on."""
    revision: str | None = None
    """Dataset revision to pin."""
    problem_field: str = "problem"
    answer_field: str = "answer"


DataSpec = Annotated[Union[MiniData, JsonlData, HubData], Field(discriminator="kind")]

# ----------------------------------------------------------------------------------------- eval


class TrainEvalSpec(StrictModel):
    """Held-out accuracy on the bundled task's test split, with the vectors being trained active."""

    task: Literal["mini"] = "mini"
    """Only the bundled task (benchmarks belong in a study: `mechsteer run`)."""
    variant: str | None = None
    """Variant of the bundled task; null = the training data's variant (or the default)."""
    n: int = Field(default=64, gt=0)
    """Held-out problems."""
    greedy: bool = True
    """Measure greedy accuracy."""
    samples: int = Field(default=4, ge=0)
    """Samples per problem at `temperature` (0 = skip the sampled accuracy)."""
    temperature: float = Field(default=1.0, gt=0)
    """Temperature of the sampled accuracy."""
    max_new_tokens: int = Field(default=64, gt=0)
    """New tokens per answer."""
    batch_size: int = Field(default=64, gt=0)
    """Sequences per generation call."""
    every: int = Field(default=0, ge=0)
    """Evaluate every this many steps as well (0 = only before training and at the end)."""
    before: bool = True
    """Evaluate before the first step (the base model; vectors are zero)."""
    split: Literal["test", "train"] = "test"
    """Which side of the bundled task's fixed partition to evaluate on. `train` keeps the test problems unseen
    when the evaluation picks a checkpoint (`select`): problems come from the training pool in the order of
    `seed`, so use a seed other than the run's (some of them will have been trained on)."""
    seed: int = 0
    """Which problems (test) or which order of the training pool (train) the evaluation uses."""
    select: Literal["greedy_lenient", "greedy_boxed", "sampled_lenient", "sampled_boxed"] | None = None
    """Pick the best checkpoint by this held-out metric (the paper keeps, per run, the checkpoint with the best
    benchmark accuracy): written to `best.json`, read by a study as `{kind: trained, checkpoint: best}`. Only
    checkpoints with an evaluation at their step compete; set `every` to `checkpoint_every`. Ties go to the
    earliest step."""

    @model_validator(mode="after")
    def _check_select(self):
        if self.select and self.select.startswith("greedy") and not self.greedy:
            raise ValueError(f"select: {self.select} needs greedy: true")
        if self.select and self.select.startswith("sampled") and self.samples == 0:
            raise ValueError(f"select: {self.select} needs samples > 0")
        return self


# ----------------------------------------------------------------------------------------- per block


class PerBlockSpec(StrictModel):
    """How `mechsteer train FILE --per-block LAYERS` trains one run per block (the paper's per-layer study:
    `setup: {single_layer: k}` or `{lora1: k}` for each listed block k, each under `<output>/layer-KK/`)."""

    lr_rule: Literal["file", "norm"] = "file"
    """Learning rate of block k's run. `file`: this file's `rloo.lr_per_layer[k]`, else `rloo.lr` (the paper's
    per-layer tables). `norm`: base_lr x r_k / r_ref, r = the median norm of the block's output over the first
    `norm_prompts` training prompts (Adam moves every coordinate by about lr per step, so a vector's size
    relative to the stream it perturbs is set by lr / r; the bundled SmolLM2 stack uses this rule)."""
    base_lr: float = Field(default=0.05, gt=0)
    """`norm` rule: the learning rate of block `ref_layer`."""
    ref_layer: int = 12
    """`norm` rule: the reference block (negative counts from the end)."""
    norm_prompts: int = Field(default=32, gt=0)
    """`norm` rule: training prompts whose residual norms set r_k."""


# ----------------------------------------------------------------------------------------- root


class TrainProfileSpec(StrictModel):
    """Overrides merged onto the training file with `--profile NAME` (deep merge; `setup` and a data
    `kind` change replace instead of merging). The merged file is validated in full."""

    description: str | None = None
    model: dict[str, Any] | None = None
    setup: Any = None
    rloo: dict[str, Any] | None = None
    reward: str | None = None
    rollouts: str | None = None
    data: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    checkpoint_every: int | None = None
    output: str | None = None
    seed: int | None = None
    per_block: dict[str, Any] | None = None


class TrainSpec(StrictModel):
    """Train steering vectors (or a LoRA-1 / full fine-tuning baseline) with RLOO on a frozen model."""

    schema_version: Literal[1] = 1
    """Version of this file format."""
    name: str = Field(pattern=NAME_PATTERN)
    """Run name; outputs go to outputs/train/<name>/ unless `output` says otherwise."""
    description: str | None = None
    model: ModelSpec
    """The model to steer (hub id, local directory, or the embedded `smollm2-135m`)."""
    setup: Setup = "all_layers"
    """What is trained: all_layers | full | {single_layer: k} | {layers: [...]} | {at_place: {layer, place}}
    | {lora1: layers}."""
    rloo: RlooSpec = RlooSpec()
    """Optimisation hyper-parameters."""
    reward: Reward = "boxed"
    """How a completion is scored (+1 correct, `rloo.negative_reward` otherwise)."""
    rollouts: Literal["hf", "vllm"] = "hf"
    """Which engine samples the rollouts: `hf` (transformers with the vectors' hooks) or `vllm` (one vLLM
    engine per run on the model compiled with down_proj biases, the vectors synced into it in place after
    every optimizer step; vector setups only; needs vLLM: `bash scripts/setup_vllm.sh` on CPU,
    `pip install 'mechsteer[vllm]'` on a GPU). The loss is computed by transformers either way."""
    data: DataSpec  # type: ignore[valid-type]
    """Training prompts."""
    checkpoint_every: int | None = Field(default=None, gt=0)
    """Save a checkpoint every N steps (and always at the end); null = ceil(steps / 6), the paper's six
    evaluation points (53, 106, ..., 314)."""
    eval: TrainEvalSpec | None = None
    """Held-out evaluation before, during and after training."""
    output: str | None = None
    """Output folder of the run, relative to the training file (or absolute). With `--profile P` and no
    `output` in that profile, the run goes to `<output>-<P>`, so the profiles of one file never share a folder.
    null = `outputs/train/<name>[-<profile>]` next to the training file. Never relative to the working
    directory, so `mechsteer train` and a study that reads the run agree wherever either is started."""
    seed: int = 0
    """Seed of data order, rollouts and LoRA init (every step's randomness derives from it and the step,
    so a resumed run is bit-for-bit the uninterrupted one on CPU)."""
    per_block: PerBlockSpec = PerBlockSpec()
    """Learning-rate rule of `mechsteer train FILE --per-block LAYERS` (one run per block)."""
    profiles: dict[str, TrainProfileSpec] = Field(default_factory=dict)
    """Named override sets (`mini`, `paper`, ...) selected with --profile."""

    @model_validator(mode="after")
    def _check(self):
        if self.setup == "full" and self.rloo.lr_per_layer:
            raise ValueError("rloo.lr_per_layer applies to per-block vectors or adapters, not to `full`")
        return self


def json_schema() -> dict:
    """The JSON Schema of a training file (written to schemas/train.schema.json by `mechsteer schema`)."""
    schema = TrainSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mechsteer training file"
    return schema


# ----------------------------------------------------------------------------------------- loading


@dataclass
class LoadedTrainSpec(LoadedSpecFile):
    """A validated training file."""

    spec: TrainSpec
    profile_output: bool = False
    """True when the selected profile sets `output` itself (then it is used as is, without the suffix)."""

    def output_dir(self) -> Path:
        """The run's folder, absolute and independent of the working directory: `output` resolved against the
        training file's folder (suffixed `-<profile>` unless the profile set `output` itself), else
        `<training file folder>/outputs/train/<name>[-<profile>]`."""
        suffix = f"-{self.profile}" if self.profile and not self.profile_output else ""
        if self.spec.output:
            out = self.resolve_path(self.spec.output)
            return out.parent.resolve() / (out.name + suffix)
        return self.base_dir.resolve() / "outputs" / "train" / (self.spec.name + suffix)

    def total_steps(self, n_prompts: int) -> int:
        """Optimizer steps: `rloo.steps`, or one epoch of `n_prompts` prompts."""
        return self.spec.rloo.steps or max(1, math.ceil(n_prompts / self.spec.rloo.prompts_per_step))


def is_training_file(path: str | Path) -> bool:
    """True for a training file (a top-level `model:` and no `models:`, or the train-schema modeline), so
    `mechsteer validate` can check study and training files side by side. Unreadable files are not."""
    try:
        if Path(path).stat().st_size > MAX_SPEC_BYTES:
            return False  # the loader says why
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if "schemas/train.schema.json" in "".join(text.splitlines(keepends=True)[:3]):
        return True
    import yaml

    try:  # the top-level keys only: composing builds no values, so an alias bomb costs nothing here
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return False
    if not isinstance(node, yaml.MappingNode):
        return False
    keys = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return "model" in keys and "models" not in keys


def load_train_spec(path: str | Path, profile: str | None = None) -> LoadedTrainSpec:
    """Read, merge the profile, validate and cross-check a training file; SpecError lists every problem."""
    file, fname = Path(path), str(path)
    raw, positions = read_spec_file(path, "training file", "name:, model:, data:, ...", "studies/train_mini.yaml")
    # `setup` is replaced, not merged: {single_layer: 27} merged onto {layers: [...]} would be both.
    merged = apply_profile(raw, profile, fname, positions, what="training file", replace=("setup",)) if profile else raw
    spec = validate_document(TrainSpec, merged, fname, positions, profile)
    own = profile is not None and "output" in ((raw.get("profiles") or {}).get(profile) or {})
    loaded = LoadedTrainSpec(spec=spec, file=file, profile=profile, positions=positions, profile_output=own)
    ProblemList(check_train_spec(loaded)).raise_if_any(SpecError)
    return loaded


def check_train_spec(ls: LoadedTrainSpec) -> list[Problem]:
    """Checks the schema cannot express: layers against the model's known depth, data files that exist."""
    spec, out = ls.spec, []
    shape = known_shape(spec.model.id, ls.base_dir)
    if shape is not None:
        try:
            resolve_setup(spec.setup, shape.n_layers)
        except LayerResolutionError as e:
            out.append(ls.problem(("setup",), f"{e} (model {spec.model.id})"))
        for k in spec.rloo.lr_per_layer or {}:
            try:
                resolve_layer(k, shape.n_layers)
            except LayerResolutionError as e:
                out.append(ls.problem(("rloo", "lr_per_layer", k), f"{e} ({spec.model.id})"))
    if spec.setup == "full" and spec.model.dtype != "float32" and spec.rloo.lr < 1e-5:
        half = (
            "bfloat16 (which dtype auto picks on GPUs and bf16 CPUs)"
            if spec.model.dtype == "auto"
            else spec.model.dtype
        )
        out.append(
            ls.problem(
                ("rloo", "lr"),
                f"lr {spec.rloo.lr} is below {half} resolution for full fine-tuning: the updates would round away",
                hint="use model.dtype: float32 for full fine-tuning at the paper's 1e-6",
            )
        )
    if spec.data.kind == "jsonl" and not ls.resolve_path(spec.data.path).is_file():
        out.append(
            ls.problem(
                ("data", "path"),
                f"data file not found: {ls.resolve_path(spec.data.path)}",
                hint="paths are relative to the training file",
            )
        )
    if spec.rollouts == "vllm" and (spec.setup == "full" or isinstance(spec.setup, (AtPlaceSetup, Lora1Setup))):
        kind = spec.setup if isinstance(spec.setup, str) else next(iter(spec.setup.model_dump()))
        out.append(
            ls.problem(
                ("rollouts",),
                f"rollouts: vllm syncs steering vectors into the engine as down_proj biases; setup {kind!r} "
                "changes more than a bias",
                hint="use rollouts: hf, or a vector setup (all_layers, single_layer, layers)",
            )
        )
    if spec.rloo.max_new_tokens is None and spec.model.max_length is None:
        out.append(
            ls.problem(
                ("rloo", "max_new_tokens"),
                "no generation length: set rloo.max_new_tokens or "
                "model.max_length (the paper: max_length 4096 for Qwen2.5-Math-7B)",
            )
        )
    return out
