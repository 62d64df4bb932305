"""The study spec: the root of a YAML study file.

The discriminated unions for vectors, interventions and readouts are built from the kind registries in
`spec.kinds` after `load_all()` has imported every kind module, so adding a kind needs no edit here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mechsteer.spec.base import StrictModel
from mechsteer.spec.evaluation import EvaluationSpec
from mechsteer.spec.kinds import INTERVENTION_KINDS, READOUT_KINDS, VECTOR_KINDS, discriminated_union, load_all
from mechsteer.spec.models import ModelSpec

load_all()  # every kind registers before the unions below are built

SCHEMA_VERSION = 1

VectorSpec = discriminated_union(VECTOR_KINDS)
InterventionSpec = discriminated_union(INTERVENTION_KINDS)
ReadoutSpec = discriminated_union(READOUT_KINDS)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ProfileSpec(StrictModel):
    """Overrides merged (deep, key by key) onto the study when `--profile NAME` is given, so one file serves a
    CPU smoke run (`mini`) and the paper-scale GPU run (`paper`). The merged study is validated in full."""

    description: str | None = None
    models: dict[str, dict[str, Any]] | None = None
    """Per-model field overrides, e.g. {policy: {id: smollm2-135m, dtype: float32}}."""
    vectors: dict[str, dict[str, Any]] | None = None
    """Per-vector-set overrides (a new `kind` replaces the entry instead of merging into it)."""
    conditions: dict[str, list[dict[str, Any]]] | None = None
    """Conditions to replace or add."""
    evaluation: dict[str, Any] | None = None
    """Evaluation field overrides (tasks, protocol, limit, ...)."""
    readouts: dict[str, dict[str, Any]] | None = None
    """Per-readout field overrides."""
    seeds: list[int] | None = None


class StudySpec(StrictModel):
    """A mechanistic steering study: models x vectors x conditions x (evaluation tasks | readouts) x seeds."""

    schema_version: Literal[1] = 1
    """Version of this spec format."""
    name: str = Field(pattern=NAME_PATTERN)
    """Study name; outputs go to outputs/<name>/."""
    description: str | None = None
    models: dict[str, ModelSpec] = Field(min_length=1)
    """Named models."""
    vectors: dict[str, VectorSpec] = Field(default_factory=dict)  # type: ignore[valid-type]
    """Named steering-vector sets."""
    conditions: dict[str, list[InterventionSpec]] = Field(min_length=1)  # type: ignore[valid-type]
    """Named conditions, each a list of interventions applied together; `[]` is the unsteered baseline."""
    evaluation: EvaluationSpec | None = None
    """Benchmark evaluation through lm-eval."""
    readouts: dict[str, ReadoutSpec] = Field(default_factory=dict)  # type: ignore[valid-type]
    """Named readouts (generations, first-token distributions, ...)."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Seeds for sampled readouts."""
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    """Named override sets (`mini`, `paper`, ...) selected with --profile."""


def json_schema() -> dict:
    """The JSON Schema of a study file (committed as schemas/study.schema.json)."""
    schema = StudySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mechsteer study"
    return schema
