"""Plug-in kinds: one registration per kind, pairing its spec class with its implementation.

A kind (an intervention, a readout, a vector source, a measurement) is one pydantic spec class in a module of
this package plus one implementation elsewhere. The spec class names its implementation as a lazy
`"module:attr"` target in its registration line, so the spec side stays torch-free (`mechsteer validate` and
`mechsteer plan` never import torch) and nothing else keeps a second list of kinds:

    @intervention_kind("add", impl="mechsteer.interventions.add:attach_add")
    class AddSpec(InterventionBase): ...

`load_all()` imports every module of this package, so a new kind module is picked up without editing any
import list; `mechsteer.spec.study` builds the `kind`-discriminated unions (and so the JSON Schema) from the
registries afterwards. `tests/unit/test_kinds.py` resolves every implementation and runs every kind on a
tiny model, so a kind without a working implementation fails the suite.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field

from mechsteer.registry import Registry


@dataclass(frozen=True)
class Kind:
    """A registered kind: its name, spec class and lazily imported implementation targets."""

    name: str
    spec: type
    impl: str
    """`"module:attr"` of the implementation (attach function, builder, or measurement runner)."""
    report: str | None = None
    """`"module:attr"` of a report section function (readouts only; optional)."""


class KindRegistry:
    """Kinds of one plug-in family (interventions, readouts, vector sources, measurements)."""

    def __init__(self, what: str):
        self.what = what
        self._kinds: Registry[Kind] = Registry(what)
        self._targets: Registry[Callable] = Registry(f"{what} implementation")

    def register(self, name: str, spec: type, impl: str, report: str | None = None) -> None:
        field = spec.model_fields.get("kind")
        if field is None or field.default != name:
            raise TypeError(f"{spec.__name__} must declare kind: Literal[{name!r}] = {name!r}")
        if ":" not in impl:
            raise TypeError(f"{self.what} {name!r}: impl must be 'module:attr', got {impl!r}")
        self._kinds.register(name, Kind(name, spec, impl, report))
        self._targets.register(f"impl:{name}", impl)
        if report is not None:
            self._targets.register(f"report:{name}", report)

    def kind(self, name: str) -> Kind:
        try:
            return self._kinds.get(name)
        except KeyError as e:
            raise KeyError(str(e).strip("'\"")) from None

    def spec(self, name: str) -> type:
        return self.kind(name).spec

    def impl(self, name: str) -> Callable:
        """The implementation (imported on first use)."""
        self.kind(name)
        return self._targets.get(f"impl:{name}")

    def report(self, name: str) -> Callable | None:
        """The report-section function of a readout kind, or None."""
        return self._targets.get(f"report:{name}") if self.kind(name).report else None

    def names(self) -> list[str]:
        return self._kinds.names()

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self):
        return iter(self.names())


VECTOR_KINDS = KindRegistry("vector source kind")
INTERVENTION_KINDS = KindRegistry("intervention kind")
READOUT_KINDS = KindRegistry("readout kind")
MEASUREMENT_KINDS = KindRegistry("measurement kind")
"""Everything a cell can measure: every readout kind, plus `eval` (one benchmark task of `evaluation:`)."""


def _decorator(*registries: KindRegistry):
    def deco(name: str, *, impl: str, report: str | None = None):
        def wrap(cls):
            for reg in registries:
                reg.register(name, cls, impl, report)
            return cls

        return wrap

    return deco


vector_kind = _decorator(VECTOR_KINDS)
intervention_kind = _decorator(INTERVENTION_KINDS)
readout_kind = _decorator(READOUT_KINDS, MEASUREMENT_KINDS)
measurement_kind = _decorator(MEASUREMENT_KINDS)


def load_all() -> None:
    """Import every kind module of this package (idempotent), so each registers its kinds."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def discriminated_union(reg: KindRegistry) -> Any:
    """`Annotated[Union[...all registered spec classes...], Field(discriminator="kind")]`."""
    classes = tuple(reg.spec(n) for n in reg.names())
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="kind")]
