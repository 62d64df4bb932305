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
import inspect
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
    """Kinds of one plug-in family (interventions, readouts, vector sources, measurements).

    Each family has a base class (`InterventionBase`, `VectorSourceBase`, `MeasurementBase`) whose abstract
    methods are the questions the engine asks a kind (which block it changes first, whether vLLM can run it,
    what files its content hash covers, ...). A spec class registers only when it subclasses its family's
    base and answers every one of them: otherwise `register` raises a TypeError naming the missing methods,
    so a new kind cannot silently fall through to a default the engine would guess."""

    def __init__(self, what: str):
        self.what = what
        self.base: type | None = None
        """The class every spec of this family subclasses (set by `require_base` where it is defined)."""
        self._kinds: Registry[Kind] = Registry(what)
        self._targets: Registry[Callable] = Registry(f"{what} implementation")

    def require_base(self, base: type) -> None:
        """Make `base` the class every spec registered from now on must subclass (called once, by the module
        defining it, before its first registration)."""
        self.base = base

    def register(self, name: str, spec: type, impl: str, report: str | None = None) -> None:
        """Register `spec` as kind `name` with its lazily imported implementation (and report section)."""
        field = spec.model_fields.get("kind")
        if field is None or field.default != name:
            raise TypeError(f"{spec.__name__} must declare kind: Literal[{name!r}] = {name!r}")
        if ":" not in impl:
            raise TypeError(f"{self.what} {name!r}: impl must be 'module:attr', got {impl!r}")
        problem = self.spec_problem(spec)
        if problem:
            raise TypeError(f"{self.what} {name!r}: {problem}")
        self._kinds.register(name, Kind(name, spec, impl, report))
        self._targets.register(f"impl:{name}", impl)
        if report is not None:
            self._targets.register(f"report:{name}", report)

    def spec_problem(self, spec: type) -> str | None:
        """Why `spec` cannot be a kind of this family (not a subclass of its base, or a method of the base
        left unanswered), or None."""
        if self.base is not None and not issubclass(spec, self.base):
            return f"{spec.__name__} must subclass {self.base.__module__}.{self.base.__name__}"
        if inspect.isabstract(spec):
            missing = ", ".join(sorted(spec.__abstractmethods__))
            return (
                f"{spec.__name__} does not implement {missing} (every kind answers what the engine asks of it; "
                "see CONTRIBUTING.md, 'Adding a kind')"
            )
        return None

    def kind(self, name: str) -> Kind:
        """The registered kind `name` (KeyError listing the registered ones otherwise)."""
        try:
            return self._kinds.get(name)
        except KeyError as e:
            raise KeyError(str(e).strip("'\"")) from None

    def spec(self, name: str) -> type:
        """The spec class of kind `name`."""
        return self.kind(name).spec

    def impl(self, name: str) -> Callable:
        """The implementation (imported on first use)."""
        self.kind(name)
        return self._targets.get(f"impl:{name}")

    def report(self, name: str) -> Callable | None:
        """The report-section function of a readout kind, or None."""
        return self._targets.get(f"report:{name}") if self.kind(name).report else None

    def names(self) -> list[str]:
        """Registered kind names, sorted."""
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

    deco.__doc__ = (
        f'`@decorator(name, impl="module:attr")`: register the decorated spec class as a {registries[0].what} '
        "(a TypeError names what the class lacks: its family's base class, or an answer the engine needs)."
    )
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
