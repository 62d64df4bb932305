"""The sequence toolkit: what every part of mechsteer that samples or teacher-forces token sequences shares.

* `values`: `SamplingSettings` (max new tokens, temperature, top-p, top-k, samples per prompt, seed, stop
  ids, batch size) and `Sequence` (prompt ids, generated ids, whether a stop token ended it; text derived);
* `padding`: the one padder (left for prompts, right for teacher-forced sequences) and pad-id rule;
* `sampler`: the one sampler (`sample` for measurements, `sample_rollouts` for a training batch, with the
  prompt prefilled once per group when asked);
* `html`: the one coloured-token renderer.

Readouts, DiffSAE, the `mean_diff` builder, training rollouts and training evaluation all sample through
`sampler`; activations are captured through `mechsteer.capture.Capture`. Layer 4: torch and transformers
only, no model loading, no interventions (a steering context is passed in and only told `begin()`).
"""

from mechsteer.sequences.padding import Prompts, pad, pad_id, pad_prompts, pad_right
from mechsteer.sequences.sampler import (
    GroupPrefill,
    Rollouts,
    cache_kwargs,
    prefill_groups,
    row_budgets,
    sample,
    sample_rollouts,
)
from mechsteer.sequences.values import SamplingSettings, Sequence, only_finished

__all__ = [
    "GroupPrefill",
    "Prompts",
    "Rollouts",
    "SamplingSettings",
    "Sequence",
    "cache_kwargs",
    "only_finished",
    "pad",
    "pad_id",
    "pad_prompts",
    "pad_right",
    "prefill_groups",
    "row_budgets",
    "sample",
    "sample_rollouts",
]
