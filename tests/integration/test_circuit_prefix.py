"""prefix_token defaults and misuse (the tests with SmolLM2's real tokenizer are in
tests/slow/test_prefix_real_tokenizer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_tiny_model

from mechsteer.errors import CompileError
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.kinds.prompting import PrefixTokenSpec
from mechsteer.spec.models import ModelSpec


def test_token_defaults_and_misuse():
    model = make_tiny_model("llama")
    spec = PrefixTokenSpec()
    assert spec.bind(ModelSpec(id="x", prefix_token="Step"), None, Path).token == "Step"
    assert PrefixTokenSpec(token="To").bind(ModelSpec(id="x", prefix_token="Step"), None, Path).token == "To"
    with pytest.raises(CompileError, match="names no token"):
        with steering(model, adapter_for(model), [spec], {}):
            pass
    with pytest.raises(CompileError, match="one prefix_token per condition"):
        with steering(model, adapter_for(model), [PrefixTokenSpec(token="To"), PrefixTokenSpec(token="Step")], {}):
            pass
