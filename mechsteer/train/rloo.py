"""The RLOO objective of the authors' code (paper digest section 3.2).

    A_i  = r_i - (1/(G-1)) * sum_{j != i} r_j                 (leave-one-out baseline, per prompt)
    L(s) = -(1/N_tok) * sum_{p,i} A_{p,i} * sum_t log pi_s(y_{p,i,t} | x_p, y_{p,i,<t})

N_tok counts every generated token of the whole batch (stop tokens included, truncated rollouts included).
Log-probs come from logits / temperature. No KL, no importance ratio, no clipping.

`sequence_logprobs` recomputes the log-probs with gradients the same way rollouts are sampled: the prompt is
run once, its KV cache (which carries the gradient of the prompt positions) is repeated G times, and the
responses run through it. The first response token is scored with the prompt's last-position logits.
`rloo_loss_backward` accumulates the gradient over chunks of prompt groups and skips groups whose
advantages are all zero: their contribution to the gradient is exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mechsteer.train.rollout import Prompts, Rollouts, prefill_groups


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out advantages for rewards of shape (P, G): A_i = r_i - mean_{j != i} r_j."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (prompts, G >= 2), got {tuple(rewards.shape)}")
    G = rewards.shape[1]
    total = rewards.sum(dim=1, keepdim=True)
    return rewards - (total - rewards) / (G - 1)


def sequence_logprobs(
    model, prompts: Prompts, tokens: torch.Tensor, mask: torch.Tensor, group_size: int, temperature: float = 1.0
) -> torch.Tensor:
    """Sum over t of log pi(y_t | x, y_<t) for each response row (P*G rows), differentiable.

    `prompts` holds P prompts; row p*G + g of `tokens`/`mask` is a response to prompt p."""
    pre = prefill_groups(model, prompts, group_size)
    first = pre.logits[:, None]  # predicts y_0
    R = tokens.shape[1]
    if R > 1:
        full_mask = torch.cat([pre.mask, mask[:, :-1].to(pre.mask.dtype)], dim=1)
        rpos = pre.next_pos + torch.arange(R - 1, device=tokens.device).unsqueeze(0)
        rest = model(
            input_ids=tokens[:, :-1], attention_mask=full_mask, position_ids=rpos, use_cache=True, **pre.cache_kwargs
        ).logits  # predicts y_1..y_{R-1}
        logits = torch.cat([first, rest], dim=1)
    else:
        logits = first
    logits = logits.float()
    if temperature != 1.0:  # x / 1.0 is x exactly; skipping it saves a full-vocabulary copy per token
        logits = logits / temperature
    logp = -F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none")
    return (logp.view(tokens.shape) * mask.to(logp.dtype)).sum(dim=1)


def rloo_loss(seq_logp: torch.Tensor, advantages: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """-(1/N_tok) * sum_i A_i * seq_logp_i (advantages flattened in the same row order)."""
    return -(advantages.reshape(-1).to(seq_logp.dtype) * seq_logp).sum() / n_tokens


@dataclass
class LossResult:
    """The RLOO loss of a batch, how many prompt groups had a non-zero advantage, and whether a backward pass ran."""

    loss: float
    groups_with_signal: int
    backward_ran: bool


def rloo_loss_backward(
    model, rollouts: Rollouts, advantages: torch.Tensor, *, temperature: float, chunk_prompts: int = 4
) -> LossResult:
    """Compute the RLOO loss of a rollout batch and accumulate its gradient (`.backward()` per chunk).

    Groups with all-zero advantages are skipped (zero contribution); if every group is skipped, nothing
    runs and the gradient stays unset (the caller logs it)."""
    G = rollouts.group_size
    P = rollouts.prompts.ids.shape[0]
    n_tok = max(rollouts.n_tokens, 1)
    adv = advantages.reshape(P, G)
    active = [p for p in range(P) if bool((adv[p] != 0).any())]
    total = 0.0
    for c in range(0, len(active), chunk_prompts):
        groups = active[c : c + chunk_prompts]
        rows = torch.tensor([p * G + g for p in groups for g in range(G)], device=rollouts.tokens.device)
        sub_prompts = _trim(Prompts(rollouts.prompts.ids[groups], rollouts.prompts.mask[groups]))
        tokens, mask = rollouts.tokens[rows], rollouts.mask[rows]
        width = max(int(mask.sum(dim=1).max()), 1)
        seq = sequence_logprobs(model, sub_prompts, tokens[:, :width], mask[:, :width], G, temperature)
        loss = rloo_loss(seq, adv[groups].to(seq.device), n_tok)
        loss.backward()
        total += float(loss.detach())
    return LossResult(total, len(active), bool(active))


def _trim(p: Prompts) -> Prompts:
    """Drop left-pad columns that every row of a sub-batch has."""
    keep = int(p.mask.sum(dim=1).max())
    return Prompts(p.ids[:, -keep:], p.mask[:, -keep:])
