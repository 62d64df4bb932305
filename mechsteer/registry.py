"""One generic registry per kind of plug-in (intervention, vector source, readout, evaluation, adapter).

Why not a plain dict: we want collision errors, "did you mean" suggestions in error messages, and lazy
`"module:attr"` targets so that the CLI can list kinds without importing torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a kind name to an object (or a lazy `"module:attr"` string resolved on first use)."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None):
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""

        def _do(o):
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._items[name] = o
            return o

        return _do if obj is None else _do(obj)

    def get(self, name: str) -> T:
        """The object registered as `name`, importing a lazy `"module:attr"` target on first use; an unknown name is
        a KeyError with a close match suggested."""
        if name not in self._items:
            raise KeyError(self.unknown_message(name))
        obj = self._items[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._items[name] = obj
        return obj  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        """`unknown <what> 'x'; known: ...`, with the closest registered name when one is close."""
        msg = f"unknown {self.what} {name!r}; known: {', '.join(sorted(self._items))}"
        close = difflib.get_close_matches(name, list(self._items), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        return msg

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
