"""Bootstrap intervals, the paired sign-flip test and reducers, on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llamabatch.report import stats


def test_mean_ci_of_constant_values_is_a_point() -> None:
    est = stats.mean_ci([0.5] * 10)
    assert (est.value, est.low, est.high, est.n) == (0.5, 0.5, 0.5, 10)


def test_mean_ci_is_empty_without_data_and_ignores_nan() -> None:
    assert math.isnan(stats.mean_ci([]).value)
    assert stats.mean_ci([1.0, math.nan, 3.0]).value == 2.0


def test_mean_ci_covers_the_normal_theory_interval() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=400)
    est = stats.mean_ci(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    # The percentile bootstrap of a mean agrees with mean ± 1.96 s/√n to within a few percent.
    assert est.low == pytest.approx(x.mean() - half, rel=0.01)
    assert est.high == pytest.approx(x.mean() + half, rel=0.01)
    assert est.low < 10.0 < est.high


def test_mean_ci_is_deterministic() -> None:
    x = [0, 1, 1, 0, 1, 1, 1, 0]
    assert stats.mean_ci(x) == stats.mean_ci(x)


def test_sign_flip_exact_p_values() -> None:
    # Five wins and no losses: only all-plus and all-minus are as extreme, 2 of 32.
    assert stats.sign_flip_p([1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    # Ties carry no information: they are dropped.
    assert stats.sign_flip_p([1, 1, 1, 1, 1, 0, 0]) == pytest.approx(2 / 32)
    assert stats.sign_flip_p([0, 0, 0]) == 1.0
    # One win, one loss of the same size: every assignment is as extreme.
    assert stats.sign_flip_p([1, -1]) == 1.0


def test_sign_flip_monte_carlo_detects_a_clear_shift() -> None:
    d = [1.0] * 30 + [-1.0] * 5
    p = stats.sign_flip_p(d)
    # The exact binomial two-sided p for 30 of 35 is about 1.1e-5.
    assert p < 0.001
    assert stats.sign_flip_p([1.0, -1.0] * 20) > 0.5


def test_sign_flip_for_many_pairs_agrees_with_monte_carlo() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.004, 0.1, 30_000)  # a small shift over many pairs
    normal = stats.sign_flip_p(d)
    assert 0.0 < normal < 0.05  # the normal approximation: large n, instant
    subset = stats.sign_flip_p(d[: stats.SIGN_FLIP_NORMAL_N])  # Monte Carlo at the edge
    z_subset = abs(d[: stats.SIGN_FLIP_NORMAL_N].sum()) / np.sqrt(
        (d[: stats.SIGN_FLIP_NORMAL_N] ** 2).sum()
    )
    assert subset == pytest.approx(math.erfc(z_subset / math.sqrt(2)), abs=0.01)
    assert stats.sign_flip_p(np.tile([1.0, -1.0], 15_000)) == pytest.approx(1.0)


def test_paired_diff_counts_and_direction() -> None:
    a = [1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    b = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    result = stats.paired_diff(a, b)
    assert (result.wins, result.ties, result.losses) == (0, 6, 14)
    assert result.diff.value == pytest.approx(-14 / 20)
    assert result.diff.high < 0 and result.significant()
    # Exact: 14 losses, no wins -> 2 / 2**14.
    assert result.p_value == pytest.approx(2 / 2**14)


def test_paired_diff_small_sample_is_not_significant() -> None:
    result = stats.paired_diff([1, 1, 1], [0, 0, 0])
    assert result.diff.value == -1.0
    assert result.p_value == pytest.approx(0.25) and not result.significant()


def test_paired_diff_drops_pairs_with_a_missing_side() -> None:
    result = stats.paired_diff([1, math.nan, 0], [1, 0, math.nan])
    assert result.diff.n == 1 and result.ties == 1


def test_quantile_ratio_of_scaled_values() -> None:
    a = np.linspace(1.0, 2.0, 50)
    est = stats.quantile_ratio(a, a * 1.5)
    assert est.value == pytest.approx(1.5)
    assert est.low == pytest.approx(1.5) and est.high == pytest.approx(1.5)
    noisy = stats.quantile_ratio(a, a[::-1] * 1.2, 0.9)
    assert noisy.low <= noisy.value <= noisy.high


@pytest.mark.parametrize(("how", "expected"), [("mean", 0.5), ("majority", 0.0), ("pass@k", 1.0)])
def test_reducers(how: str, expected: float) -> None:
    assert stats.reduce_samples([1, 0, 1, 0], how, 0.5) == expected


def test_majority_needs_more_than_half() -> None:
    assert stats.reduce_samples([1, 1, 0], "majority", 0.5) == 1.0
    assert math.isnan(stats.reduce_samples([], "mean", 0.5))
    with pytest.raises(ValueError, match="unknown reducer"):
        stats.reduce_samples([1], "median", 0.5)


def test_pass_at_k_unbiased_estimator() -> None:
    assert stats.pass_at_k(10, 0, 1) == 0.0
    assert stats.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert stats.pass_at_k(5, 1, 5) == 1.0
    assert stats.pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
