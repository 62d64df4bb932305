"""`logit_lens`: what a direction in the residual stream says about the next token (paper section 4.4).

Given vectors (rows of a steering-vector stack, a lora1 B^, or the effective unembedding bias u_l) and the
unembedding W_U [vocab, d], each row is scored against every token by
  dot  = W_U x               (logit contribution),
  cos  = (W_U / ||W_U||_row) x / ||x||   (direction only),
  prob = softmax(W_U x)      (as if x were the whole final residual),
optionally after the final norm (x -> norm(x), pass the model's norm as a callable or its weight + eps).
The top-k and bottom-k tokens of each row come back as one long DataFrame (`top_bottom` picks them; the
DiffSAE feature tables use the same two functions on decoder rows).

The effective unembedding bias u_l is the mean shift of the LAST block's residual stream (before the final
norm) caused by s_l alone: the engine gets it from the persistence accumulator (`mean_shift(l, L-1)`); this
module tabulates its tokens and the cosine matrix of u_l across source layers (paper Figure 4).
Pure: no hooks, no model calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch

from mechsteer.readouts.vector_stats import cosine_matrix

METRICS = ("dot", "cos", "prob")


def rms_norm(weight: torch.Tensor, eps: float, *, offset: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The final RMSNorm as a function: x / sqrt(mean(x^2) + eps) * (offset + weight) (offset 1 for Gemma)."""
    w = weight.detach().double()

    def norm(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (offset + w)

    return norm


@torch.no_grad()
def scores(
    vectors: torch.Tensor,
    w_u: torch.Tensor,
    metric: str,
    norm: Callable | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """[n, vocab] float64 scores of each row against each token (see module docstring)."""
    if metric not in METRICS:
        raise ValueError(f"unknown logit-lens metric {metric!r}; one of {METRICS}")
    x = vectors.double()
    if norm is not None:
        x = norm(x).double()
    w = w_u.double()
    if metric == "cos":
        wn = w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return (x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)) @ wn.T
    logits = x @ w.T
    if bias is not None:
        logits = logits + bias.double()
    return logits if metric == "dot" else torch.softmax(logits, dim=-1)


def top_bottom(sc: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top values, top ids, bottom values, bottom ids), each [n, min(k, vocab)], of [n, vocab] scores:
    the k largest in decreasing and the k smallest in increasing order."""
    kk = min(k, sc.shape[1])
    top = sc.topk(kk, dim=1, largest=True)
    bot = sc.topk(kk, dim=1, largest=False)
    return top.values, top.indices, bot.values, bot.indices


def logit_lens(
    vectors: torch.Tensor,
    w_u: torch.Tensor,
    tokens: Sequence[str],
    *,
    k: int = 50,
    labels: Sequence | None = None,
    metrics: Sequence[str] = METRICS,
    norm: Callable | None = None,
    bias: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Top/bottom-k tokens of each row. With `norm`, every metric is computed both without (normed=False)
    and with the final norm (normed=True). `tokens[i]` is token i's text (decoded, for display).

    Columns: layer (row label), normed, metric, end ("top" | "bottom"), rank (0 = most extreme), token_id,
    token, value."""
    n = vectors.shape[0]
    labels = list(range(n)) if labels is None else list(labels)
    if len(tokens) < w_u.shape[0]:
        raise ValueError(f"{len(tokens)} token strings for an unembedding of {w_u.shape[0]} rows")
    rows = []
    for normed in [False, True] if norm is not None else [False]:
        for metric in metrics:
            tv, ti, bv, bi = top_bottom(scores(vectors, w_u, metric, norm if normed else None, bias), k)
            for end, val, idx in (("top", tv, ti), ("bottom", bv, bi)):
                for r in range(n):
                    for rank in range(idx.shape[1]):
                        t = int(idx[r, rank])
                        rows.append((labels[r], normed, metric, end, rank, t, tokens[t], float(val[r, rank])))
    return pd.DataFrame(rows, columns=["layer", "normed", "metric", "end", "rank", "token_id", "token", "value"])


def unembedding_bias(
    mean_shift: torch.Tensor,
    w_u: torch.Tensor,
    tokens: Sequence[str],
    *,
    k: int = 50,
    sources: Sequence | None = None,
    norm: Callable | None = None,
) -> dict[str, pd.DataFrame]:
    """The effective unembedding bias u_l (row l of `mean_shift`, [n_sources, d]: the mean dF at the last
    block over all tokens and samples caused by s_l alone). Returns {"tokens": logit_lens of u_l (cos and
    dot), "cosine": cos(u_l, u_l') matrix, "norms": ||u_l||}."""
    labels = list(range(mean_shift.shape[0])) if sources is None else list(sources)
    return {
        "tokens": logit_lens(mean_shift, w_u, tokens, k=k, labels=labels, metrics=("cos", "dot"), norm=norm),
        "cosine": cosine_matrix(mean_shift, labels),
        "norms": pd.DataFrame({"source": labels, "norm": mean_shift.double().norm(dim=1).numpy()}),
    }
