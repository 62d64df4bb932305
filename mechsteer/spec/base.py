"""Base class for every spec model: strict (unknown keys are errors), frozen (specs are values), and with
field docstrings exported as JSON-Schema descriptions so editors show them as hover help."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """The base of every spec model: unknown keys are errors (a typo never passes silently), values are frozen (a
    compiled plan cannot be edited by accident), and attribute docstrings become the JSON Schema's descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


LIMIT_MAX = 1_000_000
"""Largest `limit` (problems or prompts per measurement, training problems): no benchmark comes near it, and a
typo such as 10**12 is an error at validation instead of a run that tries to generate that many."""
