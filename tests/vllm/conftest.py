"""The vLLM tier's fixtures (defined in vllm_shared.py; see there)."""

from vllm_shared import engine, shared  # noqa: F401 - pytest fixtures
