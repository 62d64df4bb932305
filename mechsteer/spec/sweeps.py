"""Declarative sweeps: one condition template expanded per model at compile time (torch-free).

The paper's experiments are sweeps: one condition per layer (Figure 1), per query head, KV head and
projection (Figure 5), per pair of layers (Figure 13). A sweep is written once and resolves against each
model's shape, so one study yields 28 single-layer conditions for Qwen2.5-Math-7B and 32 for Llama-3.1-8B:

    conditions:
      base: []
      single_{layer}:                      # the name template names every variable
        sweep: {layer: layers}             # layers | query_heads | kv_heads | [list] | {start, stop, step}
        interventions: [{kind: add, vector: singles, layer: "{layer}"}]
      pair_{i}_{j}:
        sweep: {i: layers, j: layers}
        where: ["i < j"]                   # comparisons between variables
        interventions: [{kind: compose, parts: [{vector: singles, layer: "{i}"}, {vector: singles, layer: "{j}"}]}]

A string that is exactly `"{var}"` becomes the value itself (an int for layers and heads); `"{var}"` inside a
longer string is formatted into it. Variables expand in the order written (the last varies fastest).
"""

from __future__ import annotations

import itertools
import re
import string
from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from mechsteer.spec.base import StrictModel
from mechsteer.spec.models import ModelShape

NamedRange = Literal["layers", "query_heads", "kv_heads"]
"""Ranges resolved per model: its blocks, its query heads, its KV heads."""


class StepRange(StrictModel):
    """Integers start, start + step, ... below stop (Python's range)."""

    start: int = 0
    stop: int
    step: int = Field(default=1, gt=0)


SweepRange = Union[NamedRange, list[Union[int, float, str]], StepRange]

_WHERE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(<=|<|==|!=|>=|>)\s*([A-Za-z_]\w*|-?\d+)\s*$")
_OPS = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


class SweepSpec(StrictModel):
    """A condition template: `interventions` with `{var}` placeholders, one condition per combination of the
    `sweep` variables' values (see the module docstring). The condition's key is its name template."""

    sweep: dict[str, SweepRange] = Field(min_length=1)
    """Variable -> values: `layers`, `query_heads`, `kv_heads` (resolved per model), a list, or
    {start, stop, step}."""
    where: list[str] = Field(default_factory=list)
    """Constraints between variables such as `i < j` (comparisons only)."""
    interventions: list[dict[str, Any]]
    """The condition's interventions, with `{var}` placeholders."""

    @field_validator("sweep")
    @classmethod
    def _names(cls, v):
        for name in v:
            if not name.isidentifier():
                raise ValueError(f"sweep variable {name!r} must be an identifier (letters, digits, _)")
        return v

    @model_validator(mode="after")
    def _where(self):
        for w in self.where:
            m = _WHERE.match(w)
            if not m:
                raise ValueError(f"where {w!r}: expected a comparison like 'i < j' (<, <=, ==, !=, >=, >)")
            for side in (m.group(1), m.group(3)):
                if not side.lstrip("-").isdigit() and side not in self.sweep:
                    raise ValueError(f"where {w!r} names {side!r}, which is not a sweep variable")
        return self


def placeholders(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def check_name(name: str, sweep: SweepSpec) -> str | None:
    """Why a condition name template cannot name every expansion (None if it can)."""
    missing = sorted(set(sweep.sweep) - placeholders(name))
    if missing:
        return (
            f"the condition name {name!r} must contain every sweep variable as a placeholder (missing: "
            + ", ".join("{" + m + "}" for m in missing)
            + "), so each expanded condition has its own name"
        )
    extra = sorted(placeholders(name) - set(sweep.sweep))
    if extra:
        return f"the condition name {name!r} uses {', '.join(extra)}, which the sweep does not define"
    return None


def values(r: SweepRange, shape: ModelShape | None) -> list:
    """The values of one range (named ranges need the model's shape)."""
    if isinstance(r, StepRange):
        return list(range(r.start, r.stop, r.step))
    if isinstance(r, list):
        return list(r)
    if shape is None:
        raise ValueError(
            f"the range {r!r} depends on the model, whose shape is not known before loading it "
            "(use a known hub id or a local folder with config.json)"
        )
    return list(range({"layers": shape.n_layers, "query_heads": shape.n_heads, "kv_heads": shape.n_kv_heads}[r]))


def combinations(sweep: SweepSpec, shape: ModelShape | None) -> list[dict[str, Any]]:
    """Every assignment of the sweep's variables that satisfies `where`, in expansion order."""
    names = list(sweep.sweep)
    grids = [values(sweep.sweep[n], shape) for n in names]
    out = []
    for combo in itertools.product(*grids):
        env = dict(zip(names, combo, strict=True))
        if all(_holds(w, env) for w in sweep.where):
            out.append(env)
    return out


def _holds(where: str, env: dict) -> bool:
    a, op, b = _WHERE.match(where).groups()
    right = env[b] if b in env else int(b)
    return _OPS[op](env[a], right)


def substitute(obj: Any, env: dict[str, Any]) -> Any:
    """`obj` with `{var}` placeholders filled: an exact `"{var}"` becomes the value, others are formatted."""
    if isinstance(obj, dict):
        return {k: substitute(v, env) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, env) for v in obj]
    if isinstance(obj, str):
        m = re.fullmatch(r"\{([A-Za-z_]\w*)\}", obj)
        if m and m.group(1) in env:
            return env[m.group(1)]
        if placeholders(obj) & set(env):
            return obj.format(**{k: v for k, v in env.items()})
    return obj


def expand(name: str, sweep: SweepSpec, shape: ModelShape | None) -> dict[str, list[dict]]:
    """Condition name -> raw intervention dicts, for one model."""
    return {name.format(**env): substitute(sweep.interventions, env) for env in combinations(sweep, shape)}


SAMPLE_SHAPE = ModelShape(n_layers=4, d_model=1, n_heads=4, n_kv_heads=4, architecture="?")
"""Stands in for the model when a template is validated before any model is known."""


def sample_env(sweep: SweepSpec) -> dict[str, Any]:
    """One assignment (satisfying `where`) used to validate a template before any model is known; named
    ranges take values from a small stand-in shape."""
    combos = combinations(sweep, SAMPLE_SHAPE)
    if combos:
        return combos[0]
    return {n: (values(r, SAMPLE_SHAPE) or [0])[0] for n, r in sweep.sweep.items()}
