"""Statistics for reports and compare: bootstrap intervals, paired tests, reducers.

Everything is seeded, so the same results give the same report. Intervals are
percentile bootstraps over prompts (the unit that was sampled); above
`NORMAL_APPROX_N` values the mean's interval uses the normal approximation,
and above `SIGN_FLIP_NORMAL_N` differences so does the sign-flip test's p-value:
as good there, and it costs nothing (a report over a million rows took minutes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

CONFIDENCE: Final = 0.95
BOOTSTRAP_RESAMPLES: Final = 2000
PERMUTATIONS: Final = 20000
EXACT_PERMUTATION_MAX_N: Final = 16
NORMAL_APPROX_N: Final = 20000
# Random signs over this many differences: their sum is normal to well within the
# Monte Carlo's own error (the distribution is symmetric), and instant.
SIGN_FLIP_NORMAL_N: Final = 2000
RATIO_SUBSAMPLE_N: Final = 5000
SEED: Final = 20240917
_Z95: Final = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval (NaN when there is no data)."""

    value: float
    low: float
    high: float
    n: int

    def excludes(self, x: float) -> bool:
        return not math.isnan(self.low) and (self.low > x or self.high < x)


NO_ESTIMATE: Final = Estimate(math.nan, math.nan, math.nan, 0)


@dataclass(frozen=True)
class PairedDiff:
    """Mean of paired differences (b - a), its interval, a p-value and win/tie/loss counts."""

    diff: Estimate
    p_value: float
    wins: int
    ties: int
    losses: int

    def significant(self, alpha: float = 1 - CONFIDENCE) -> bool:
        return self.p_value < alpha


def as_array(values: Sequence[float] | Array) -> Array:
    arr = np.asarray(values, dtype=np.float64)
    return arr[~np.isnan(arr)]


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(SEED if seed is None else seed)


def _percentile_interval(samples: Array) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def mean_ci(values: Sequence[float] | Array, *, seed: int | None = None) -> Estimate:
    """The mean with a 95% percentile-bootstrap interval (normal approximation if huge)."""
    x = as_array(values)
    n = len(x)
    if n == 0:
        return NO_ESTIMATE
    mean = float(x.mean()) + 0.0  # no negative zero in reports
    if n == 1 or np.all(x == x[0]):
        return Estimate(mean, mean, mean, n)
    if n > NORMAL_APPROX_N:
        half = _Z95 * float(x.std(ddof=1)) / math.sqrt(n)
        return Estimate(mean, mean - half, mean + half, n)
    means = _bootstrap_means(x, _rng(seed))
    low, high = _percentile_interval(means)
    return Estimate(mean, low, high, n)


def _bootstrap_means(x: Array, rng: np.random.Generator) -> Array:
    n = len(x)
    # Chunks keep the index matrix small for large n.
    chunk = max(1, 2_000_000 // n)
    out = []
    for start in range(0, BOOTSTRAP_RESAMPLES, chunk):
        size = min(chunk, BOOTSTRAP_RESAMPLES - start)
        out.append(x[rng.integers(0, n, size=(size, n))].mean(axis=1))
    return np.concatenate(out)


def paired_diff(
    a: Sequence[float] | Array, b: Sequence[float] | Array, *, seed: int | None = None
) -> PairedDiff:
    """Compare paired scores: mean of b - a with its interval and a sign-flip test p-value.

    Pairs where either value is missing are dropped. The p-value is two-sided
    and exact (all sign assignments) for up to 16 non-zero differences, Monte
    Carlo above that, and from the normal approximation above `SIGN_FLIP_NORMAL_N`.
    """
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(xa) | np.isnan(xb))
    d = xb[keep] - xa[keep]
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    ties = len(d) - wins - losses
    return PairedDiff(
        diff=mean_ci(d, seed=seed),
        p_value=sign_flip_p(d, seed=seed),
        wins=wins,
        ties=ties,
        losses=losses,
    )


def sign_flip_p(diffs: Sequence[float] | Array, *, seed: int | None = None) -> float:
    """Two-sided p-value of a paired sign-flip permutation test of mean difference 0."""
    d = as_array(diffs)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    observed = abs(float(d.sum())) - 1e-12 * max(1.0, float(np.abs(d).sum()))
    if n <= EXACT_PERMUTATION_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        sums = np.abs(signs @ d)
        return float((sums >= observed).mean())
    if n > SIGN_FLIP_NORMAL_N:
        # Under random signs the sum has mean 0 and variance sum(d**2); 20,000 sign draws
        # over hundreds of thousands of pairs took minutes.
        z = abs(float(d.sum())) / math.sqrt(float((d * d).sum()))
        return math.erfc(z / math.sqrt(2))
    rng = _rng(seed)
    hits = 0
    chunk = max(1, 2_000_000 // n)
    for start in range(0, PERMUTATIONS, chunk):
        size = min(chunk, PERMUTATIONS - start)
        signs = rng.choice((-1.0, 1.0), size=(size, n))
        hits += int((np.abs(signs @ d) >= observed).sum())
    return (hits + 1) / (PERMUTATIONS + 1)


def quantile_ratio(
    a: Sequence[float] | Array,
    b: Sequence[float] | Array,
    q: float = 0.5,
    *,
    seed: int | None = None,
) -> Estimate:
    """quantile(b) / quantile(a) over paired values, with a paired bootstrap interval.

    Above `RATIO_SUBSAMPLE_N` pairs the interval is bootstrapped from a random
    subsample of that size (the point estimate always uses every pair).
    """
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(xa) | np.isnan(xb))
    xa, xb = xa[keep], xb[keep]
    n = len(xa)
    if n == 0:
        return NO_ESTIMATE
    qa, qb = float(np.quantile(xa, q)), float(np.quantile(xb, q))
    value = qb / qa if qa > 0 else math.nan
    if n == 1 or math.isnan(value):
        return Estimate(value, value, value, n)
    rng = _rng(seed)
    if n > RATIO_SUBSAMPLE_N:
        pick = rng.choice(n, RATIO_SUBSAMPLE_N, replace=False)
        xa, xb = xa[pick], xb[pick]
    samples = _bootstrap_ratios(xa, xb, q, rng)
    if len(samples) == 0:
        return Estimate(value, math.nan, math.nan, n)
    low, high = _percentile_interval(samples)
    return Estimate(value, low, high, n)


def _bootstrap_ratios(xa: Array, xb: Array, q: float, rng: np.random.Generator) -> Array:
    m = len(xa)
    ratios = []
    chunk = max(1, 1_000_000 // m)
    for start in range(0, BOOTSTRAP_RESAMPLES, chunk):
        size = min(chunk, BOOTSTRAP_RESAMPLES - start)
        idx = rng.integers(0, m, size=(size, m))
        den = np.quantile(xa[idx], q, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.quantile(xb[idx], q, axis=1) / den)
    samples = np.concatenate(ratios)
    finite: Array = samples[np.isfinite(samples)]
    return finite


# Per-prompt reducers over the samples of one (model, prompt) when repeats > 1.


def reduce_samples(scores: Sequence[float] | Array, how: str, pass_threshold: float) -> float:
    """One score for a prompt from its samples: their mean, a majority vote, or pass@k."""
    x = as_array(scores)
    if len(x) == 0:
        return math.nan
    if how == "mean":
        return float(x.mean())
    passed = int((x >= pass_threshold).sum())
    if how == "majority":
        return 1.0 if passed * 2 > len(x) else 0.0
    if how == "pass@k":
        return 1.0 if passed else 0.0
    raise ValueError(f"unknown reducer {how!r}; use one of mean, majority, pass@k")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
