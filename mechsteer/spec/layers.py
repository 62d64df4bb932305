"""Layer references, resolved against a model's depth at compile time.

A study names layers so that one file works across model families of different depth:
`26` (index), `-1` (from the end), `last`, `penultimate`, `first`, `all`, or `{depth: 0.5}` (relative depth,
rounded to the nearest layer). A list combines several references. Resolution is a pure function so that
`mechsteer validate` can check ranges without importing torch.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import Field, PlainSerializer, PlainValidator, WithJsonSchema

from mechsteer.spec.base import StrictModel

NamedLayer = Literal["all", "last", "penultimate", "first"]


class DepthRef(StrictModel):
    """A layer chosen by relative depth: 0.0 is the first block, 1.0 the last."""

    depth: float = Field(ge=0.0, le=1.0)
    """Relative depth in [0, 1]; resolves to round(depth * (n_layers - 1))."""


LayerRef = Union[int, NamedLayer, DepthRef]

_NAMED = ("all", "last", "penultimate", "first")
_EXPECTED = "a layer index (26, -1), 'all', 'last', 'penultimate', 'first', {depth: 0.5}, or a list of these"


def _parse_ref(v: Any) -> LayerRef:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a layer reference; expected {_EXPECTED}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        if v in _NAMED:
            return v  # type: ignore[return-value]
        try:
            return int(v)
        except ValueError:
            close = difflib.get_close_matches(v, _NAMED, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{v!r} is not a layer reference{hint}; expected {_EXPECTED}") from None
    if isinstance(v, DepthRef):
        return v
    if isinstance(v, dict):
        return DepthRef.model_validate(v)
    raise ValueError(f"{v!r} is not a layer reference; expected {_EXPECTED}")


def parse_layer_selection(v: Any) -> LayerRef | list[LayerRef]:
    """Validate a layer selection with one clear error message (instead of one per union member)."""
    if isinstance(v, (list, tuple)):
        if not v:
            raise ValueError("empty layer list; expected " + _EXPECTED)
        return [_parse_ref(x) for x in v]
    return _parse_ref(v)


def _dump_selection(v: Any) -> Any:
    if isinstance(v, list):
        return [_dump_selection(x) for x in v]
    return v.model_dump() if isinstance(v, DepthRef) else v


_REF_SCHEMA = {
    "anyOf": [
        {"type": "integer"},
        {"enum": list(_NAMED)},
        {
            "type": "object",
            "properties": {"depth": {"type": "number", "minimum": 0, "maximum": 1}},
            "required": ["depth"],
            "additionalProperties": False,
        },
    ]
}

LayerSelection = Annotated[
    Any,
    PlainValidator(parse_layer_selection),
    PlainSerializer(_dump_selection),
    WithJsonSchema(
        {
            "anyOf": [_REF_SCHEMA, {"type": "array", "items": _REF_SCHEMA, "minItems": 1}],
            "description": "Layer reference(s): " + _EXPECTED,
        }
    ),
]
"""One layer reference or a list of them (validated by `parse_layer_selection`)."""


class LayerResolutionError(ValueError):
    """A layer reference does not exist in the model."""


def resolve_layer(ref: LayerRef, n_layers: int) -> list[int]:
    """Resolve one reference to a sorted list of layer indices in [0, n_layers)."""
    if isinstance(ref, bool):  # bool is an int subclass; `true` in YAML is never a layer
        raise LayerResolutionError(f"{ref!r} is not a layer reference")
    if isinstance(ref, int):
        idx = ref + n_layers if ref < 0 else ref
        if not 0 <= idx < n_layers:
            raise LayerResolutionError(
                f"layer {ref} is out of range for a model with {n_layers} layers "
                f"(valid: 0..{n_layers - 1} or -{n_layers}..-1)"
            )
        return [idx]
    if isinstance(ref, DepthRef):
        return [round(ref.depth * (n_layers - 1))]
    if isinstance(ref, dict):
        return resolve_layer(DepthRef.model_validate(ref), n_layers)
    if ref == "all":
        return list(range(n_layers))
    if ref == "last":
        return [n_layers - 1]
    if ref == "penultimate":
        if n_layers < 2:
            raise LayerResolutionError("'penultimate' needs a model with at least 2 layers")
        return [n_layers - 2]
    if ref == "first":
        return [0]
    raise LayerResolutionError(f"unknown layer reference {ref!r}")


def resolve_layers(sel: LayerSelection, n_layers: int) -> list[int]:
    """Resolve a reference or a list of references; duplicates are an error (they would double-add)."""
    refs = sel if isinstance(sel, list) else [sel]
    out: list[int] = []
    for r in refs:
        out.extend(resolve_layer(r, n_layers))
    if len(set(out)) != len(out):
        raise LayerResolutionError(f"layer selection {sel!r} names the same layer twice: {out}")
    return sorted(out)


def resolve_layers_or_raise(sel: LayerSelection, n_layers: int, what: str, error: type[Exception]) -> list[int]:
    """`resolve_layers`, re-raised as `error(f"{what}: {problem}")`: the one place that turns a layer
    resolution problem into the caller's user-facing error type (CompileError, VectorError, ...)."""
    try:
        return resolve_layers(sel, n_layers)
    except LayerResolutionError as e:
        raise error(f"{what}: {e}") from None


def selection_problems(sel: LayerSelection, shapes: dict) -> list[tuple[str, int, str]]:
    """(model name, its block count, problem) for every model of known shape (`shapes`: name -> object with
    `n_layers`, or None when unknown) on which a layer selection does not resolve: the one range check behind
    `validate`'s layer problems for vector sets and readouts."""
    out = []
    for mname, shape in shapes.items():
        if shape is None:
            continue
        try:
            resolve_layers(sel, shape.n_layers)
        except LayerResolutionError as e:
            out.append((mname, shape.n_layers, str(e)))
    return out
