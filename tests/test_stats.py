"""Paired bootstrap intervals and randomization p-values against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from repotune.metrics import METRICS
from repotune.stats import paired_difference, score_interval

DRAWS = {"resamples": 1000, "confidence": 0.95, "seed": 42}


def mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean())


def test_identical_systems_differ_by_exactly_zero_with_p_one():
    rows = np.array([[10.0], [50.0], [90.0], [30.0]])
    diff = paired_difference(rows, rows.copy(), mean, **DRAWS)
    assert (diff.delta, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not diff.significant(0.95)


def test_interval_matches_the_binomial_standard_error():
    # Exact match on 100 samples: the other system right on 30 more samples, equal elsewhere.
    # delta = 30 points; the per-sample differences are 100 (30x) or 0 (70x), so the standard
    # error of their mean is 100 * sqrt(.3 * .7 / 100) = 4.58: the 95% interval is ~30 +- 9.
    reference = np.zeros((100, 1))
    other = np.array([[100.0]] * 30 + [[0.0]] * 70)
    diff = paired_difference(reference, other, mean, **DRAWS)
    assert diff.delta == 30.0
    assert diff.low == pytest.approx(30 - 1.96 * 4.58, abs=2.5) and diff.high == pytest.approx(30 + 1.96 * 4.58, abs=2.5)
    # No sign-flip of 30 one-sided differences reaches 30 except the identity: p is the floor,
    # 2 x 1/1001 (two-sided, scipy counts the observed statistic once).
    assert diff.p_value == pytest.approx(2 / 1001, abs=1e-4) and diff.significant(0.95)


def test_a_coin_flip_difference_is_not_significant():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 100, (60, 1))
    other = reference + rng.choice([-5.0, 5.0], (60, 1))  # +-5 at random: no real change
    diff = paired_difference(reference, other, mean, **DRAWS)
    assert diff.low < 0 < diff.high and diff.p_value > 0.05 and not diff.significant(0.95)


def test_corpus_metrics_are_recomputed_per_resample():
    # chrF on its summed statistics: the interval brackets the corpus score, not a sentence mean.
    refs = [f"Return the value number {i} of the table." for i in range(30)]
    preds = [f"Return value {i}." if i % 3 else f"Return the value number {i} of the table." for i in range(30)]
    chrf = METRICS["chrf"]
    rows = chrf.stats(preds, refs)
    low, high = score_interval(rows, chrf.aggregate, **DRAWS)
    assert low <= chrf.score(preds, refs) <= high and high - low > 5
    same = paired_difference(rows, rows, chrf.aggregate, **DRAWS)
    assert same.delta == 0 and same.p_value == 1.0


def test_results_are_seeded():
    reference = np.arange(50.0).reshape(-1, 1)
    other = reference + np.linspace(-3, 6, 50).reshape(-1, 1)
    assert paired_difference(reference, other, mean, **DRAWS) == paired_difference(reference, other, mean, **DRAWS)
    assert paired_difference(reference, other, mean, **{**DRAWS, "seed": 7}) != paired_difference(
        reference, other, mean, **DRAWS
    )


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="paired statistics"):
        paired_difference(np.zeros((3, 1)), np.zeros((4, 1)), mean, **DRAWS)
