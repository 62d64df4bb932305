"""On-policy rollouts: G samples per prompt with the prompt prefilled once and its KV cache repeated G times.

`sample()` runs its own decode loop instead of `model.generate(num_return_sequences=G)`, because generate
prefills every copy of the prompt; with G = 8..16 copies that is most of the prefill cost. Whatever hooks
are on the model (the vectors being trained) are active, so the rollouts come from the current policy.
Sampling uses an explicit `torch.Generator`, so a step's rollouts depend only on (seed, step): this is what
makes `--resume` bit-for-bit. Temperature 0 means greedy (evaluation).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache


def cache_kwargs(model, cache: DynamicCache) -> dict:
    """`{"cache": cache}` on transformers versions that renamed `past_key_values` (5.2x), else the old name.

    The DynamicCache is updated in place, so callers keep using their own reference to it."""
    params = inspect.signature(model.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


@dataclass
class Prompts:
    """A left-padded batch of prompts."""

    ids: torch.Tensor  # (P, Lp) int64
    mask: torch.Tensor  # (P, Lp) int64, 0 = pad

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def positions(self) -> torch.Tensor:
        """Position ids that ignore left padding (0 at each row's first real token)."""
        return (self.mask.cumsum(dim=1) - 1).clamp(min=0)


def pad_prompts(token_lists: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> Prompts:
    """Left-pad token lists into a `Prompts` batch."""
    if not token_lists or any(len(t) == 0 for t in token_lists):
        raise ValueError("every prompt needs at least one token")
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for r, toks in enumerate(token_lists):
        ids[r, width - len(toks) :] = torch.tensor(toks, dtype=torch.long)
        mask[r, width - len(toks) :] = 1
    return Prompts(ids.to(device), mask.to(device))


@dataclass
class Rollouts:
    """G responses per prompt, row p*G + g is sample g of prompt p (right-padded with `pad_id`)."""

    prompts: Prompts
    group_size: int
    tokens: torch.Tensor  # (P*G, R) int64
    mask: torch.Tensor  # (P*G, R) int64: 1 for generated tokens, the stop token included
    finished: torch.Tensor  # (P*G,) bool: ended with a stop token (False = truncated at the length limit)

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def token_lists(self) -> list[list[int]]:
        return [row[: int(n)].tolist() for row, n in zip(self.tokens, self.lengths)]


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@dataclass
class GroupPrefill:
    """P prompts run once, their state repeated G times (rows of one prompt adjacent)."""

    cache_kwargs: dict
    logits: torch.Tensor  # (P*G, vocab): last prompt position, predicts y_0
    mask: torch.Tensor  # (P*G, T_prompt)
    next_pos: torch.Tensor  # (P*G, 1): position id of y_0


def prefill_groups(model, prompts: Prompts, group_size: int) -> GroupPrefill:
    """Prefill the prompt batch once and repeat the KV cache, last logits, mask and positions G times: the
    shared prompt of a group is computed once (rollouts and the loss forward both use this)."""
    cache = DynamicCache()
    ckw = cache_kwargs(model, cache)
    pos = prompts.positions()
    out = model(
        input_ids=prompts.ids, attention_mask=prompts.mask, position_ids=pos, use_cache=True, logits_to_keep=1, **ckw
    )
    if group_size > 1:
        cache.batch_repeat_interleave(group_size)
    return GroupPrefill(
        ckw,
        out.logits[:, -1].repeat_interleave(group_size, dim=0),
        prompts.mask.repeat_interleave(group_size, dim=0),
        pos[:, -1:].repeat_interleave(group_size, dim=0) + 1,
    )


def row_budgets(prompts: Prompts, max_length: int | None, max_new_tokens: int | None) -> torch.Tensor:
    """New-token budget of each prompt, as the authors' code budgets each request by its own length:
    `max_length - len(prompt)` (capped by `max_new_tokens` when both are set), not by the padded batch width."""
    if max_length is None and max_new_tokens is None:
        raise ValueError("set max_new_tokens or max_length")
    lengths = prompts.lengths
    budget = torch.full_like(lengths, max_new_tokens if max_new_tokens is not None else 1 << 30)
    if max_length is not None:
        budget = torch.minimum(budget, max_length - lengths)
    return budget


@torch.no_grad()
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
    """Sample `group_size` completions per prompt (temperature 0 = greedy), stopping at any of `stop_ids`.

    `max_new_tokens` is one budget for every row, or a (P,) tensor of per-prompt budgets (`row_budgets`): a
    row that reaches its budget stops there, unfinished, while longer-budget rows go on.

    The prompt batch is prefilled once; the KV cache, the last-position logits, the attention mask and the
    position ids are then repeated G times (`repeat_interleave`, so rows of one prompt are adjacent)."""
    device = prompts.ids.device
    G = group_size
    n_prompts = prompts.ids.shape[0]
    budget = torch.as_tensor(max_new_tokens, dtype=torch.long).to(device).expand(n_prompts)
    if bool((budget <= 0).any()):
        raise ValueError("max_new_tokens must be positive (every prompt needs room for one new token)")
    budget = budget.repeat_interleave(G)
    limit = int(budget.max())
    pre = prefill_groups(model, prompts, G)
    ckw, logits, mask, next_pos = pre.cache_kwargs, pre.logits, pre.mask, pre.next_pos
    n = logits.shape[0]
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)  # emitted a stop token
    ended = torch.zeros(n, dtype=torch.bool, device=device)  # stopped or out of budget
    toks, keep = [], []
    for i in range(limit):
        tok = _pick(logits, temperature, generator)
        active = ~ended
        tok = torch.where(active, tok, torch.full_like(tok, pad_id))
        toks.append(tok)
        keep.append(active)
        done = done | (active & torch.isin(tok, stop))
        ended = done | (budget <= i + 1)
        if bool(ended.all()) or len(toks) == limit:
            break
        mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True, **ckw)
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    tokens = torch.stack(toks, dim=1)
    resp_mask = torch.stack(keep, dim=1).long()
    return Rollouts(prompts, G, tokens, resp_mask, done.clone())
