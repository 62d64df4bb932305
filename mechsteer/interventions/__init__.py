"""Torch implementations of intervention kinds (one module per kind), applied with `steering()`.

Each module's attach function is named by its spec class's registration in `mechsteer.spec.kinds`."""

from mechsteer.interventions.base import SteeringContext, steering

__all__ = ["SteeringContext", "steering"]
