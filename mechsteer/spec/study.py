"""The study spec: the root of a YAML study file.

The discriminated unions for vectors, interventions and readouts are built from the kind registries in
`spec.kinds` after `load_all()` has imported every kind module, so adding a kind needs no edit here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, StringConstraints, Tag, TypeAdapter, ValidationError

from mechsteer.spec.base import StrictModel
from mechsteer.spec.evaluation import EvaluationSpec
from mechsteer.spec.kinds import INTERVENTION_KINDS, READOUT_KINDS, VECTOR_KINDS, discriminated_union, load_all
from mechsteer.spec.models import Backend, ModelShape, ModelSpec
from mechsteer.spec.sweeps import SweepSpec, expand, fill, iter_combinations

load_all()  # every kind registers before the unions below are built

SCHEMA_VERSION = 1

VectorSpec = discriminated_union(VECTOR_KINDS)
InterventionSpec = discriminated_union(INTERVENTION_KINDS)
ReadoutSpec = discriminated_union(READOUT_KINDS)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_MAX_LENGTH = 100
"""Longest name of a study, profile, model, vector set, condition (also once a sweep is expanded) or readout:
names become parts of folder and file names, which file systems cap at 255 bytes."""
LABEL_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""Names of models, vector sets, conditions and readouts: any text without control characters (a tab or a line
break would break the tables and file names they appear in)."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH, pattern=LABEL_PATTERN)]


class ConditionSpec(StrictModel):
    """A condition written as a mapping, to give it fields besides its interventions:
    `steered: {interventions: [{kind: add, vector: v}], control: random}`."""

    interventions: list[InterventionSpec]  # type: ignore[valid-type]
    """The interventions applied together ([] = unsteered)."""
    control: Name | None = None
    """The condition this one is compared against in the report's effects, besides the unsteered baseline
    (e.g. a norm-matched random vector); it takes precedence over `evaluation.control`."""


def _condition_tag(v: Any) -> str | None:
    if isinstance(v, (list, tuple)):
        return "List"  # capitalised: the error locator drops union tags like this one from field paths
    if isinstance(v, SweepSpec) or (isinstance(v, dict) and "sweep" in v):
        return "SweepSpec"
    if isinstance(v, (dict, ConditionSpec)):
        return "ConditionSpec"
    return None


Condition = Annotated[
    Union[  # type: ignore[valid-type]
        Annotated[list[InterventionSpec], Tag("List")],
        Annotated[ConditionSpec, Tag("ConditionSpec")],
        Annotated[SweepSpec, Tag("SweepSpec")],
    ],
    Discriminator(
        _condition_tag,
        custom_error_type="invalid_condition",
        custom_error_message="a condition is a list of interventions ([] = unsteered), a mapping "
        "{interventions: [...], control: name}, or a sweep {sweep: {var: range}, interventions: [...]}",
    ),
]
"""A condition: a list of interventions applied together (as a list, or as a mapping with a `control`), or a
sweep expanded per model (`spec.sweeps`)."""


class ReportSpec(StrictModel):
    """What the report leads with."""

    headline: Literal["acc_lenient", "acc_boxed"] | None = None
    """The accuracy metric of the report's effects, its first figures and the terminal summary. Default:
    `acc_boxed` (the paper's metric) under `evaluation.protocol: paper`, else `acc_lenient`."""


def name_problem(name: str) -> str | None:
    """Why an expanded condition name breaks the `Name` rule (None when it does not)."""
    import re

    if len(name) > NAME_MAX_LENGTH:
        return f"has {len(name)} characters (at most {NAME_MAX_LENGTH}: names become parts of file names)"
    if not re.fullmatch(LABEL_PATTERN, name):
        return "holds a control character (a tab or a line break)"
    return None


class ProfileSpec(StrictModel):
    """Overrides merged (deep, key by key) onto the study when `--profile NAME` is given, so one file serves a
    CPU smoke run (`mini`) and the paper-scale GPU run (`paper`). The merged study is validated in full."""

    description: str | None = None
    models: dict[str, dict[str, Any]] | None = None
    """Per-model field overrides, e.g. {policy: {id: smollm2-135m, dtype: float32}}."""
    vectors: dict[str, dict[str, Any]] | None = None
    """Per-vector-set overrides (a new `kind` replaces the entry instead of merging into it)."""
    conditions: dict[str, list[dict[str, Any]] | dict[str, Any]] | None = None
    """Conditions to replace or add: a list of interventions, or a sweep (merged key by key onto a sweep of
    the same name, so `{sweep: {layer: layers}}` widens a mini run's explicit layer list to every block)."""
    evaluation: dict[str, Any] | None = None
    """Evaluation field overrides (tasks, protocol, limit, ...)."""
    report: dict[str, Any] | None = None
    """Report field overrides (headline)."""
    readouts: dict[str, dict[str, Any]] | None = None
    """Per-readout field overrides."""
    seeds: list[int] | None = None
    backend: Backend | None = None
    deviations: list[str] | None = None
    """Replaces the study's `deviations` for this profile (a profile lists every departure that applies to it)."""


class StudySpec(StrictModel):
    """A mechanistic steering study: models x vectors x conditions x (evaluation tasks | readouts) x seeds."""

    schema_version: Literal[1] = 1
    """Version of this spec format."""
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)
    """Study name; outputs go to outputs/<name>/."""
    description: str | None = None
    models: dict[Name, ModelSpec] = Field(min_length=1)
    """Named models."""
    vectors: dict[Name, VectorSpec] = Field(default_factory=dict)  # type: ignore[valid-type]
    """Named steering-vector sets."""
    conditions: dict[Name, Condition] = Field(min_length=1)  # type: ignore[valid-type]
    """Named conditions, each a list of interventions applied together (`[]` is the unsteered baseline), the
    same as a mapping with a control (`{interventions: [...], control: random}`), or a sweep:
    `{sweep: {layer: layers}, interventions: [...]}` under a name template such as `single_{layer}`,
    expanded per model (layers, query_heads, kv_heads, lists, {start, stop, step}; `where: [i < j]`), with an
    optional `control: random_{layer}`."""
    evaluation: EvaluationSpec | None = None
    """Benchmark evaluation through lm-eval."""
    readouts: dict[Name, ReadoutSpec] = Field(default_factory=dict)  # type: ignore[valid-type]
    """Named readouts (generations, first-token distributions, ...)."""
    report: ReportSpec | None = None
    """What the report leads with (`headline: acc_boxed`)."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Seeds for sampled readouts."""
    backend: Backend | None = None
    """Evaluation backend of model entries that name none: `hf` (default: transformers with hooks) or `vllm`
    (all-position `add` conditions compiled into down_proj biases; needs vLLM and a GPU)."""
    deviations: list[str] = Field(default_factory=list)
    """Where this study departs from the paper's procedure (a missing published setting, an offline stand-in,
    a smaller scale), one sentence each; the report lists them under "Deviations from the paper", so a result
    is never read as the paper's object when it is not."""
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    """Named override sets (`mini`, `paper`, ...) selected with --profile."""


def json_schema() -> dict:
    """The JSON Schema of a study file (committed as schemas/study.schema.json)."""
    schema = StudySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mechsteer study"
    return schema


_INTERVENTION_LIST = TypeAdapter(list[InterventionSpec])  # type: ignore[valid-type]


def intervention_list(raw: list) -> list:
    """Validate raw intervention dicts (pydantic ValidationError on a problem)."""
    return _INTERVENTION_LIST.validate_python(raw)


def expanded_conditions(spec: StudySpec, shape: ModelShape | None) -> dict[str, list]:
    """The study's conditions for one model, sweeps expanded against its shape, in study order; each
    expanded intervention validated. Raises ValueError naming the condition on a problem."""
    out: dict[str, list] = {}
    for name, cond in spec.conditions.items():
        if not isinstance(cond, SweepSpec):
            out[name] = list(interventions_of(cond))
            continue
        for cname, raw in expand(name, cond, shape).items():
            bad = name_problem(cname)
            if bad:
                raise ValueError(f"sweep {name!r} expands to the condition name {cname!r}, which {bad}")
            if cname in out:
                raise ValueError(f"sweep {name!r} expands to {cname!r}, which is already a condition")
            try:
                out[cname] = _INTERVENTION_LIST.validate_python(raw)
            except ValidationError as e:
                err = e.errors(include_url=False)[0]
                raise ValueError(
                    f"sweep {name!r} expands to condition {cname!r}, whose interventions are "
                    f"invalid at {'.'.join(map(str, err['loc']))}: {err['msg']}"
                ) from None
    return out


def interventions_of(cond) -> list:
    """A condition's interventions: the list itself, a mapping's `interventions` (validated specs), or a
    sweep's template (raw dicts with placeholders)."""
    return cond if isinstance(cond, list) else cond.interventions


def condition_controls(spec: StudySpec, shape: ModelShape | None) -> dict[str, str]:
    """Expanded condition -> the control it is compared against in the report (its own `control:`, else
    `evaluation.control`; never itself), for one model. A sweep's control template is filled per expansion."""
    default = spec.evaluation.control if spec.evaluation is not None else None
    out: dict[str, str] = {}
    for name, cond in spec.conditions.items():
        if isinstance(cond, SweepSpec):
            pairs = [
                (fill(name, env), fill(cond.control or default or "", env)) for env in iter_combinations(cond, shape)
            ]
        else:
            pairs = [(name, getattr(cond, "control", None) or default or "")]
        out.update((c, ctl) for c, ctl in pairs if ctl and ctl != c)
    return out
