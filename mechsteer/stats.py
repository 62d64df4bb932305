"""The statistics of `mechsteer diff` and of the report's effects, in one place (numpy and scipy only).

* `mcnemar_exact`: the exact McNemar test of two paired 0/1 outcome vectors (a two-sided binomial test on the
  discordant problems, `scipy.stats.binomtest`);
* `paired_bootstrap_ci`: a percentile bootstrap interval of mean(b - a), problems resampled with replacement
  (pairs kept), seeded numpy, so the same seed gives the same interval;
* `wilson_ci`: the Wilson score interval of a rate k / n (`scipy.stats.binomtest(...).proportion_ci`);
* `bootstrap_ci`: a percentile bootstrap interval of a mean (a rate whose per-problem scores are averages over
  seeds or samples, where the binomial model of the Wilson interval does not hold);
* `rate`: a rate with its interval (Wilson for one 0/1 outcome per problem, else the bootstrap);
* `paired`: everything one comparison of two conditions on shared problems reports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

LEVEL = 0.95
"""Confidence level of every interval."""
N_BOOT = 10_000
"""Bootstrap resamples."""


def is_binary(x: np.ndarray) -> bool:
    """Whether every value is exactly 0 or 1 (one graded outcome per problem)."""
    x = np.asarray(x, dtype=float)
    return bool(np.isin(x, (0.0, 1.0)).all())


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(problems right only in A, problems right only in B, exact two-sided McNemar p). `a`, `b`: 0/1 arrays of
    the same problems. No discordant problem -> p = 1."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_b, n, 0.5, alternative="two-sided").pvalue)
    return only_a, only_b, p


def _bootstrap_means(d: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of `n_boot` resamples of `d` (with replacement), drawn in bounded-memory chunks from one seeded
    generator (the same draws as one `rng.integers(0, n, size=(n_boot, n))` call when it fits one chunk)."""
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // d.size)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        means[start : start + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    return means


def bootstrap_ci(x: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(x): values resampled with replacement."""
    d = np.asarray(x, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(_bootstrap_means(d, n_boot, seed), [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b - a): problems resampled with replacement (the pairing kept)."""
    return bootstrap_ci(np.asarray(b, dtype=float) - np.asarray(a, dtype=float), n_boot=n_boot, seed=seed, level=level)


def wilson_ci(k: int, n: int, *, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of the rate k / n (NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def rate(
    x: np.ndarray, *, binary: bool | None = None, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float, float, str]:
    """(mean, low, high, method) of per-problem scores: the Wilson interval when every score is one 0/1
    outcome, else the percentile bootstrap of the mean (averaged scores: avg@k, several seeds). `binary`:
    whether each score is one graded outcome (default: read from the values)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan, "-"
    if is_binary(x) and binary is not False:
        lo, hi = wilson_ci(int(x.sum()), x.size, level=level)
        return float(x.mean()), lo, hi, "wilson"
    lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed, level=level)
    return float(x.mean()), lo, hi, "bootstrap"


@dataclass(frozen=True)
class Paired:
    """One comparison of B with A on the problems both answered."""

    n_shared: int
    acc_a: float
    acc_b: float
    delta: float
    """mean(b - a)."""
    ci_low: float
    ci_high: float
    right_only_a: int | None
    right_only_b: int | None
    p_mcnemar: float | None
    """None unless both sides hold one 0/1 outcome per problem."""

    def as_dict(self) -> dict:
        """The comparison as a plain dict (a row of `diff`'s tables and JSON)."""
        return asdict(self)


def paired(a: np.ndarray, b: np.ndarray, *, binary: bool | None = None, n_boot: int = N_BOOT, seed: int = 0) -> Paired:
    """Difference, paired bootstrap interval and (for 0/1 outcomes) exact McNemar test of aligned per-problem
    scores `a`, `b`. `binary`: whether both are single 0/1 outcomes (default: read from the values)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    lo, hi = paired_bootstrap_ci(a, b, n_boot=n_boot, seed=seed)
    binary = (is_binary(a) and is_binary(b)) if binary is None else binary
    only_a, only_b, p = mcnemar_exact(a, b) if binary else (None, None, None)
    return Paired(
        n_shared=int(a.size),
        acc_a=float(a.mean()) if a.size else math.nan,
        acc_b=float(b.mean()) if b.size else math.nan,
        delta=float((b - a).mean()) if a.size else math.nan,
        ci_low=lo,
        ci_high=hi,
        right_only_a=only_a,
        right_only_b=only_b,
        p_mcnemar=p,
    )


__all__ = [
    "LEVEL",
    "N_BOOT",
    "Paired",
    "bootstrap_ci",
    "is_binary",
    "mcnemar_exact",
    "paired",
    "paired_bootstrap_ci",
    "rate",
    "wilson_ci",
]
