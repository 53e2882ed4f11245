"""Rank correlations with exact permutation p-values, paired differences and seed counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from collegial.stats import paired_difference, rank_correlation, seeds_to_resolve


@pytest.mark.parametrize("n", [4, 5, 7, 9, 11])
def test_rank_correlations_agree_with_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    y[0] = y[1]  # a tie
    rho, p_rho = rank_correlation(x, y, "spearman")
    tau, p_tau = rank_correlation(x, y, "kendall")
    assert rho == pytest.approx(spearmanr(x, y).statistic)
    assert tau == pytest.approx(kendalltau(x, y).statistic)
    assert 0 < p_rho <= 1 and 0 < p_tau <= 1


def test_exact_permutation_p_values() -> None:
    # 5 points: only the identity and its reverse reach |rho| = 1, out of 5! orderings
    for kind in ("spearman", "kendall"):
        r, p = rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], kind)
        assert r == pytest.approx(1.0) and p == pytest.approx(2 / 120)
    # without ties, Kendall's exact two-sided p is scipy's exact one
    x, y = [1, 2, 3, 4, 5, 6, 7], [2, 1, 4, 3, 7, 5, 6]
    assert rank_correlation(x, y, "kendall")[1] == pytest.approx(kendalltau(x, y, method="exact").pvalue)


def test_constant_inputs_have_no_correlation() -> None:
    r, p = rank_correlation([1, 1, 1, 1], [1, 2, 3, 4])
    assert math.isnan(r) and math.isnan(p)


def test_paired_difference_and_seeds_to_resolve() -> None:
    d = paired_difference([8.0, 8.1, 7.9], [10.0, 10.5, 9.8])
    assert d["mean"] == pytest.approx(-2.1) and d["lo"] < d["mean"] < d["hi"] < 0
    assert d["sd"] == pytest.approx(np.std([-2.0, -2.4, -1.9], ddof=1))
    # t(0.975, 4) = 2.776: 2.776 * 0.2 / sqrt(5) = 0.248 < 0.25, and 4 seeds give 0.318
    assert seeds_to_resolve(0.2, 0.25) == 5
    assert seeds_to_resolve(10.0, 0.1, most=20) is None
