"""Confidence intervals for reported scores: bootstrap over cases, and over seeds where there are
seeds, so that a claim ("ahead", "behind") follows from an interval, never from two means.

The resampling is seeded, so a report regenerated from the same per-case files prints the same
interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000
LEVEL = 0.95
AHEAD, BEHIND, TIED = "ahead", "behind", "not distinguishable"


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        # a difference below half a thousandth would print as 0.000 (or -0.000): one more digit
        digits = 4 if 0 < abs(self.mean) < 0.0005 else 3
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    @property
    def verdict(self) -> str:
        """For a difference A - B: A is ahead, behind, or not distinguishable from B."""
        if self.low > 0:
            return AHEAD
        if self.high < 0:
            return BEHIND
        return TIED


def _resampled_means(scores: np.ndarray, cases: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of ``scores`` (seeds x cases) over the given case draws, seeds drawn afresh."""
    seeds = rng.integers(0, scores.shape[0], size=(len(cases), scores.shape[0]))
    # per resample: mean over drawn seeds of the mean over drawn cases
    per_seed_case_means = scores[:, cases].mean(axis=2)  # seeds x resamples
    return np.take_along_axis(per_seed_case_means.T, seeds, axis=1).mean(axis=1)


def _case_draws(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, count, size=(RESAMPLES, count))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    return float(low), float(high)


def mean_interval(scores: np.ndarray, seed: int = 0) -> Interval:
    """Mean of ``scores`` (cases, or seeds x cases) with a bootstrap interval over both."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    rng = np.random.default_rng(seed)
    means = _resampled_means(scores, _case_draws(scores.shape[1], rng), rng)
    return Interval(float(scores.mean()), *_percentiles(means))


def difference_interval(first: np.ndarray, second: np.ndarray, seed: int = 0) -> Interval:
    """``first`` - ``second`` (each seeds x cases, the same cases in the same order): cases are
    drawn once for both (paired), seeds independently (the runs of two arms are not paired)."""
    first, second = (np.atleast_2d(np.asarray(s, dtype=float)) for s in (first, second))
    if first.shape[1] != second.shape[1]:
        raise ValueError("both arms must be scored on the same cases")
    rng = np.random.default_rng(seed)
    cases = _case_draws(first.shape[1], rng)
    differences = _resampled_means(first, cases, rng) - _resampled_means(second, cases, rng)
    return Interval(float(first.mean() - second.mean()), *_percentiles(differences))
