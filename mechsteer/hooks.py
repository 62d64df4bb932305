"""HookScope: the only way mechsteer puts hooks on a model.

Contract (learned from hook leaks in TransformerLens, steering-vectors and pyvene):
- every handle the scope creates is recorded the moment it exists, so a failure halfway through
  registration still removes the hooks already made;
- on exit (normal, exception, Ctrl-C) every handle the scope made is removed, and only those: hooks that
  someone else registered on the same modules survive;
- removal is idempotent, and a scope cannot be re-entered after it closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle


class HookScope:
    """Context manager owning a set of forward / forward-pre hooks."""

    def __init__(self, name: str = "mechsteer"):
        self.name = name
        self._handles: list[RemovableHandle] = []
        self._closed = False
        self._entered = False

    def __enter__(self) -> HookScope:
        if self._closed:
            raise RuntimeError(f"HookScope {self.name!r} was already closed; make a new one")
        self._entered = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed or not self._entered:
            raise RuntimeError(f"HookScope {self.name!r} is not open: use it as `with HookScope() as scope:`")

    def forward_hook(self, module: nn.Module, fn: Callable, *, with_kwargs: bool = False) -> RemovableHandle:
        """fn(module, args, output) -> new output | None (with_kwargs: fn(module, args, kwargs, output))."""
        self._check_open()
        h = module.register_forward_hook(fn, with_kwargs=with_kwargs)
        self._handles.append(h)
        return h

    def pre_hook(self, module: nn.Module, fn: Callable, *, with_kwargs: bool = False) -> RemovableHandle:
        """fn(module, args) -> new args | None (with_kwargs: fn(module, args, kwargs) -> (args, kwargs) | None)."""
        self._check_open()
        h = module.register_forward_pre_hook(fn, with_kwargs=with_kwargs)
        self._handles.append(h)
        return h

    @property
    def n_hooks(self) -> int:
        """Hooks this scope holds now (the test guard checks none outlive their scope)."""
        return len(self._handles)

    def close(self) -> None:
        """Remove every hook this scope made (idempotent)."""
        errors = []
        while self._handles:
            h = self._handles.pop()
            try:
                h.remove()
            except Exception as e:  # pragma: no cover - torch's remove does not raise today
                errors.append(e)
        self._closed = True
        if errors:
            raise RuntimeError(f"failed to remove {len(errors)} hooks: {errors[0]}")


def count_hooks(model: nn.Module) -> int:
    """All forward, forward-pre and backward hooks on a model's modules (used by the test guard)."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n
