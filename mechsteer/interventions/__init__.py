"""Torch implementations of intervention kinds (one module per kind, registered in `registry`)."""

from mechsteer.interventions.base import INTERVENTIONS, SteeringContext, steering

# Built-in kinds register on import.
from mechsteer.interventions import add as _add  # noqa: F401,E402
from mechsteer.interventions import compose as _compose  # noqa: F401,E402
from mechsteer.interventions import lora1 as _lora1  # noqa: F401,E402
from mechsteer.interventions import place as _place  # noqa: F401,E402
from mechsteer.interventions import prefix as _prefix  # noqa: F401,E402
from mechsteer.interventions import surgery as _surgery  # noqa: F401,E402
from mechsteer.interventions import transfer as _transfer  # noqa: F401,E402

__all__ = ["INTERVENTIONS", "SteeringContext", "steering"]
