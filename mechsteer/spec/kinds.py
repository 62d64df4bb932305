"""Registries of spec classes, one per plug-in family, and the discriminated unions built from them.

Each kind module registers its pydantic class here (`@vector_kind("random")`); `spec.study` imports every
built-in kind module and builds the `kind`-discriminated unions from these registries, so a new kind is one
module plus one registration line, and the JSON Schema follows automatically.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from mechsteer.registry import Registry

VECTOR_KINDS: Registry[type] = Registry("vector source kind")
INTERVENTION_KINDS: Registry[type] = Registry("intervention kind")
READOUT_KINDS: Registry[type] = Registry("readout kind")


def _kind_decorator(reg: Registry[type]):
    def deco(name: str):
        def wrap(cls):
            field = cls.model_fields.get("kind")
            if field is None or field.default != name:
                raise TypeError(f"{cls.__name__} must declare kind: Literal[{name!r}] = {name!r}")
            reg.register(name, cls)
            return cls

        return wrap

    return deco


vector_kind = _kind_decorator(VECTOR_KINDS)
intervention_kind = _kind_decorator(INTERVENTION_KINDS)
readout_kind = _kind_decorator(READOUT_KINDS)


def discriminated_union(reg: Registry[type]):
    """`Annotated[Union[...all registered classes...], Field(discriminator="kind")]`."""
    classes = tuple(reg.get(n) for n in reg.names())
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="kind")]
