"""On-policy rollouts: G samples per prompt with the prompt prefilled once and its KV cache repeated G times.

The sampler, the `Prompts` and `Rollouts` values and the shared prefill live in the sequence toolkit
(`mechsteer.sequences`), which measurements sample through too; this module keeps the training side's names.
Whatever hooks are on the model (the parameters being trained) are active, so the rollouts come from the
current policy. Sampling draws from a generator seeded per step, so a step's rollouts depend only on (seed,
step): this is what makes `--resume` bit-for-bit. Temperature 0 means greedy (evaluation).

Another engine (vLLM) returns token ids and finished flags per row; `Rollouts.from_token_lists` puts them in
the layout `sample_rollouts` produces, so everything after sampling is the same code.
"""

from __future__ import annotations

import torch

from mechsteer.sequences import (
    GroupPrefill,
    Prompts,
    Rollouts,
    SamplingSettings,
    cache_kwargs,
    pad_prompts,
    prefill_groups,
    row_budgets,
    sample_rollouts,
)

__all__ = [
    "GroupPrefill",
    "Prompts",
    "Rollouts",
    "cache_kwargs",
    "pad_prompts",
    "prefill_groups",
    "row_budgets",
    "sample",
    "sample_rollouts",
]


def sample(
    model,
    prompts: Prompts,
    *,
    group_size: int,
    max_new_tokens: int | torch.Tensor,
    temperature: float,
    stop_ids: list[int],
    pad_id: int,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """`sample_rollouts` with its settings spelled out as keywords (the training side's name, kept for
    callers written against it): `group_size` samples per prompt, shared prefill, `max_new_tokens` one
    budget or a (P,) tensor of per-prompt budgets, `generator` the random stream (a fresh one seeded 0
    when None)."""
    budget = torch.as_tensor(max_new_tokens)
    settings = SamplingSettings(
        max_new_tokens=int(budget.max()), temperature=temperature, samples=group_size, stop_ids=tuple(stop_ids)
    )
    return sample_rollouts(model, prompts, settings, pad_id=pad_id, budgets=budget, generator=generator)
