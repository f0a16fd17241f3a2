"""Paired significance of a difference between two systems on the same samples.

For one metric, each system's per-sample statistics (``Metric.stats``) are aggregated over
the same resampled or permuted sample sets, so corpus-level metrics (chrF, BLEU, micro F1) are
recomputed on every resample rather than approximated by a mean of sentence scores.

- Confidence interval of ``other - reference``: ``scipy.stats.bootstrap``, paired (the test
  samples are resampled with replacement and both systems are scored on the same resample),
  percentile method, ``resamples`` resamples, seeded.
- Interval of one system's score (the whiskers of the plots): the same bootstrap, one system.
- p-value: ``scipy.stats.permutation_test`` with ``permutation_type='samples'``: the two
  systems' outputs are swapped on a random subset of samples (paired approximate
  randomization, Noreen 1989; sacrebleu's ``paired_ar``), two-sided, ``resamples``
  permutations, seeded; scipy adds one to both counts, so p is never 0.

A difference counts as significant when p < 1 − confidence (equivalently, near enough, when
the interval excludes 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    """``other − reference`` on one metric, with its interval and p-value (0–100 scale)."""

    delta: float
    low: float
    high: float
    p_value: float
    samples: int

    def significant(self, confidence: float) -> bool:
        return self.p_value < 1 - confidence


def paired_difference(
    reference: np.ndarray,
    other: np.ndarray,
    aggregate: Callable[[np.ndarray], float],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> Difference:
    """Bootstrap interval and randomization p-value of ``aggregate(other) − aggregate(reference)``.

    Args:
        reference: per-sample statistics ``[n, k]`` of the reference system.
        other: the same for the other system, same samples in the same order.
        aggregate: rows -> corpus score (``Metric.aggregate``).
        resamples: bootstrap resamples, and permutations for the p-value.
        confidence: level of the interval (0.95).
        seed: seed of both random draws.
    """
    from scipy import stats

    if reference.shape != other.shape or not len(reference):
        raise ValueError(f"paired statistics must have one shape and samples: {reference.shape} vs {other.shape}")
    n = len(reference)
    both = np.concatenate([reference, other])

    def delta(ref_rows: np.ndarray, other_rows: np.ndarray) -> float:
        return aggregate(both[other_rows]) - aggregate(both[ref_rows])

    observed = delta(np.arange(n), np.arange(n, 2 * n))
    low, high = _percentile_interval(
        (np.arange(n), np.arange(n, 2 * n)), delta, observed, paired=True,
        resamples=resamples, confidence=confidence, seed=seed,
    )
    test = stats.permutation_test(
        (np.arange(n), np.arange(n, 2 * n)), delta, permutation_type="samples", vectorized=False,
        n_resamples=resamples, alternative="two-sided", random_state=seed,
    )
    return Difference(
        delta=round(observed, 4), low=low, high=high, p_value=round(float(test.pvalue), 4), samples=n,
    )


def score_interval(
    rows: np.ndarray, aggregate: Callable[[np.ndarray], float], *, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of one system's corpus score (resampling its samples)."""
    if not len(rows):
        raise ValueError("no samples")
    return _percentile_interval(
        (np.arange(len(rows)),), lambda idx: aggregate(rows[idx]), aggregate(rows), paired=False,
        resamples=resamples, confidence=confidence, seed=seed,
    )


def _percentile_interval(
    indices: tuple[np.ndarray, ...], statistic: Callable[..., float], observed: float, *,
    paired: bool, resamples: int, confidence: float, seed: int,
) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` of `statistic` over index arrays standing in for the samples
    (so each resample aggregates whole statistic rows), percentile method, rounded; when every
    resample gives the same value scipy returns NaN bounds, and the interval is `observed`."""
    from scipy import stats

    interval = stats.bootstrap(
        indices, statistic, paired=paired, vectorized=False, n_resamples=resamples,
        confidence_level=confidence, method="percentile", random_state=seed,
    ).confidence_interval
    low, high = interval.low, interval.high
    if not (np.isfinite(low) and np.isfinite(high)):
        low = high = observed
    return round(float(low), 4), round(float(high), 4)
