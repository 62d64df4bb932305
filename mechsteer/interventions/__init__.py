"""Torch implementations of intervention kinds (one module per kind, registered in `registry`)."""

from mechsteer.interventions.base import INTERVENTIONS, SteeringContext, steering

# Built-in kinds register on import.
from mechsteer.interventions import add as _add  # noqa: F401,E402

__all__ = ["INTERVENTIONS", "SteeringContext", "steering"]
