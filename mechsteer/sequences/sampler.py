"""The one sampler: a KV-cached decode loop over left-padded prompt batches.

`sample_rollouts` samples one batch: `settings.samples` (G) completions per prompt, rows of one prompt
adjacent (row p*G + g). Its prompt is either prefilled once and its KV cache repeated G times
(`share_prefill`, the training rollouts' speed-up: with G = 8..16 the prefill is most of the cost) or
repeated G times before the prefill (what `transformers`' `generate(num_return_sequences=G)` does; needed
under a condition whose hooks keep per-row state, such as the side KV caches of a spliced block). Each step
takes the last position's logits, applies temperature, top-k and top-p exactly as `transformers` does
(greedy = argmax), and draws from an explicit `torch.Generator`, so a batch's samples depend only on the
settings' seed, the prompts and the arithmetic: a training step's rollouts depend only on (seed, step),
which makes `--resume` bit for bit. A row ends at its first stop token (kept as its last id) or at its
budget. Ended rows leave the batch (`compact`, the default): the KV cache, the mask, the positions and the
steering context's per-row state (`SteeringContext.select_rows`: the position tracker, a spliced block's side
caches) keep only the rows still running, so a batch costs what its rows generate rather than its longest row
times its width; `transformers`' `generate` instead feeds ended rows pad tokens until every row has ended
(`compact=False` does the same, the reference the compacted loop is tested against). Ids are the same either
way up to float rounding (which a different batch width can change in a near tie): sampling still draws for
every row of the batch, so each running row gets the random numbers it would have got.

`sample` is what measurements call: prompts (token id lists) sorted by length (longest first, so a batch
holds prompts of similar length and little padding) in batches of `settings.batch_size`, one generator
across the batches, the steering context told that new sequences begin before each batch
(`ctx.begin()`, which keeps position-selective interventions right), `Sequence`s back in prompt order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from mechsteer.sequences.padding import Prompts, pad, pad_prompts
from mechsteer.sequences.values import SamplingSettings, Sequence


def cache_kwargs(model, cache: DynamicCache) -> dict:
    """`{"cache": cache}` on transformers versions that renamed `past_key_values` (5.2x), else the old name.

    The DynamicCache is updated in place, so callers keep using their own reference to it."""
    params = inspect.signature(type(model).forward).parameters  # the class's: an instance may wrap forward
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


@dataclass
class GroupPrefill:
    """P prompts run once, their state repeated G times (rows of one prompt adjacent)."""

    cache_kwargs: dict
    logits: torch.Tensor
    """(P*G, vocab): the last prompt position's logits, which predict y_0."""
    mask: torch.Tensor
    """(P*G, T_prompt)."""
    next_pos: torch.Tensor
    """(P*G, 1): the position id of y_0."""


def prefill_groups(model, prompts: Prompts, group_size: int) -> GroupPrefill:
    """Prefill the prompt batch once and repeat the KV cache, last logits, mask and positions G times: the
    shared prompt of a group is computed once (rollouts and the RLOO loss forward both use this)."""
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


@dataclass
class Rollouts:
    """G responses per prompt, row p*G + g is sample g of prompt p (right-padded with a pad id)."""

    prompts: Prompts
    group_size: int
    tokens: torch.Tensor
    """(P*G, R) int64."""
    mask: torch.Tensor
    """(P*G, R) int64: 1 for generated tokens, the stop token included."""
    finished: torch.Tensor
    """(P*G,) bool: ended with a stop token (False = truncated at its budget)."""

    @property
    def n_tokens(self) -> int:
        """Generated tokens over all rows (the loss is normalised by it)."""
        return int(self.mask.sum())

    @property
    def lengths(self) -> torch.Tensor:
        """Generated tokens per row, the stop token included."""
        return self.mask.sum(dim=1)

    def token_lists(self) -> list[list[int]]:
        """Each row's generated token ids without padding."""
        return [row[: int(n)].tolist() for row, n in zip(self.tokens, self.lengths)]

    def sequences(self, prompt_index: Seq[int] | None = None) -> list[Sequence]:
        """Row r as a `Sequence` of prompt `prompt_index[r // G]` (default r // G), sample r % G."""
        G = self.group_size
        prompt_ids = self.prompts.token_lists()
        finished = self.finished.tolist()
        out = []
        for r, toks in enumerate(self.token_lists()):
            p = r // G
            out.append(
                Sequence(prompt_ids[p], toks, finished[r], p if prompt_index is None else prompt_index[p], r % G)
            )
        return out

    @classmethod
    def from_token_lists(
        cls, prompts: Prompts, group_size: int, token_ids: Seq[Seq[int]], finished: Seq[bool], pad_id: int
    ) -> Rollouts:
        """The `Rollouts` that `sample_rollouts` would build from these generated ids (row p*G + g = sample g
        of prompt p, a stop token that ended a row kept as its last id): what another engine (vLLM) returns,
        in the layout the loss reads."""
        n = prompts.ids.shape[0] * group_size
        if len(token_ids) != n or len(finished) != n:
            raise ValueError(
                f"expected {n} rows ({prompts.ids.shape[0]} prompts x G={group_size}), got {len(token_ids)}"
            )
        if any(len(r) == 0 for r in token_ids):
            raise ValueError("every rollout row needs at least one token")
        device = prompts.ids.device
        tokens, mask = pad(token_ids, pad_id, "right", device)
        return cls(prompts, group_size, tokens, mask, torch.tensor([bool(f) for f in finished], device=device))


def _warp(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Float32 scores after temperature, top-k and top-p, in `transformers`' order and arithmetic."""
    scores = logits.float() / settings.temperature
    if settings.top_k:
        from transformers.generation.logits_process import TopKLogitsWarper

        scores = TopKLogitsWarper(settings.top_k)(None, scores)
    if settings.top_p < 1.0:
        from transformers.generation.logits_process import TopPLogitsWarper

        scores = TopPLogitsWarper(settings.top_p)(None, scores)
    return scores


def _pick(
    logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None, rows: torch.Tensor, n: int
) -> torch.Tensor:
    """The next token of each running row (`logits` are the rows `rows` of a batch of `n`). Sampling draws
    for all `n` rows, ended ones included (uniform over the vocabulary there, then discarded), because
    `torch.multinomial` spends the same random numbers on a row whatever its probabilities: the running
    rows then get exactly the draws `generate` gives them, whether ended rows left the batch or not."""
    if settings.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(_warp(logits, settings), dim=-1)
    if len(rows) < n:
        full = torch.ones(n, probs.shape[1], dtype=probs.dtype, device=probs.device)
        full[rows] = probs
        return torch.multinomial(full, 1, generator=generator).squeeze(1)[rows]
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample_rollouts(
    model,
    prompts: Prompts,
    settings: SamplingSettings,
    *,
    pad_id: int,
    budgets: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    share_prefill: bool = True,
    ctx=None,
    on_logits: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    compact: bool = True,
) -> Rollouts:
    """Sample `settings.samples` completions per prompt of one batch (see the module docstring).

    `budgets`: new tokens allowed per prompt ((P,) tensor, e.g. `row_budgets`), default
    `settings.max_new_tokens` for every prompt; a row that reaches its budget stops there, unfinished, while
    longer-budget rows go on. `generator`: the random stream (default: a new one seeded with
    `settings.seed`). `ctx`: the steering context of the condition whose hooks are on the model (its
    `begin()` is called before the prefill). `on_logits(step, logits, rows)` sees each step's last-position
    logits of the running rows (`rows`: their indices in the batch) before a token is picked (tests compare
    them with an uncached forward). `compact`: drop ended rows from the batch (see the module docstring)."""
    device = prompts.ids.device
    G = settings.samples
    n_prompts = prompts.ids.shape[0]
    if share_prefill and ctx is not None and G > 1:
        raise ValueError(
            "share_prefill under a steering context: a condition's hooks may keep per-row state (the side KV "
            "caches of a spliced block) that a repeated cache does not follow; prefill every copy instead"
        )
    budget = torch.as_tensor(settings.max_new_tokens if budgets is None else budgets, dtype=torch.long)
    budget = budget.to(device).expand(n_prompts)
    if bool((budget <= 0).any()):
        raise ValueError("max_new_tokens must be positive (every prompt needs room for one new token)")
    budget = budget.repeat_interleave(G)
    limit = int(budget.max())
    if generator is None and not settings.greedy:
        generator = torch.Generator(device=device).manual_seed(settings.seed)
    if ctx is not None:
        ctx.begin()
    if share_prefill or G == 1:
        pre = prefill_groups(model, prompts, G)
    else:
        copies = Prompts(prompts.ids.repeat_interleave(G, dim=0), prompts.mask.repeat_interleave(G, dim=0))
        pre = prefill_groups(model, copies, 1)
    ckw, logits, mask, next_pos = pre.cache_kwargs, pre.logits, pre.mask, pre.next_pos
    n = logits.shape[0]
    stop = torch.tensor(sorted(set(settings.stop_ids)), dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)  # emitted a stop token
    tokens = torch.full((n, limit), pad_id, dtype=torch.long, device=device)
    resp_mask = torch.zeros((n, limit), dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)  # the batch rows still in the forward batch
    running = torch.ones(n, dtype=torch.bool, device=device)  # of those, the ones not ended
    width = 0
    for i in range(limit):
        if on_logits is not None:
            on_logits(i, logits, rows)
        tok = _pick(logits, settings, generator, rows, n)
        tok = torch.where(running, tok, torch.full_like(tok, pad_id))
        tokens[rows, i] = tok
        resp_mask[rows, i] = running.long()
        width = i + 1
        stopped = running & torch.isin(tok, stop)
        done[rows] |= stopped
        running = running & ~stopped & (budget[rows] > i + 1)
        if not bool(running.any()) or i + 1 == limit:
            break
        if compact and not bool(running.all()):
            keep = running.nonzero().squeeze(1)
            rows, tok, mask, next_pos, running = rows[keep], tok[keep], mask[keep], next_pos[keep], running[keep]
            next(iter(ckw.values())).batch_select_indices(keep)
            if ctx is not None:
                ctx.select_rows(keep)
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True, **ckw)
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    tokens, resp_mask = tokens[:, :width], resp_mask[:, :width]
    return Rollouts(prompts, G, tokens, resp_mask, done.clone())


def sample(
    model,
    prompt_ids: Seq[Seq[int]],
    settings: SamplingSettings,
    *,
    pad_id: int,
    ctx=None,
    share_prefill: bool = False,
    device: torch.device | str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[Sequence]:
    """`settings.samples` sequences per prompt (token id lists, no padding), in prompt order (sample k of
    prompt p at index p * samples + k). Batches of `settings.batch_size` prompts, longest prompts first;
    one generator seeded with `settings.seed` across the batches. `ctx`: the steering context of the
    condition whose hooks are on the model (None when there is none); `share_prefill` only without one
    (see `sample_rollouts`). `on_batch(n)` after each batch of n prompts."""
    if not prompt_ids:
        return []
    device = next(model.parameters()).device if device is None else device
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    generator = None if settings.greedy else torch.Generator(device=device).manual_seed(settings.seed)
    by_prompt: dict[int, list[Sequence]] = {}
    for start in range(0, len(order), settings.batch_size):
        idx = order[start : start + settings.batch_size]
        batch = pad_prompts([prompt_ids[i] for i in idx], pad_id, device)
        ro = sample_rollouts(
            model, batch, settings, pad_id=pad_id, generator=generator, share_prefill=share_prefill, ctx=ctx
        )
        for s in ro.sequences(idx):
            by_prompt.setdefault(s.prompt, []).append(s)
        if on_batch is not None:
            on_batch(len(idx))
    return [s for i in range(len(prompt_ids)) for s in by_prompt[i]]
