"""`token_shift`: how one condition changes next-token distributions against a reference condition on the
same teacher-forced sequences (paper sections 4.5 and 4.6, Figures 3 and 6).

Per analysed position (p = softmax(logits), float64):
  dp = p_other - p_ref; the most boosted token argmax dp and the most suppressed argmin dp with their dp;
  the reference and other argmax; both entropies (nats); KL(P_ref || P_other) (nats); dp of tracked tokens;
  whether the boosted token is the reference argmax ("reinforces the top token").
`gen_pos` says which positions to analyse and their index among generated tokens (0 = the distribution of
the first generated token, i.e. the last prompt position); the position-0 vs later split is the paper's
"First"/"Other". Work is done in slices of positions so a 150k vocabulary in float64 stays bounded.

`summarize` groups the per-position table (by boosted token, by position group); `html_samples` turns
samples into coloured-token rows for `mechsteer.sequences.html.render_tokens`.
Pure: logits in, DataFrames/HTML out.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from mechsteer.sequences.html import TokenRow

COLUMNS = [
    "sample",
    "pos",
    "group",
    "boosted_id",
    "boosted",
    "boosted_dp",
    "suppressed_id",
    "suppressed",
    "suppressed_dp",
    "ref_top_id",
    "ref_top",
    "other_top_id",
    "other_top",
    "ref_entropy",
    "other_entropy",
    "kl",
    "reinforces_top",
]


def generated_positions(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """[b, T] index of the generated token each position predicts (0 = first generated token, predicted at
    the last prompt position), -1 for padding, earlier prompt positions and the last real position (whose
    next token is not in the sequence). Works with left and right padding."""
    m = attention_mask.long()
    idx = m.cumsum(dim=1) - 1
    plen = torch.as_tensor(prompt_lengths, device=m.device).long().unsqueeze(1)
    total = m.sum(dim=1, keepdim=True)
    g = idx - (plen - 1)
    ok = m.bool() & (g >= 0) & (idx < total - 1)
    return torch.where(ok, g, torch.full_like(g, -1))


def kl_divergence(logp_ref: torch.Tensor, logp_other: torch.Tensor) -> torch.Tensor:
    """KL(P_ref || P_other) = sum_v p_ref (log p_ref - log p_other) over the last dim, float64; terms with
    p_ref = 0 count 0."""
    a, b = logp_ref.double(), logp_other.double()
    p = a.exp()
    terms = torch.where(p > 0, p * (a - b), torch.zeros_like(p))
    return terms.sum(-1)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy (nats, float64) of each distribution over the last dim; zero-probability terms count 0."""
    lp = logp.double()
    p = lp.exp()
    return -torch.where(p > 0, p * lp, torch.zeros_like(p)).sum(-1)


def token_shift(
    ref_logits: torch.Tensor,
    other_logits: torch.Tensor,
    gen_pos: torch.Tensor,
    tokens: Sequence[str],
    *,
    track: dict[str, int] | None = None,
    categories: dict[str, Sequence[int]] | None = None,
    sample_ids: Sequence | None = None,
    temperature: float = 1.0,
    slice_size: int = 256,
) -> pd.DataFrame:
    """One row per analysed position (gen_pos >= 0) of a [b, T, V] pair of logits. Columns: COLUMNS plus
    `dp[<name>]` per tracked token (name -> token id), and per category (name -> token ids) `mass[<name>]` (the
    sum of dp over its tokens), `boosted_in[<name>]` and `ref_top_in[<name>]` (whether the most boosted token
    and the reference's argmax belong to it). `tokens[i]`: token i's text."""
    if ref_logits.shape != other_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(ref_logits.shape)} vs {tuple(other_logits.shape)}")
    track = dict(track or {})
    cats = {name: torch.as_tensor(list(ids), dtype=torch.long) for name, ids in (categories or {}).items()}
    member = {}
    for name, ids in cats.items():
        m = torch.zeros(ref_logits.shape[-1], dtype=torch.bool)
        m[ids] = True
        member[name] = m
    b = ref_logits.shape[0]
    sample_ids = list(range(b)) if sample_ids is None else list(sample_ids)
    out: dict[str, list] = {c: [] for c in COLUMNS}
    for name in track:
        out[f"dp[{name}]"] = []
    for name in cats:
        out[f"mass[{name}]"], out[f"boosted_in[{name}]"], out[f"ref_top_in[{name}]"] = [], [], []
    for r in range(b):
        where = torch.nonzero(gen_pos[r] >= 0).flatten()
        for start in range(0, where.numel(), slice_size):
            cols = where[start : start + slice_size]
            lr = torch.log_softmax(ref_logits[r, cols].double() / temperature, dim=-1)
            lo = torch.log_softmax(other_logits[r, cols].double() / temperature, dim=-1)
            dp = lo.exp() - lr.exp()
            bv, bi = dp.max(dim=-1)
            sv, si = dp.min(dim=-1)
            rt, ot = lr.argmax(-1), lo.argmax(-1)
            n = cols.numel()
            out["sample"] += [sample_ids[r]] * n
            pos = gen_pos[r, cols].tolist()
            out["pos"] += pos
            out["group"] += ["first" if p == 0 else "other" for p in pos]
            for key, ids, vals in (("boosted", bi, bv), ("suppressed", si, sv)):
                out[f"{key}_id"] += ids.tolist()
                out[key] += [tokens[i] for i in ids.tolist()]
                out[f"{key}_dp"] += vals.tolist()
            for key, ids in (("ref_top", rt), ("other_top", ot)):
                out[f"{key}_id"] += ids.tolist()
                out[key] += [tokens[i] for i in ids.tolist()]
            out["ref_entropy"] += entropy(lr).tolist()
            out["other_entropy"] += entropy(lo).tolist()
            out["kl"] += kl_divergence(lr, lo).tolist()
            out["reinforces_top"] += (bi == rt).tolist()
            for name, tid in track.items():
                out[f"dp[{name}]"] += dp[:, tid].tolist()
            for name, ids in cats.items():
                out[f"mass[{name}]"] += dp[:, ids].sum(-1).tolist()
                out[f"boosted_in[{name}]"] += member[name][bi.cpu()].tolist()
                out[f"ref_top_in[{name}]"] += member[name][rt.cpu()].tolist()
    return pd.DataFrame(out)


PER_POSITION_PREFIXES = ("dp[", "mass[", "boosted_in[", "ref_top_in[")
"""Columns of tracked tokens and categories, averaged per group and position by `summarize`."""


def summarize(table: pd.DataFrame, *, min_count: int = 2, top: int = 10) -> dict[str, pd.DataFrame]:
    """{"by_token": boosted tokens seen >= min_count times, the `top` by mean dp (count, mean/median/max dp,
    share of positions), "by_group": first vs other (n, mean KL, mean boosted dp, mean entropies, share that
    reinforces the top token, mean dp of tracked tokens), "by_position": the same per generated index}."""
    tracked = [c for c in table.columns if c.startswith(PER_POSITION_PREFIXES)]
    g = table.groupby("boosted")["boosted_dp"]
    by_token = pd.DataFrame({"count": g.size(), "mean_dp": g.mean(), "median_dp": g.median(), "max_dp": g.max()})
    by_token["share"] = by_token["count"] / max(len(table), 1)
    by_token = by_token[by_token["count"] >= min_count].sort_values("mean_dp", ascending=False).head(top)
    by_token = by_token.reset_index().rename(columns={"boosted": "token"})
    agg = {
        "n": ("kl", "size"),
        "kl": ("kl", "mean"),
        "boosted_dp": ("boosted_dp", "mean"),
        "ref_entropy": ("ref_entropy", "mean"),
        "other_entropy": ("other_entropy", "mean"),
        "reinforces_top": ("reinforces_top", "mean"),
    }
    agg.update({c: (c, "mean") for c in tracked})
    by_group = table.groupby("group").agg(**agg).reset_index()
    by_position = table.groupby("pos").agg(**agg).reset_index()
    return {"by_token": by_token, "by_group": by_group, "by_position": by_position}


def top_samples(table: pd.DataFrame, *, by: str = "kl", n: int = 5) -> list:
    """The `n` samples with the largest maximum of column `by` (the paper shows the top-5 by max KL)."""
    return table.groupby("sample")[by].max().sort_values(ascending=False).head(n).index.tolist()


def html_samples(
    table: pd.DataFrame, sequences: dict, prompt_lengths: dict, *, samples: Sequence | None = None, value: str = "kl"
) -> list[TokenRow]:
    """Rows for `mechsteer.sequences.html.render_tokens`: each chosen sample's tokens (`sequences[sample]`:
    the token strings of prompt + generation) with `value` of the position that predicted each generated
    token drawn on that token (generated token g sits at index prompt_length + g); prompt tokens are drawn
    plain. Default samples: `top_samples(table, by=value)`."""
    samples = top_samples(table, by=value) if samples is None else list(samples)
    out = []
    for s in samples:
        toks, plen = list(sequences[s]), int(prompt_lengths[s])
        vals: list = [None] * len(toks)
        notes: list = [None] * len(toks)
        for _, row in table[table["sample"] == s].iterrows():
            i = plen + int(row["pos"])
            if i < len(toks):
                vals[i] = float(row[value])
                notes[i] = f"ref top {row['ref_top']!r}, other top {row['other_top']!r}, boosted {row['boosted']!r}"
        drawn = [v for v in vals if v is not None]
        title = f"sample {s} (max {value} {max(drawn):.4g})" if drawn else f"sample {s}"
        out.append(TokenRow(title, toks, vals, notes))
    return out
