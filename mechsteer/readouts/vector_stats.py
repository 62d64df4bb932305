"""`vector_stats`: statistics of a stack of steering vectors (paper section 4.4, item 3): norms per layer, the
pairwise cosine matrix, singular values and stable rank sum(s^2)/s_1^2, and the per-layer alignment of two
stacks (two seeds, or two vector sets). Pure functions: tensors in, DataFrames out, float64 arithmetic."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch


def _labels(n: int, labels: Sequence | None) -> list:
    labels = list(range(n)) if labels is None else list(labels)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} rows")
    return labels


def norms(vectors: torch.Tensor, labels: Sequence | None = None) -> pd.DataFrame:
    """DataFrame (layer, norm) of each row's L2 norm."""
    v = vectors.double()
    return pd.DataFrame({"layer": _labels(v.shape[0], labels), "norm": v.norm(dim=1).numpy()})


def cosine_matrix(vectors: torch.Tensor, labels: Sequence | None = None) -> pd.DataFrame:
    """Square DataFrame of cos(row_i, row_j); NaN where a row is exactly zero (cosine undefined)."""
    v = vectors.double()
    n = v.norm(dim=1, keepdim=True)
    u = torch.where(n > 0, v / n.clamp_min(1e-300), torch.full_like(v, float("nan")))
    lab = _labels(v.shape[0], labels)
    return pd.DataFrame((u @ u.T).numpy(), index=pd.Index(lab, name="layer"), columns=lab)


def singular_values(vectors: torch.Tensor) -> pd.DataFrame:
    """DataFrame (index, sigma, explained): singular values of the [n, d] stack, largest first, and each
    one's share of sum(sigma^2)."""
    s = torch.linalg.svdvals(vectors.double())
    e = s * s
    return pd.DataFrame({"index": range(s.numel()), "sigma": s.numpy(), "explained": (e / e.sum()).numpy()})


def stable_rank(vectors: torch.Tensor) -> float:
    """sum(sigma^2) / sigma_1^2 = ||V||_F^2 / ||V||_2^2 (1 for a rank-1 stack, n for n orthogonal rows of
    equal norm); NaN for an all-zero stack."""
    s = torch.linalg.svdvals(vectors.double())
    if float(s[0]) == 0.0:
        return float("nan")
    return float((s * s).sum() / (s[0] * s[0]))


def alignment(a: torch.Tensor, b: torch.Tensor, labels: Sequence | None = None) -> pd.DataFrame:
    """Per-row comparison of two stacks of the same shape (two seeds, two vector sets): DataFrame
    (layer, cos, norm_a, norm_b, norm_ratio = norm_b / norm_a); cos NaN where either row is zero."""
    if a.shape != b.shape:
        raise ValueError(f"alignment needs stacks of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a * b).sum(dim=1) / (na * nb)
    cos = torch.where((na > 0) & (nb > 0), cos, torch.full_like(cos, float("nan")))
    return pd.DataFrame(
        {
            "layer": _labels(a.shape[0], labels),
            "cos": cos.numpy(),
            "norm_a": na.numpy(),
            "norm_b": nb.numpy(),
            "norm_ratio": (nb / na).numpy(),
        }
    )


def vector_stats(vectors: torch.Tensor, labels: Sequence | None = None) -> dict[str, pd.DataFrame]:
    """Every statistic of one stack: {"norms", "cosine", "singular_values", "summary"} (summary: one row with
    n_rows, stable_rank, mean_norm, mean off-diagonal cosine)."""
    cos = cosine_matrix(vectors, labels)
    c = cos.to_numpy()
    n = c.shape[0]
    off = c[~torch.eye(n, dtype=torch.bool).numpy()] if n > 1 else c[:0].ravel()
    nr = norms(vectors, labels)
    summary = pd.DataFrame(
        [
            {
                "n_rows": n,
                "stable_rank": stable_rank(vectors),
                "mean_norm": nr["norm"].mean(),
                "mean_offdiag_cos": float(pd.Series(off).mean()) if off.size else float("nan"),
            }
        ]
    )
    return {"norms": nr, "cosine": cos, "singular_values": singular_values(vectors), "summary": summary}
