"""`mechsteer.stats` against independent computations: the exact McNemar p from the binomial distribution summed
by hand (and scipy's binomtest), the Wilson interval from its closed form, the bootstrap intervals from one
direct numpy resampling with the same seed."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import binomtest

from mechsteer import stats

EPS = np.finfo(np.float64).eps


def _outcomes(seed: int, n: int, p_a: float, p_b: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < p_a).astype(float), (rng.random(n) < p_b).astype(float)


def _mcnemar_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact test of b ~ Binomial(b + c, 1/2) on the discordant pairs: twice the smaller tail."""
    only_a = int(sum(1 for x, y in zip(a, b, strict=True) if x == 1 and y == 0))
    only_b = int(sum(1 for x, y in zip(a, b, strict=True) if x == 0 and y == 1))
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("seed, p_a, p_b", [(0, 0.3, 0.7), (1, 0.5, 0.5), (2, 0.4, 0.45), (3, 0.1, 0.9)])
def test_mcnemar_equals_the_binomial_test_on_the_discordant_pairs(seed, p_a, p_b):
    a, b = _outcomes(seed, 64, p_a, p_b)
    only_a, only_b, p = stats.mcnemar_exact(a, b)
    assert (only_a, only_b) == (int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum()))
    assert p == pytest.approx(_mcnemar_by_hand(a, b), rel=64 * EPS)
    assert p == pytest.approx(binomtest(only_b, only_a + only_b, 0.5).pvalue, rel=64 * EPS)


def test_mcnemar_without_discordant_pairs_is_one():
    a = np.array([1.0, 0.0, 1.0])
    assert stats.mcnemar_exact(a, a) == (0, 0, 1.0)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (23, 64), (64, 64), (500, 1000)])
def test_wilson_interval_equals_its_closed_form(k, n):
    z = NormalDist().inv_cdf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = stats.wilson_ci(k, n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=16 * EPS)
    assert lo <= p <= hi


@pytest.mark.parametrize("n, n_boot", [(40, 3000), (1500, 2500)])  # the second draws in two chunks
def test_bootstrap_intervals_equal_a_direct_resampling(n, n_boot):
    a, b = _outcomes(7, n, 0.4, 0.6)
    d = b - a
    rng = np.random.default_rng(11)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    expected = np.quantile(means, [0.025, 0.975])
    assert stats.paired_bootstrap_ci(a, b, n_boot=n_boot, seed=11) == pytest.approx(tuple(expected), abs=4 * EPS)
    assert stats.bootstrap_ci(d, n_boot=n_boot, seed=11) == pytest.approx(tuple(expected), abs=4 * EPS)
    other = stats.paired_bootstrap_ci(a, b, n_boot=n_boot, seed=12)
    assert other != pytest.approx(tuple(expected), abs=4 * EPS)  # the seed matters


def test_rate_uses_wilson_for_single_outcomes_and_the_bootstrap_for_averages():
    x = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    assert stats.rate(x) == (0.5, *stats.wilson_ci(4, 8), "wilson")
    averaged = np.array([1.0, 0.5, 0.0, 0.5, 1.0, 0.0, 0.5, 0.5])
    assert stats.rate(averaged, seed=3) == (0.5, *stats.bootstrap_ci(averaged, seed=3), "bootstrap")
    # 0/1 scores that are means over several outcomes are not binomial: the bootstrap
    assert stats.rate(x, binary=False, seed=3)[3] == "bootstrap"


def test_paired_gives_mcnemar_only_for_single_outcomes():
    a, b = _outcomes(5, 50, 0.3, 0.6)
    p = stats.paired(a, b, seed=2, n_boot=2000)
    assert p.delta == pytest.approx(float((b - a).mean()))
    assert p.p_mcnemar == pytest.approx(binomtest(p.right_only_b, p.right_only_a + p.right_only_b).pvalue)
    assert (p.ci_low, p.ci_high) == stats.paired_bootstrap_ci(a, b, seed=2, n_boot=2000)
    assert stats.paired(a, b, binary=False).p_mcnemar is None
    assert stats.paired(a, (a + b) / 2).right_only_a is None
