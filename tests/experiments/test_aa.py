"""A/A and known-effect validation over 1,000 seeded simulated experiments each.

With 1,000 experiments the standard error of a 5 % rate is 0.7 points, so [3 %, 7 %] is about ±3 standard
errors, and ±5 points around a power of 0.7 is about ±3.5 standard errors. Data are drawn for all experiments
at once; the functions under test run once per experiment (or once for all, for the sequential test).
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.stats import (
    SampleStats,
    cuped,
    msprt,
    msprt_proportions,
    power_two_proportions,
    ratio_metric,
    srm,
    two_proportions,
    welch,
)

EXPERIMENTS = 1_000
ALPHA = 0.05


def test_fixed_horizon_false_positive_rate_of_the_z_test_and_welch() -> None:
    """6,000 users split at random, 10 % conversion in both arms: each test rejects 3–7 % of the time."""
    rng = np.random.default_rng(2024)
    n_t = rng.binomial(6_000, 0.5, EXPERIMENTS)
    n_c = 6_000 - n_t
    x_t, x_c = rng.binomial(n_t, 0.10), rng.binomial(n_c, 0.10)
    z_p = np.array([two_proportions(*arms).p_value for arms in zip(x_t, n_t, x_c, n_c)])
    welch_p = np.array([welch(SampleStats.from_sums(a, x, x), SampleStats.from_sums(b, y, y)).p_value
                        for x, a, y, b in zip(x_t, n_t, x_c, n_c)])
    assert 0.03 <= np.mean(z_p < ALPHA) <= 0.07
    assert 0.03 <= np.mean(welch_p < ALPHA) <= 0.07


def _revenue(rng):
    """Skewed revenue per user (lognormal, σ = 1), 1,500 users an arm, compared by Welch."""
    y_t, y_c = rng.lognormal(0, 1, (2, EXPERIMENTS, 1_500))
    return [welch(a, b).p_value for a, b in zip(y_t, y_c)]


def _cuped(rng):
    """A metric correlated 0.7 with its pre-period value, 3,000 users assigned at random, CUPED-adjusted."""
    x = rng.normal(size=(EXPERIMENTS, 3_000))
    y = 0.7 * x + np.sqrt(1 - 0.49) * rng.normal(size=x.shape)
    treated = rng.random(x.shape) < 0.5
    return [cuped(*arrays).comparison.p_value for arrays in zip(y, x, treated)]


def _clicks_per_send(rng):
    """Clicks per send with heterogeneous users (the delta method's case), 800 users an arm."""
    sends = 1 + rng.poisson(4, (2, EXPERIMENTS, 800))
    clicks = rng.binomial(sends, rng.beta(1, 9, sends.shape))
    return [ratio_metric(*arms).p_value for arms in zip(clicks[0], sends[0], clicks[1], sends[1])]


@pytest.mark.parametrize("simulate", [_revenue, _cuped, _clicks_per_send], ids=lambda f: f.__name__.strip("_"))
def test_fixed_horizon_false_positive_rate_on_per_user_metrics(simulate) -> None:
    p_values = np.array(simulate(np.random.default_rng(7)))
    assert 0.03 <= np.mean(p_values < ALPHA) <= 0.07


def _daily_conversions(rng, days: int, users_per_day: int, p_c: float, p_t: float):
    """Cumulative users and conversions per arm after each day: arrays of shape (experiments, days)."""
    n_t = rng.binomial(users_per_day, 0.5, (EXPERIMENTS, days))
    n_c = users_per_day - n_t
    x_t, x_c = rng.binomial(n_t, p_t), rng.binomial(n_c, p_c)
    return [np.cumsum(a, axis=1) for a in (x_t, n_t, x_c, n_c)]


def test_always_valid_test_survives_daily_peeking_and_the_fixed_horizon_test_does_not() -> None:
    """14 daily looks at 600 new users a day, 10 % in both arms. Stopping at the first look with p < 0.05:
    the mSPRT rejects ≤ 5 % of A/A experiments; the z-test read daily rejects > 10 % (theory: ~20 %),
    though read once at the end it holds 3–7 %."""
    x_t, n_t, x_c, n_c = _daily_conversions(np.random.default_rng(14), 14, 600, 0.10, 0.10)
    sequential = msprt_proportions(x_t, n_t, x_c, n_c)
    naive = np.array([[two_proportions(*look).p_value for look in zip(*experiment)]
                      for experiment in zip(x_t, n_t, x_c, n_c)])
    assert sequential.reject.any(axis=1).mean() <= 0.05
    assert (naive < ALPHA).any(axis=1).mean() > 0.10
    assert 0.03 <= (naive[:, -1] < ALPHA).mean() <= 0.07


def test_always_valid_test_of_means_survives_daily_peeking() -> None:
    """The mSPRT for means on skewed revenue (lognormal), 14 looks at 300 users an arm a day: ≤ 5 % rejected."""
    rng = np.random.default_rng(15)
    revenue = rng.lognormal(0, 1, (2, EXPERIMENTS, 14, 300))
    n = np.broadcast_to(np.arange(1, 15) * 300, (EXPERIMENTS, 14))
    sums = [np.cumsum(revenue[arm].sum(axis=2), axis=1) for arm in (0, 1)]
    squares = [np.cumsum((revenue[arm] ** 2).sum(axis=2), axis=1) for arm in (0, 1)]
    sequential = msprt(n, sums[0], squares[0], n, sums[1], squares[1])
    assert sequential.reject.any(axis=1).mean() <= 0.05
    assert sequential.note == ""


def test_a_known_effect_is_detected_at_the_predicted_power() -> None:
    """10 % → 12 % with 3,000 users an arm: the formula predicts 0.70; the z-test's rejection rate is within
    5 points of it. The always-valid test, paying for its freedom to peek, detects less but not nothing."""
    rng = np.random.default_rng(31)
    n, p_c, p_t = 3_000, 0.10, 0.12
    predicted = power_two_proportions(p_c, p_t, n)
    assert 0.6 <= predicted <= 0.8
    x_t, x_c = rng.binomial(n, p_t, EXPERIMENTS), rng.binomial(n, p_c, EXPERIMENTS)
    detected = np.mean([two_proportions(a, n, b, n).p_value < ALPHA for a, b in zip(x_t, x_c)])
    assert abs(detected - predicted) <= 0.05
    x_t, n_t, x_c, n_c = _daily_conversions(rng, 14, 430, p_c, p_t)  # ~3,000 users an arm after 14 days
    sequential = msprt_proportions(x_t, n_t, x_c, n_c).reject.any(axis=1).mean()
    assert 0.2 <= sequential < detected


def test_srm_rarely_flags_a_fair_split_and_always_flags_a_skewed_one() -> None:
    """10,000 users split 50/50: SRM p-values below 0.05 in 3–7 % of experiments, flags (p < 0.001) in ≤ 1 %;
    40,000 users split 48/52 instead (8 standard errors off), every experiment is flagged."""
    rng = np.random.default_rng(3)
    fair = rng.binomial(10_000, 0.5, EXPERIMENTS)
    skewed = rng.binomial(40_000, 0.48, EXPERIMENTS)
    fair_results = [srm([a, 10_000 - a], [0.5, 0.5]) for a in fair]
    assert 0.03 <= np.mean([r.p_value < 0.05 for r in fair_results]) <= 0.07
    assert np.mean([r.mismatch for r in fair_results]) <= 0.01
    assert all(srm([a, 40_000 - a], [0.5, 0.5]).mismatch for a in skewed)
