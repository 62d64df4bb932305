"""Base class for every spec model: strict (unknown keys are errors), frozen (specs are values), and with
field docstrings exported as JSON-Schema descriptions so editors show them as hover help."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
