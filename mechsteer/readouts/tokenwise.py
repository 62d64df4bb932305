"""`tokenwise`: the token-wise magnitude of a rank-1 LoRA on down_proj (paper section 4.12, Appendix S).

The lora1 intervention adds alpha_t * B^ to the MLP output m_t of its layers and records, per forward call,
alpha_t, ||m_t|| and cos(m_t, B^) (`ctx.extras["lora1"][layer]`, [batch, T] float32). This module turns them
into tables:
* `segment_borders` finds the prompt's segments from the chat-templated token strings: system prompt, user
  role header, problem, assistant header, then the generation;
* `tokenwise_rows` gives one row per (sample, layer, position) with its segment;
* `normalise` divides alpha by the mean MLP-output norm of its layer (alpha_norm);
* `layer_summary`: per layer mean/median of sign-flipped alpha / mean ||m|| (the sign of B is arbitrary: the
  pair (-A, -B) is the same adapter, so alpha is flipped to a positive mean), and Pearson r of alpha_t
  vs cos(m_t, B^); `segment_summary`: the same per segment.
Pure: tensors and token strings in, DataFrames out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

SEGMENTS = ("system", "user_header", "problem", "assistant_header", "generation")


def _is_newline(tok: str) -> bool:
    return "\n" in tok or "\u010a" in tok  # "\u010a" = "Ċ", the byte-level BPE spelling of "\n"


CHAT_MARKERS = {
    "<|start_header_id|>": {"start": "<|start_header_id|>", "end": "<|eot_id|>", "header_end": "<|end_header_id|>"},
    "<start_of_turn>": {"start": "<start_of_turn>", "end": "<end_of_turn>"},
}
"""Turn markers of chat templates other than ChatML (the default of `segment_borders`): Llama 3, Gemma."""


def chat_markers(tokens: Sequence[str]) -> dict[str, str]:
    """`segment_borders`' marker arguments for a prompt's tokens: Llama 3's or Gemma's when the prompt holds their
    turn-start token, else ChatML's (the defaults)."""
    present = {t.strip(" ") for t in tokens}
    return next((markers for first, markers in CHAT_MARKERS.items() if first in present), {})


def segment_borders(
    tokens: Sequence[str],
    *,
    start: str = "<|im_start|>",
    end: str = "<|im_end|>",
    header_end: str | None = None,
    prompt_length: int | None = None,
) -> dict[str, int]:
    """Borders (token indices, each the first index of the next segment) of a chat-templated prompt:
    system_end (start of the user turn; 0 without a system turn), header_end (after the user role header),
    problem_end (the user turn's end marker), prompt_end (after the assistant header, or `prompt_length`).

    ChatML defaults (`<|im_start|>role\\n ... <|im_end|>`); a role header ends at its first newline token, or
    at `header_end` inclusive (Llama 3: start="<|start_header_id|>", end="<|eot_id|>",
    header_end="<|end_header_id|>"). The LAST user turn is the problem; an error names what is missing."""
    toks = [t.strip(" ") if t.strip(" ") in (start, end) else t for t in tokens]
    turns = []
    for i, t in enumerate(toks):
        if t != start:
            continue
        j = i + 1
        while j < len(toks) and not (toks[j] == header_end if header_end else _is_newline(toks[j])):
            if toks[j] in (start, end):
                break
            j += 1
        role = "".join(toks[i + 1 : j]).strip().lower()
        h_end = j + 1 if j < len(toks) and toks[j] not in (start, end) else j
        close = next((k for k in range(h_end, len(toks)) if toks[k] in (start, end)), len(toks))
        turns.append(
            {
                "start": i,
                "role": role,
                "header_end": h_end,
                "end": close if close < len(toks) and toks[close] == end else None,
            }
        )
    users = [t for t in turns if "user" in t["role"]]
    if not users:
        raise ValueError(f"no user turn found (looked for {start!r} followed by a role containing 'user')")
    user = users[-1]
    if user["end"] is None:
        raise ValueError(f"the user turn has no end marker {end!r}")
    after = [t for t in turns if t["start"] > user["start"]]
    if prompt_length is None:
        if not after:
            raise ValueError("no assistant header after the user turn; pass prompt_length")
        prompt_length = after[0]["header_end"]
    system = [t for t in turns if t["start"] < user["start"]]
    return {
        "system_end": user["start"] if system else 0,
        "header_end": user["header_end"],
        "problem_end": user["end"],
        "prompt_end": int(prompt_length),
    }


def segment_labels(n_tokens: int, borders: dict[str, int]) -> list[str]:
    """One of SEGMENTS per token index 0..n_tokens-1."""
    cuts = [borders["system_end"], borders["header_end"], borders["problem_end"], borders["prompt_end"]]
    return [SEGMENTS[sum(i >= c for c in cuts)] for i in range(n_tokens)]


def tokenwise_rows(
    layer: int,
    alpha: torch.Tensor,
    mlp_norm: torch.Tensor,
    cos: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    sample_ids: Sequence | None = None,
    segments: Sequence[Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Rows (sample, layer, pos, segment, alpha, mlp_norm, cos) for the real tokens of a [b, T] chunk;
    pos counts a sample's real tokens from 0 (left or right padding); `segments[r]` labels sample r's tokens
    by pos (from `segment_labels`), or "" when not given."""
    m = attention_mask.bool().cpu()
    b = m.shape[0]
    sample_ids = list(range(b)) if sample_ids is None else list(sample_ids)
    parts = []
    for r in range(b):
        sel = m[r]
        n = int(sel.sum())
        seg = list(segments[r][:n]) if segments is not None else [""] * n
        if len(seg) != n:
            raise ValueError(f"sample {sample_ids[r]}: {len(seg)} segment labels for {n} tokens")
        parts.append(
            pd.DataFrame(
                {
                    "sample": [sample_ids[r]] * n,
                    "layer": layer,
                    "pos": range(n),
                    "segment": seg,
                    "alpha": alpha[r].cpu()[sel].double().numpy(),
                    "mlp_norm": mlp_norm[r].cpu()[sel].double().numpy(),
                    "cos": cos[r].cpu()[sel].double().numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def pearson(x, y) -> float:
    """Pearson correlation of two equal-length samples (float64); NaN if either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size != y.size or x.size < 2:
        raise ValueError(f"pearson needs two samples of one length >= 2, got {x.size} and {y.size}")
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / den) if den > 0 else float("nan")


def normalise(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with `sign` (+1/-1: the sign of the layer's mean alpha) and `alpha_norm` = sign * alpha /
    (mean ||m_t|| of the layer over all rows)."""
    out = rows.copy()
    g = out.groupby("layer")
    mean_alpha = g["alpha"].transform("mean")
    out["sign"] = np.where(mean_alpha < 0, -1.0, 1.0)
    out["alpha_norm"] = out["sign"] * out["alpha"] / g["mlp_norm"].transform("mean")
    return out


def layer_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per layer: n, mean_alpha, sign, mean_mlp_norm, mean/median of alpha_norm, mean |alpha_norm|, and
    pearson_r of alpha_t vs cos(m_t, B^)."""
    nr = normalise(rows)
    out = []
    for layer, g in nr.groupby("layer"):
        out.append(
            {
                "layer": layer,
                "n": len(g),
                "mean_alpha": g["alpha"].mean(),
                "sign": g["sign"].iloc[0],
                "mean_mlp_norm": g["mlp_norm"].mean(),
                "mean_alpha_norm": g["alpha_norm"].mean(),
                "median_alpha_norm": g["alpha_norm"].median(),
                "mean_abs_alpha_norm": g["alpha_norm"].abs().mean(),
                "pearson_r_alpha_cos": pearson(g["alpha"], g["cos"]) if len(g) > 1 else float("nan"),
            }
        )
    return pd.DataFrame(out)


def segment_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, segment): n, mean and median alpha_norm (sign-flipped, normalised by the layer's mean
    MLP-output norm), in SEGMENTS order."""
    nr = normalise(rows)
    g = nr.groupby(["layer", "segment"])["alpha_norm"]
    out = pd.DataFrame({"n": g.size(), "mean_alpha_norm": g.mean(), "median_alpha_norm": g.median()}).reset_index()
    order = {s: i for i, s in enumerate(SEGMENTS)}
    return out.sort_values(
        ["layer", "segment"], key=lambda c: c.map(order) if c.name == "segment" else c, ignore_index=True
    )


def alpha_matrix(rows: pd.DataFrame, sample, value: str = "alpha_norm") -> pd.DataFrame:
    """(layer x pos) matrix of one sample, for the paper's heat-map (borders from `segment_borders`)."""
    nr = normalise(rows) if value in ("alpha_norm", "sign") else rows
    return nr[nr["sample"] == sample].pivot(index="layer", columns="pos", values=value)
