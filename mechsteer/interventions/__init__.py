"""Torch implementations of the intervention kinds, applied with `steering()`.

Each kind's attach function is named by its spec class's registration in `mechsteer.spec.kinds`. Most kinds
have a module of their own (`add`, `place`, `lora1`, `prefix`, `transfer`, `compose`); the four circuit
surgeries (`skip_attn`, `skip_layer`, `qkv`, `head`) share `surgery`, built on the block splicing of `splice`
and `side_cache`. `base` holds the `SteeringContext` every attach function receives."""

from mechsteer.interventions.base import SteeringContext, steering

__all__ = ["SteeringContext", "steering"]
