"""HookScope: removes every hook it made (on success, on error, halfway through registration) and never
removes hooks it did not make."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from mechsteer.hooks import HookScope, count_hooks
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.vectors import VectorSet


def test_scope_removes_its_hooks_and_keeps_foreign_ones():
    m = make_tiny_model()
    foreign = m.model.layers[0].register_forward_hook(lambda *a: None)
    try:
        with HookScope() as s:
            for layer in m.model.layers:
                s.forward_hook(layer, lambda *a: None)
                s.pre_hook(layer, lambda *a: None)
            assert count_hooks(m) == 1 + 2 * len(m.model.layers)
        assert count_hooks(m) == 1
        assert len(m.model.layers[0]._forward_hooks) == 1
    finally:
        foreign.remove()


def test_scope_cleans_up_when_registration_fails_halfway():
    m = make_tiny_model()
    with pytest.raises(AttributeError):
        with HookScope() as s:
            s.forward_hook(m.model.layers[0], lambda *a: None)
            s.forward_hook(m.model.layers[1], lambda *a: None)
            s.forward_hook(m.model.nonexistent, lambda *a: None)  # raises after two hooks exist
    assert count_hooks(m) == 0


def test_scope_cleans_up_when_a_hook_raises_during_forward():
    m = make_tiny_model()

    def boom(*a):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        with HookScope() as s:
            s.forward_hook(m.model.layers[1], boom)
            m(torch.tensor([[3, 4, 5]]))
    assert count_hooks(m) == 0


def test_steering_cleans_up_when_a_later_intervention_is_invalid():
    m = make_tiny_model()
    vs = VectorSet(torch.randn(4, 32), [0, 1, 2, 3])
    bad = AddSpec(vector="missing")
    from mechsteer.errors import CompileError

    with pytest.raises(CompileError, match="unknown vector set 'missing'"):
        with steering(m, adapter_for(m), [AddSpec(vector="v"), bad], {"v": vs}):
            pass
    assert count_hooks(m) == 0


def test_closed_scope_cannot_be_reused_and_close_is_idempotent():
    m = make_tiny_model()
    s = HookScope()
    with s:
        s.forward_hook(m.model.layers[0], lambda *a: None)
    s.close()
    s.close()
    assert count_hooks(m) == 0
    with pytest.raises(RuntimeError, match="already closed"):
        with s:
            pass
    with pytest.raises(RuntimeError, match="not open"):
        HookScope().forward_hook(m.model.layers[0], lambda *a: None)
