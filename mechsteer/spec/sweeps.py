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
longer string is replaced by the value's text. Only plain `{var}` placeholders exist: a name template holds no
other brace (no format specs such as `{layer:>9}`, no `{}`), and other braces in intervention strings are left
as written. Variables expand in the order written (the last varies fastest); `where` comparisons need values of
one type (numbers with numbers, text with text). `grid_size` counts a sweep's combinations without making them,
so a study's size is bounded before anything expands (`spec.bounds`).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
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
    control: str | None = None
    """The condition each expansion is compared against in the report's effects (besides the baseline): a
    condition name, or a template with this sweep's variables (`random_{layer}` for `single_{layer}`)."""

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
            if m.group(2) not in ("==", "!="):
                types = {
                    side: _value_types(self.sweep[side]) if side in self.sweep else {"number"}
                    for side in (m.group(1), m.group(3))
                }
                found = set().union(*types.values())
                if len(found) > 1:
                    shown = ", ".join(f"{k}: {' and '.join(sorted(v))}" for k, v in types.items())
                    raise ValueError(
                        f"where {w!r} orders values of different types ({shown}); `<`, `<=`, `>`, `>=` compare "
                        "numbers with numbers or text with text"
                    )
        return self


def _value_types(r: SweepRange) -> set[str]:
    """`number` and/or `text`: the types of a range's values (named ranges and steps are numbers)."""
    if not isinstance(r, list):
        return {"number"}
    return {"text" if isinstance(v, str) else "number" for v in r}


_FIELD = re.compile(r"\{([A-Za-z_]\w*)\}")
"""A placeholder: `{var}` with an identifier inside, nothing else."""


def placeholders(text: str) -> set[str]:
    """The variables a text names as `{var}`."""
    return set(_FIELD.findall(text))


def fill(text: str, env: dict[str, Any]) -> str:
    """`text` with every `{var}` of `env` replaced by the value's text (nothing else is interpreted: unlike
    `str.format`, no format spec, attribute or index is ever evaluated)."""
    return _FIELD.sub(lambda m: str(env[m.group(1)]) if m.group(1) in env else m.group(0), text)


def template_problem(name: str) -> str | None:
    """Why `name` is not a plain template (a brace that is not part of a `{var}` placeholder), or None."""
    rest = _FIELD.sub("", name)
    if "{" not in rest and "}" not in rest:
        return None
    bad = re.search(r"\{[^{}]*\}", rest)
    if bad and bad.group(0) == "{}":
        what = "an empty placeholder `{}`"
    elif bad:
        what = f"the placeholder `{bad.group(0)}`"
    else:
        what = f"an unmatched `{'{' if '{' in rest else '}'}`"
    return (
        f"the condition name {name!r} has {what}; a placeholder is a plain `{{var}}` naming a sweep variable "
        "(no format spec, conversion, index or attribute; no other braces)"
    )


def check_name(name: str, sweep: SweepSpec) -> str | None:
    """Why a condition name template cannot name every expansion (None if it can)."""
    bad = template_problem(name)
    if bad:
        return bad
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


def values(r: SweepRange, shape: ModelShape | None) -> range | list:
    """The values of one range (named ranges need the model's shape); a `range` is not materialised."""
    if isinstance(r, StepRange):
        return range(r.start, r.stop, r.step)
    if isinstance(r, list):
        return list(r)
    if shape is None:
        raise ValueError(
            f"the range {r!r} depends on the model, whose shape is not known before loading it "
            "(use a known hub id or a local folder with config.json)"
        )
    return range({"layers": shape.n_layers, "query_heads": shape.n_heads, "kv_heads": shape.n_kv_heads}[r])


def grid_size(sweep: SweepSpec, shape: ModelShape | None) -> int | None:
    """How many combinations the sweep's ranges make before `where` (None when a named range needs a shape
    that is not known): a product of lengths, so a 1500 x 1500 sweep is sized without being expanded."""
    try:
        return math.prod(len(values(r, shape)) for r in sweep.sweep.values())
    except ValueError:
        return None


EXACT_COUNT_MAX = 200_000
"""Grids up to this size are counted exactly (`where` applied, a fraction of a second); larger ones count
their whole grid, an upper bound that needs no iteration."""


def count_combinations(sweep: SweepSpec, shape: ModelShape | None) -> int | None:
    """The number of conditions the sweep expands to for a model: exact (after `where`) for grids up to
    EXACT_COUNT_MAX, else the grid size (None when a named range needs an unknown shape)."""
    grid = grid_size(sweep, shape)
    if grid is None or not sweep.where or grid > EXACT_COUNT_MAX:
        return grid
    return sum(1 for _ in iter_combinations(sweep, shape))


def iter_combinations(sweep: SweepSpec, shape: ModelShape | None) -> Iterator[dict[str, Any]]:
    """Every assignment of the sweep's variables that satisfies `where`, in expansion order, one at a time."""
    names = list(sweep.sweep)
    grids = [values(sweep.sweep[n], shape) for n in names]
    for combo in itertools.product(*grids):
        env = dict(zip(names, combo, strict=True))
        if all(_holds(w, env) for w in sweep.where):
            yield env


def combinations(sweep: SweepSpec, shape: ModelShape | None) -> list[dict[str, Any]]:
    """Every assignment of the sweep's variables that satisfies `where`, in expansion order."""
    return list(iter_combinations(sweep, shape))


def _holds(where: str, env: dict) -> bool:
    a, op, b = _WHERE.match(where).groups()
    right = env[b] if b in env else int(b)
    try:
        return _OPS[op](env[a], right)
    except TypeError:  # the validator rejects mixed types in a list; this names what slipped through
        raise ValueError(f"where {where!r} cannot compare {env[a]!r} with {right!r}") from None


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
        return fill(obj, env)
    return obj


def expand(name: str, sweep: SweepSpec, shape: ModelShape | None) -> dict[str, list[dict]]:
    """Condition name -> raw intervention dicts, for one model."""
    return {fill(name, env): substitute(sweep.interventions, env) for env in iter_combinations(sweep, shape)}


SAMPLE_SHAPE = ModelShape(n_layers=4, d_model=1, n_heads=4, n_kv_heads=4, architecture="?")
"""Stands in for the model when a template is validated before any model is known."""


def sample_env(sweep: SweepSpec) -> dict[str, Any]:
    """One assignment (satisfying `where`) used to validate a template before any model is known; named
    ranges take values from a small stand-in shape."""
    first = next(iter_combinations(sweep, SAMPLE_SHAPE), None)
    if first is not None:
        return first
    return {n: (values(r, SAMPLE_SHAPE) or [0])[0] for n, r in sweep.sweep.items()}
