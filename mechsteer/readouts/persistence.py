"""`persistence`: how a single-layer steering vector propagates (paper section 4.3).

For a vector s_l injected after block l, dF_{j,t} = h_j(s_l) - h_j(0) is the shift of the residual stream
after block j at token t (zero for j < l by causality, exactly s_l at j = l). Per (source l, target j):
  DV[l,j]   = mean_t cos(dF_{j,t}, s_j)                    Diff-Vector (s_j: the vector trained for layer j)
  DD[l,j]   = mean_t cos(dF_{j,t}, mu)                     Diff-Diff, with mu one of (`diff_diff_mean`):
              `sample`:  mu = mean_t' dF_{j,t'} of the same sample (the authors' code: consistency within
                         one sample; the column `dd_sample`)
              `dataset`: mu = E_x[dF_j], the mean over every token of every sample (the paper's Figure 2
                         caption; the column `dd_dataset`)
  LM[l,j]   = cos(sum_{samples,t} dF_{j,t} / N_tokens, s_j)  layer-mean
  self[l,j] = mean_t cos(dF_{j,t}, s_l)                    self-alignment of the propagating source vector
"mean_t" averages over a sample's real tokens, then the per-sample values are averaged over samples (as the
paper does). Both Diff-Diff variants are always computed (`dd` is the chosen one). The dataset mean is known
only at the end, so the dataset variant streams sum_samples mean_{t in sample} dF_t / |dF_t| (the unit vectors)
and takes its dot product with the unit dataset mean when finalizing: mean_t cos(x_t, mu) = (mean_t x_t/|x_t|) .
mu/|mu|, exactly. A cosine with a zero vector is undefined: positions where dF (or the reference) is exactly 0 are
left out of the means, and a (l, j) with no such position (all j < l) gives NaN.

`PersistenceAccumulator` streams: the engine calls `update(source, target, dF, mask)` per forward chunk
(dF = captured resid_post under s_l minus the base pass's, [batch, T, d]) and `finalize()` at the end. State
is O(sources x targets x d) whatever the number of tokens. `mean_shift(l, L-1)` is the effective
unembedding bias u_l of the logit lens. Pure torch; no hooks, no model calls.
"""

from __future__ import annotations

import pandas as pd
import torch

METRICS = ("dv", "dd", "lm", "self_cos")
DIFF_DIFF_MEANS = ("sample", "dataset")
EXTRA = ("dd_sample", "dd_dataset")
"""Both Diff-Diff variants, whatever `dd` is."""


def _cos(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """cos along the last dim, float64; NaN where either side is exactly zero."""
    nx, nr = x.norm(dim=-1), ref.norm(dim=-1)
    c = (x * ref).sum(-1) / (nx * nr)
    return torch.where((nx > 0) & (nr > 0), c, torch.full_like(c, float("nan")))


def _nanmean(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if bool(ok.any()) else float("nan")


class PersistenceAccumulator:
    """Streaming DV / DD / LM / self-alignment over (source, target) pairs.

    `vectors`: [n_layers, d] stack of the single-layer vectors; row j is s_j for DV/LM at target j and row
    l is s_l for the self-alignment (a row of zeros, e.g. a layer without a trained vector, gives NaN)."""

    def __init__(self, vectors: torch.Tensor, diff_diff_mean: str = "sample"):
        if diff_diff_mean not in DIFF_DIFF_MEANS:
            raise ValueError(f"diff_diff_mean must be one of {DIFF_DIFF_MEANS}, got {diff_diff_mean!r}")
        self.vectors = vectors.detach().double().cpu()
        self.diff_diff_mean = diff_diff_mean
        self._per_sample: dict[tuple[int, int], dict[str, list[float]]] = {}
        self._sum: dict[tuple[int, int], torch.Tensor] = {}
        self._n_tokens: dict[tuple[int, int], int] = {}
        self._norm_sum: dict[tuple[int, int], float] = {}
        self._unit_sum: dict[tuple[int, int], torch.Tensor] = {}
        """Sum over samples of the sample's mean unit shift (tokens with dF = 0 left out)."""
        self._unit_samples: dict[tuple[int, int], int] = {}

    def update(self, source: int, target: int, dF: torch.Tensor, mask: torch.Tensor) -> None:
        """dF [batch, T, d] (steered minus base resid_post of block `target`), mask [batch, T] (real
        tokens to count; drop padding and, as the paper does, the last position if wanted)."""
        key = (int(source), int(target))
        d = dF.detach().double().cpu()
        m = mask.detach().bool().cpu()
        s_j, s_l = self.vectors[target], self.vectors[source]
        store = self._per_sample.setdefault(key, {k: [] for k in ("dv", "dd", "self_cos")})
        for r in range(d.shape[0]):
            x = d[r][m[r]]  # [n_tok, d]
            if x.shape[0] == 0:
                continue
            store["dv"].append(_nanmean(_cos(x, s_j.expand_as(x))))
            store["self_cos"].append(_nanmean(_cos(x, s_l.expand_as(x))))
            mu = x.mean(dim=0)
            store["dd"].append(_nanmean(_cos(x, mu.expand_as(x))))
            norms = x.norm(dim=-1)
            nz = norms > 0
            if bool(nz.any()):
                unit = (x[nz] / norms[nz].unsqueeze(-1)).mean(dim=0)
                self._unit_sum[key] = self._unit_sum.get(key, torch.zeros_like(unit)) + unit
                self._unit_samples[key] = self._unit_samples.get(key, 0) + 1
        x = d[m]
        self._sum[key] = self._sum.get(key, torch.zeros(d.shape[-1], dtype=torch.float64)) + x.sum(dim=0)
        self._n_tokens[key] = self._n_tokens.get(key, 0) + x.shape[0]
        self._norm_sum[key] = self._norm_sum.get(key, 0.0) + float(x.norm(dim=-1).sum())

    def mean_shift(self, source: int, target: int) -> torch.Tensor:
        """sum dF / N_tokens at (source, target), float64 [d] (u_l for target = last block)."""
        key = (int(source), int(target))
        return self._sum[key] / self._n_tokens[key]

    def dd_dataset(self, source: int, target: int) -> float:
        """Diff-Diff against the dataset mean E_x[dF] (see the module docstring); NaN where undefined."""
        key = (int(source), int(target))
        if not self._unit_samples.get(key):
            return float("nan")
        mean = self.mean_shift(source, target)
        norm = float(mean.norm())
        if norm == 0.0:
            return float("nan")
        return float((self._unit_sum[key] / self._unit_samples[key]) @ mean) / norm

    def finalize(self) -> pd.DataFrame:
        """Long DataFrame: source, target, dv, dd (the `diff_diff_mean` variant), lm, self_cos, dd_sample,
        dd_dataset, n_samples, n_tokens, mean_norm (mean ||dF_t||), ordered by (source, target)."""
        rows = []
        for key in sorted(self._sum):
            src, tgt = key
            ps = self._per_sample[key]
            mean = self.mean_shift(src, tgt)
            n = self._n_tokens[key]
            dd = {
                "sample": _nanmean(torch.tensor(ps["dd"], dtype=torch.float64)),
                "dataset": self.dd_dataset(src, tgt),
            }
            rows.append(
                {
                    "source": src,
                    "target": tgt,
                    "dv": _nanmean(torch.tensor(ps["dv"], dtype=torch.float64)),
                    "dd": dd[self.diff_diff_mean],
                    "lm": float(_cos(mean, self.vectors[tgt])),
                    "self_cos": _nanmean(torch.tensor(ps["self_cos"], dtype=torch.float64)),
                    "dd_sample": dd["sample"],
                    "dd_dataset": dd["dataset"],
                    "n_samples": len(ps["dv"]),
                    "n_tokens": n,
                    "mean_norm": self._norm_sum[key] / n if n else float("nan"),
                }
            )
        return pd.DataFrame(rows, columns=["source", "target", *METRICS, *EXTRA, "n_samples", "n_tokens", "mean_norm"])


def matrix(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(source x target) matrix of one metric from `finalize()`'s table, for heat-maps."""
    if metric not in (*METRICS, *EXTRA, "mean_norm"):
        raise ValueError(f"unknown persistence metric {metric!r}; one of {METRICS + EXTRA + ('mean_norm',)}")
    return table.pivot(index="source", columns="target", values=metric)
