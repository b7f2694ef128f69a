"""A/B statistics against scipy/statsmodels, slow obvious references and seeded simulations."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    power_proportions_2indep,
    proportions_ztest,
    samplesize_proportions_2indep_onetail,
)

from experiments.stats import (
    RatioStats,
    SampleStats,
    benjamini_hochberg,
    cuped,
    msprt,
    msprt_proportions,
    power_two_proportions,
    ratio_metric,
    ratio_metric_from_stats,
    sample_size_two_proportions,
    srm,
    two_proportions,
    welch,
)

TIGHT = {"rel": 1e-10, "abs": 1e-12}


def _delta_log_ratio(m_t: float, m_c: float, v_t: float, v_c: float) -> float:
    """Standard error of log(m_t / m_c) by a numerical gradient."""
    h = 1e-6 * max(abs(m_t), abs(m_c))
    g_t = (math.log((m_t + h) / m_c) - math.log((m_t - h) / m_c)) / (2 * h)
    g_c = (math.log(m_t / (m_c + h)) - math.log(m_t / (m_c - h))) / (2 * h)
    return math.sqrt(g_t**2 * v_t + g_c**2 * v_c)


# ------------------------------------------------------------------------------------------ two proportions


@pytest.mark.parametrize(("x_t", "n_t", "x_c", "n_c", "alpha"), [
    (120, 1000, 100, 1000, 0.05),
    (530, 10_000, 480, 9_700, 0.05),
    (3, 40, 9, 55, 0.10),
    (4_812, 51_000, 5_020, 50_500, 0.01),
    (999, 1000, 990, 1000, 0.05),
])
def test_two_proportions_matches_statsmodels(x_t, n_t, x_c, n_c, alpha) -> None:
    result = two_proportions(x_t, n_t, x_c, n_c, alpha)
    z, p = proportions_ztest([x_t, x_c], [n_t, n_c])
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff", alpha=alpha)
    assert result.statistic == pytest.approx(z, **TIGHT)
    assert result.p_value == pytest.approx(p, **TIGHT)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, **TIGHT), pytest.approx(high, **TIGHT))
    assert result.difference == pytest.approx(x_t / n_t - x_c / n_c, **TIGHT)
    p_t, p_c = x_t / n_t, x_c / n_c
    assert result.relative == pytest.approx(p_t / p_c - 1, **TIGHT)
    # the relative interval is statsmodels' log-ratio interval of p_t / p_c, less 1
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="log", compare="ratio", alpha=alpha)
    assert result.relative_ci_low == pytest.approx(low - 1, **TIGHT)
    assert result.relative_ci_high == pytest.approx(high - 1, **TIGHT)
    assert result.relative_ci_low < result.relative < result.relative_ci_high
    assert result.note == ""


def test_two_proportions_intervals_cover_the_truth() -> None:
    """2,000 seeded experiments (5,000 users an arm, 10 % → 11 %): both 95 % intervals cover in [93 %, 97 %]."""
    rng = np.random.default_rng(7)
    n, p_c, p_t = 5_000, 0.10, 0.11
    x_t, x_c = rng.binomial(n, p_t, 2_000), rng.binomial(n, p_c, 2_000)
    results = [two_proportions(a, n, b, n) for a, b in zip(x_t, x_c)]
    absolute = np.mean([r.ci_low <= p_t - p_c <= r.ci_high for r in results])
    relative = np.mean([r.relative_ci_low <= p_t / p_c - 1 <= r.relative_ci_high for r in results])
    assert 0.93 <= absolute <= 0.97
    assert 0.93 <= relative <= 0.97


def test_the_relative_interval_is_the_log_ratio_interval_computed_by_hand() -> None:
    """3 / 100 against 11 / 100: log(3/11) ± 1.96 sqrt(1/3 − 1/100 + 1/11 − 1/100), exponentiated, less 1.

    The delta-method normal interval of the ratio was [−106.7 %, −38.7 %]: its lower end said the treatment
    could convert fewer than no users. The log-ratio interval is [−92.2 %, −5.2 %]."""
    result = two_proportions(3, 100, 11, 100)
    delta_se = math.sqrt(0.03 * 0.97 / 100 / 0.11**2 + 0.03**2 * 0.11 * 0.89 / 100 / 0.11**4)
    assert 3 / 11 - 1 - stats.norm.ppf(0.975) * delta_se < -1  # the old interval
    log_se = math.sqrt(1 / 3 - 1 / 100 + 1 / 11 - 1 / 100)
    z = stats.norm.ppf(0.975)
    assert result.relative == pytest.approx(3 / 11 - 1, **TIGHT)
    assert result.relative_ci_low == pytest.approx(math.exp(math.log(3 / 11) - z * log_se) - 1, **TIGHT)
    assert result.relative_ci_high == pytest.approx(math.exp(math.log(3 / 11) + z * log_se) - 1, **TIGHT)
    assert (round(result.relative_ci_low, 4), round(result.relative_ci_high, 4)) == (-0.9216, -0.0517)


def test_the_log_ratio_interval_covers_a_halved_rate_where_the_delta_interval_falls_below_minus_100() -> None:
    """2,000 seeded experiments, 200 users an arm, 10 % → 5 % (a true lift of −50 %): the log-ratio 95 % interval
    covers in [94 %, 97 %] (95.9 %) and never reaches −100 %; the delta-method normal interval covers < 93.5 %
    (92.4 %) and reaches below −100 % in 3 % of the experiments."""
    rng = np.random.default_rng(3)
    n, p_c, p_t = 200, 0.10, 0.05
    x_t, x_c = rng.binomial(n, p_t, 2_000), rng.binomial(n, p_c, 2_000)
    results = [two_proportions(a, n, b, n) for a, b in zip(x_t, x_c)]
    low = np.array([r.relative_ci_low for r in results])
    high = np.array([r.relative_ci_high for r in results])
    assert 0.94 <= np.mean((low <= p_t / p_c - 1) & (p_t / p_c - 1 <= high)) <= 0.97
    assert (low > -1).all()
    r_t, r_c = x_t / n, x_c / n
    delta_se = np.sqrt(r_t * (1 - r_t) / n / r_c**2 + r_t**2 * r_c * (1 - r_c) / n / r_c**4)
    relative = r_t / r_c - 1
    assert np.mean(np.abs(relative - (p_t / p_c - 1)) <= 1.96 * delta_se) < 0.935
    assert (relative - 1.96 * delta_se < -1).any()


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(n_t=st.integers(1, 10_000), n_c=st.integers(1, 10_000), share_t=st.floats(0, 1), share_c=st.floats(0, 1),
       alpha=st.sampled_from([0.001, 0.05, 0.2]))
def test_relative_intervals_of_rates_never_reach_minus_100(n_t, n_c, share_t, share_c, alpha) -> None:
    result = two_proportions(round(share_t * n_t), n_t, round(share_c * n_c), n_c, alpha)
    assert not result.relative_ci_low <= -1  # > −100 %, or NaN with a note
    if math.isnan(result.relative_ci_low):
        assert result.note
    else:
        assert result.relative_ci_low <= result.relative <= result.relative_ci_high


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(cents_t=st.lists(st.integers(0, 10**8), min_size=2, max_size=40),
       cents_c=st.lists(st.integers(0, 10**8), min_size=2, max_size=40),
       users=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=4, max_size=80))
def test_relative_intervals_of_means_and_ratios_never_reach_minus_100(cents_t, cents_c, users) -> None:
    """Revenue per user in cents up to 1,000,000 and click counts (clicks ≤ sends per user), in two arms.

    (Amounts below a cent would let the ratio of means fall under e⁻³⁷, where ``exp(x) − 1`` rounds to −1.)"""
    y_t, y_c = np.divide(cents_t, 100), np.divide(cents_c, 100)
    clicks, not_clicked = np.array(users).T
    sends, half = clicks + not_clicked, len(users) // 2
    ratio = ratio_metric(clicks[:half], sends[:half], clicks[half:], sends[half:])
    for result in (welch(y_t, y_c), ratio):
        assert not result.relative_ci_low <= -1
        if not math.isnan(result.relative_ci_low):
            assert result.relative_ci_low <= result.relative <= result.relative_ci_high


# --------------------------------------------------------------------------------------------------- Welch


@pytest.mark.parametrize(("seed", "n_t", "n_c", "sd_t", "sd_c", "alpha"), [
    (0, 50, 50, 1.0, 1.0, 0.05),
    (1, 30, 200, 3.0, 0.5, 0.05),
    (2, 1_000, 800, 2.0, 2.5, 0.01),
    (3, 5, 9, 1.0, 4.0, 0.10),
])
def test_welch_matches_scipy(seed, n_t, n_c, sd_t, sd_c, alpha) -> None:
    rng = np.random.default_rng(seed)
    y_t, y_c = rng.normal(1.2, sd_t, n_t), rng.normal(1.0, sd_c, n_c)
    reference = stats.ttest_ind(y_t, y_c, equal_var=False)
    low, high = reference.confidence_interval(1 - alpha)
    from_stats = stats.ttest_ind_from_stats(y_t.mean(), y_t.std(ddof=1), n_t, y_c.mean(), y_c.std(ddof=1), n_c,
                                            equal_var=False)
    sums = [SampleStats.from_sums(len(y), y.sum(), (y**2).sum()) for y in (y_t, y_c)]
    for result in (welch(y_t, y_c, alpha), welch(SampleStats.from_values(y_t), SampleStats.from_values(y_c), alpha),
                   welch(*sums, alpha)):
        assert result.statistic == pytest.approx(reference.statistic, rel=1e-9)
        assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
        assert result.p_value == pytest.approx(from_stats.pvalue, rel=1e-9)
        assert result.df == pytest.approx(reference.df, rel=1e-9)
        assert (result.ci_low, result.ci_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    exact = welch(y_t, y_c, alpha)  # the arrays themselves: the 1e-10 pin
    assert exact.statistic == pytest.approx(reference.statistic, **TIGHT)
    assert exact.p_value == pytest.approx(reference.pvalue, **TIGHT)
    # log-ratio interval: the numerical-gradient delta method on log(m_t / m_c), exponentiated
    m_t, m_c = y_t.mean(), y_c.mean()
    se = _delta_log_ratio(m_t, m_c, y_t.var(ddof=1) / n_t, y_c.var(ddof=1) / n_c)
    half = stats.norm.ppf(1 - alpha / 2) * se
    assert exact.relative_ci_low == pytest.approx(math.exp(math.log(m_t / m_c) - half) - 1, rel=1e-6)
    assert exact.relative_ci_high == pytest.approx(math.exp(math.log(m_t / m_c) + half) - 1, rel=1e-6)


# ------------------------------------------------------------------------------------------------- ratio


def _ratio_world(rng: np.random.Generator, shape: tuple[int, ...], a: float, b: float = 9.0):
    """Sends per user 1 + Poisson(4); each user's click rate ~ Beta(a, b), so the true ratio is a / (a + b)."""
    sends = 1 + rng.poisson(4, shape)
    clicks = rng.binomial(sends, rng.beta(a, b, shape))
    return clicks, sends


def test_ratio_delta_method_matches_the_bootstrap() -> None:
    """Delta-method standard error of the difference within 8 % of a 2,000-draw seeded bootstrap over users."""
    rng = np.random.default_rng(11)
    (c_t, s_t), (c_c, s_c) = _ratio_world(rng, (2_000,), a=1.2), _ratio_world(rng, (2_000,), a=1.0)
    boot_t, boot_c = (rng.integers(0, 2_000, (2_000, 2_000)) for _ in range(2))
    boot = (c_t[boot_t].sum(1) / s_t[boot_t].sum(1)) - (c_c[boot_c].sum(1) / s_c[boot_c].sum(1))
    result = ratio_metric(c_t, s_t, c_c, s_c)
    assert (result.ci_high - result.difference) / stats.norm.ppf(0.975) == pytest.approx(boot.std(ddof=1), rel=0.08)


def _ratio_se(num: np.ndarray, den: np.ndarray) -> float:
    """Delta-method standard error of Σ num / Σ den written out from per-user arrays (the reference)."""
    ratio = num.sum() / den.sum()
    residual = num - ratio * den  # the linearised per-user contribution
    return float(residual.std(ddof=1) / (math.sqrt(len(num)) * den.mean()))


def test_ratio_matches_the_written_out_reference_and_sufficient_statistics() -> None:
    rng = np.random.default_rng(3)
    (c_t, s_t), (c_c, s_c) = _ratio_world(rng, (700,), a=1.2), _ratio_world(rng, (650,), a=1.0)
    result = ratio_metric(c_t, s_t, c_c, s_c, alpha=0.1)
    se = math.hypot(_ratio_se(c_t, s_t), _ratio_se(c_c, s_c))
    difference = c_t.sum() / s_t.sum() - c_c.sum() / s_c.sum()
    assert result.difference == pytest.approx(difference, **TIGHT)
    assert result.statistic == pytest.approx(difference / se, rel=1e-9)
    assert result.ci_high == pytest.approx(difference + stats.norm.ppf(0.95) * se, rel=1e-9)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(difference / se)), rel=1e-8)
    same = ratio_metric_from_stats(RatioStats.from_values(c_t, s_t), RatioStats.from_values(c_c, s_c), alpha=0.1)
    assert same == result
    # With one send per user, the ratio is a mean and its variance s² / n: the z version of Welch.
    y_t, y_c = rng.normal(2, 1, 300), rng.normal(2, 1, 400)
    as_ratio, as_mean = ratio_metric(y_t, np.ones(300), y_c, np.ones(400)), welch(y_t, y_c)
    assert as_ratio.statistic == pytest.approx(as_mean.statistic, **TIGHT)


def test_ratio_intervals_cover_and_the_naive_per_send_interval_does_not() -> None:
    """2,000 seeded experiments, 400 users an arm with heterogeneous click rates: delta-method 95 % intervals
    cover the true difference and lift in [93 %, 97 %]; treating sends as independent covers < 92 %."""
    rng = np.random.default_rng(5)
    (c_t, s_t), (c_c, s_c) = _ratio_world(rng, (2_000, 400), a=1.2), _ratio_world(rng, (2_000, 400), a=1.0)
    true_t, true_c = 1.2 / 10.2, 1.0 / 10.0
    results = [ratio_metric(*arms) for arms in zip(c_t, s_t, c_c, s_c)]
    assert 0.93 <= np.mean([r.ci_low <= true_t - true_c <= r.ci_high for r in results]) <= 0.97
    assert 0.93 <= np.mean([r.relative_ci_low <= true_t / true_c - 1 <= r.relative_ci_high for r in results]) <= 0.97
    r_t, r_c = c_t.sum(1) / s_t.sum(1), c_c.sum(1) / s_c.sum(1)
    naive_se = np.sqrt(r_t * (1 - r_t) / s_t.sum(1) + r_c * (1 - r_c) / s_c.sum(1))
    assert np.mean(np.abs(r_t - r_c - (true_t - true_c)) <= 1.96 * naive_se) < 0.92


# ------------------------------------------------------------------------------------------------- CUPED


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_cuped_reduces_variance_by_rho_squared_and_stays_unbiased(rho) -> None:
    """200 seeded experiments of 2,000 users, effect 0.1, corr(x, y) = rho: mean variance reduction within
    0.01 of rho² (×1/1.0025 for the effect's own variance), mean estimate within 4 standard errors of 0.1,
    interval width ≈ sqrt(1 − rho²) of Welch's on y, within 3 %."""
    effect, estimates, reductions, widths = 0.1, [], [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=2_000)
        treated = rng.random(2_000) < 0.5
        y = 1 + rho * x + math.sqrt(1 - rho**2) * rng.normal(size=2_000) + effect * treated
        result, raw = cuped(y, x, treated), welch(y[treated], y[~treated])
        estimates.append(result.comparison.difference)
        reductions.append(result.variance_reduction)
        widths.append((result.comparison.ci_high - result.comparison.ci_low) / (raw.ci_high - raw.ci_low))
        if seed == 0:
            assert result.theta == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)  # the pooled OLS slope
    assert np.mean(reductions) == pytest.approx(rho**2 / 1.0025, abs=0.01)
    assert abs(np.mean(estimates) - effect) < 4 * np.std(estimates, ddof=1) / math.sqrt(200)
    assert np.mean(widths) == pytest.approx(math.sqrt(1 - rho**2), rel=0.03)


def test_cuped_with_a_constant_covariate_is_welch() -> None:
    rng = np.random.default_rng(0)
    y, treated = rng.normal(size=500), rng.random(500) < 0.5
    result = cuped(y, np.ones(500), treated.astype(int))
    plain = welch(y[treated], y[~treated])
    assert result.theta == 0.0 and result.variance_reduction == 0.0
    assert result.comparison.p_value == plain.p_value and result.comparison.method == "cuped"
    assert "no variance" in result.comparison.note


# --------------------------------------------------------------------------------------------------- SRM


@pytest.mark.parametrize(("observed", "shares"), [
    ([5_000, 5_100], [0.5, 0.5]),
    ([5_000, 5_400], [1, 1]),
    ([3_300, 3_400, 3_250], [1 / 3, 1 / 3, 1 / 3]),
    ([9_020, 980], [0.9, 0.1]),
    ([100, 210, 690], [0.1, 0.2, 0.7]),
])
def test_srm_matches_scipy_chisquare(observed, shares) -> None:
    result = srm(observed, shares)
    expected = np.asarray(shares, dtype=float) / np.sum(shares) * np.sum(observed)
    reference = stats.chisquare(observed, expected)
    assert result.chi2 == pytest.approx(reference.statistic, **TIGHT)
    assert result.p_value == pytest.approx(reference.pvalue, **TIGHT)
    assert result.df == len(observed) - 1
    assert result.mismatch == (reference.pvalue < 0.001)


def test_srm_flags_a_clear_mismatch_and_handles_zero_shares() -> None:
    assert srm([5_000, 5_400], [0.5, 0.5]).mismatch  # p ≈ 9e-5
    dropped = srm([0, 480, 520], [0, 0.5, 0.5])
    assert dropped.df == 1 and dropped.p_value == pytest.approx(stats.chisquare([480, 520]).pvalue, **TIGHT)
    leak = srm([3, 480, 520], [0, 0.5, 0.5])
    assert leak.mismatch and leak.p_value == 0.0 and leak.chi2 == math.inf and "[0]" in leak.note
    empty = srm([0, 0], [0.5, 0.5])
    assert math.isnan(empty.p_value) and not empty.mismatch and "no users" in empty.note
    single = srm([0, 50], [0, 1])
    assert math.isnan(single.p_value) and not single.mismatch and "nothing to test" in single.note


# -------------------------------------------------------------------------------------------- sequential


def _mixture_lr(difference: float, v: float, tau2: float) -> float:
    """∫ N(d̂; θ, V) N(θ; 0, τ²) dθ / N(d̂; 0, V) by quadrature: the mSPRT ratio without its closed form."""
    sd = math.sqrt(tau2)
    mixed, _ = integrate.quad(lambda t: stats.norm.pdf(difference, t, math.sqrt(v)) * stats.norm.pdf(t, 0, sd),
                              -12 * sd, 12 * sd, points=[difference], limit=200)
    return mixed / stats.norm.pdf(difference, 0, math.sqrt(v))


def test_msprt_matches_the_mixture_integral_and_inverts_to_its_interval() -> None:
    """Five cumulative looks at per-user data with an effect: p = running min of 1/Λ, Λ by quadrature; the
    interval's ends are where the ratio for a shifted null equals 1/alpha."""
    rng = np.random.default_rng(2)
    y_t, y_c = rng.normal(10.3, 2.0, 1_000), rng.normal(10.0, 2.5, 1_000)
    ends = np.array([100, 250, 400, 700, 1_000])
    cumulative = [(ends, np.cumsum(y)[ends - 1], np.cumsum(y**2)[ends - 1]) for y in (y_t, y_c)]
    result = msprt(*cumulative[0], *cumulative[1], tau=0.2, alpha=0.05)
    expected, running = [], 1.0
    for k, end in enumerate(ends):
        a, b = y_t[:end], y_c[:end]
        v = a.var(ddof=1) / end + b.var(ddof=1) / end
        tau2 = 0.2**2 * (a.var(ddof=1) + b.var(ddof=1)) / 2
        d = a.mean() - b.mean()
        running = min(running, 1 / _mixture_lr(d, v, tau2))
        expected.append(running)
        assert result.difference[k] == pytest.approx(d, rel=1e-9)
        for bound in (result.ci_low[k], result.ci_high[k]):
            assert _mixture_lr(d - bound, v, tau2) == pytest.approx(20.0, rel=1e-6)
    np.testing.assert_allclose(result.p_value, np.minimum(1, expected), rtol=1e-6)
    assert result.p_value[-1] < 0.05 and result.reject[-1]


def test_msprt_rejection_agrees_with_its_intervals_and_p_never_rises() -> None:
    """Over 200 seeded experiments × 14 looks: rejected by look k ⇔ some interval up to k excluded 0."""
    rng = np.random.default_rng(4)
    n = np.cumsum(np.full((200, 14), 200), axis=1)
    x_t = np.cumsum(rng.binomial(200, 0.105, (200, 14)), axis=1)
    x_c = np.cumsum(rng.binomial(200, 0.100, (200, 14)), axis=1)
    result = msprt_proportions(x_t, n, x_c, n)
    assert (np.diff(result.p_value, axis=1) <= 0).all()
    excluded = np.logical_or.accumulate((result.ci_low > 0) | (result.ci_high < 0), axis=1)
    np.testing.assert_array_equal(result.reject, excluded)
    assert 0 < result.reject[:, -1].sum() < 200  # the comparison is not vacuous


def test_msprt_proportions_close_to_msprt_on_the_same_binary_data() -> None:
    """Bernoulli variance p(1 − p) against the sample variance (ddof 1): the same p-values within 1 %."""
    rng = np.random.default_rng(6)
    n = np.cumsum(np.full(10, 500))
    x_t, x_c = np.cumsum(rng.binomial(500, 0.12, 10)), np.cumsum(rng.binomial(500, 0.10, 10))
    binary = msprt_proportions(x_t, n, x_c, n)
    means = msprt(n, x_t, x_t, n, x_c, x_c)
    np.testing.assert_allclose(binary.p_value, means.p_value, rtol=0.01)


# ------------------------------------------------------------------------------------ multiplicity, power


@pytest.mark.parametrize(("seed", "m", "alpha"), [(0, 1, 0.05), (1, 10, 0.05), (2, 200, 0.10), (3, 57, 0.01)])
def test_benjamini_hochberg_matches_statsmodels(seed, m, alpha) -> None:
    rng = np.random.default_rng(seed)
    p = np.round(np.concatenate([rng.uniform(0, 0.02, m // 3), rng.uniform(0, 1, m - m // 3)]), 3)  # with ties
    result = benjamini_hochberg(p, alpha)
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="fdr_bh")
    np.testing.assert_allclose(result.p_adjusted, adjusted, rtol=1e-12)
    np.testing.assert_array_equal(result.reject, reject)
    assert result.n_tests == m


def test_benjamini_hochberg_keeps_nan_out_of_the_count() -> None:
    p = np.array([[0.001, np.nan, 0.04], [0.03, 0.2, np.nan]])
    result = benjamini_hochberg(p)
    reject, adjusted, _, _ = multipletests(p[~np.isnan(p)], method="fdr_bh")
    assert result.n_tests == 4 and result.p_adjusted.shape == (2, 3)
    np.testing.assert_allclose(result.p_adjusted[~np.isnan(p)], adjusted, rtol=1e-12)
    np.testing.assert_array_equal(result.reject[~np.isnan(p)], reject)
    assert np.isnan(result.p_adjusted[np.isnan(p)]).all() and not result.reject[np.isnan(p)].any()
    assert benjamini_hochberg([np.nan, np.nan]).n_tests == 0 and benjamini_hochberg([]).p_adjusted.size == 0


@pytest.mark.parametrize(("p_c", "p_t", "n", "alpha"), [
    (0.10, 0.12, 3_000, 0.05), (0.05, 0.045, 20_000, 0.05), (0.30, 0.36, 500, 0.01), (0.5, 0.51, 100, 0.10),
])
def test_power_matches_statsmodels(p_c, p_t, n, alpha) -> None:
    reference = power_proportions_2indep(p_t - p_c, p_c, n, alpha=alpha, return_results=False)
    assert power_two_proportions(p_c, p_t, n, alpha) == pytest.approx(reference, **TIGHT)
    needed = sample_size_two_proportions(p_c, p_t, power=0.8, alpha=alpha)
    assert needed == math.ceil(samplesize_proportions_2indep_onetail(p_t - p_c, p_c, 0.8, alpha=alpha))
    # The formula ignores the far tail (< 1e-4 here), so one user fewer may reach 0.8 only by that much.
    assert power_two_proportions(p_c, p_t, needed, alpha) >= 0.8
    assert power_two_proportions(p_c, p_t, needed - 1, alpha) < 0.8 + 1e-4


# --------------------------------------------------------------------------------- degenerate and invalid


@pytest.mark.parametrize(("compute", "note", "defined"), [
    pytest.param(lambda: two_proportions(0, 0, 3, 10), "empty arm: treatment", set(), id="proportions-empty"),
    pytest.param(lambda: two_proportions(0, 500, 0, 400), "zero variance", {"treatment", "control", "difference"},
                 id="proportions-all-zero"),
    pytest.param(lambda: two_proportions(500, 500, 400, 400), "zero variance",
                 {"treatment", "control", "difference", "relative"}, id="proportions-all-one"),
    pytest.param(lambda: two_proportions(5, 100, 0, 100), "control is 0",
                 {"treatment", "control", "difference", "ci_low", "ci_high", "statistic", "p_value"},
                 id="proportions-control-zero"),
    pytest.param(lambda: welch([], [1.0, 2.0, 3.0]), "empty arm: treatment", {"control"}, id="welch-empty"),
    pytest.param(lambda: welch([1.0], [1.0, 2.0, 4.0]), "fewer than 2 users in treatment",
                 {"treatment", "control", "difference"}, id="welch-one-user"),
    pytest.param(lambda: welch([2.0, 2.0, 2.0], [3.0, 3.0]), "zero variance",
                 {"treatment", "control", "difference", "relative"}, id="welch-zero-variance"),
    pytest.param(lambda: ratio_metric([1, 2], [0, 0], [1, 1], [2, 3]), "denominator sums to 0 in treatment",
                 {"control"}, id="ratio-zero-denominator"),
    pytest.param(lambda: ratio_metric([], [], [1, 1], [2, 3]), "empty arm: treatment", {"control"},
                 id="ratio-empty"),
])
def test_degenerate_inputs_give_nan_and_a_note(compute, note, defined) -> None:
    result = compute()
    assert note in result.note
    numeric = ["treatment", "control", "difference", "ci_low", "ci_high", "relative", "relative_ci_low",
               "relative_ci_high", "statistic", "p_value"]
    assert {name for name in numeric if not math.isnan(getattr(result, name))} == defined


def test_msprt_counts_no_evidence_at_unusable_looks() -> None:
    result = msprt_proportions([0, 0, 30, 60], [0, 0, 300, 600], [0, 5, 20, 40], [0, 100, 300, 600])
    assert result.p_value[:2].tolist() == [1.0, 1.0] and np.isnan(result.ci_low[:2]).all()
    assert "2 of 4 looks" in result.note and np.isfinite(result.ci_low[2:]).all()
    constant = msprt([5, 10], [5, 10], [5, 10], [5, 10], [0, 0], [0, 0])  # every value 1 against every value 0
    assert constant.p_value.tolist() == [1.0, 1.0] and "2 of 2" in constant.note


_Y, _X, _T = np.arange(6.0), np.arange(6.0) ** 2, np.array([1, 0, 1, 0, 1, 0])
_LOOKS = np.array([100, 200])


@pytest.mark.parametrize(("compute", "message"), [
    pytest.param(lambda: two_proportions(-1, 10, 1, 10), "`x_t`", id="negative-count"),
    pytest.param(lambda: two_proportions(1, 10, 11, 10), "`x_c` = 11 exceeds `n_c`", id="x-above-n"),
    pytest.param(lambda: two_proportions(1.5, 10, 1, 10), "`x_t` must be whole", id="fractional-count"),
    pytest.param(lambda: two_proportions(1, 10, 1, [10, 20]), "`n_c` must be one number", id="array-count"),
    pytest.param(lambda: two_proportions(1, 10, 1, 10, alpha=0), "`alpha`", id="alpha-zero"),
    pytest.param(lambda: two_proportions(1, 10, 1, 10, alpha=1.0), "`alpha`", id="alpha-one"),
    pytest.param(lambda: welch([1.0, 2.0], [1.0, 2.0], alpha=float("nan")), "`alpha`", id="alpha-nan"),
    pytest.param(lambda: welch([1.0, np.nan], [1.0, 2.0]), "`treatment` must be finite", id="nan-value"),
    pytest.param(lambda: welch([[1.0, 2.0]], [1.0, 2.0]), "`treatment` must be one-dimensional", id="2d-values"),
    pytest.param(lambda: SampleStats(-1, 0.0, 1.0), "`n`", id="negative-n"),
    pytest.param(lambda: SampleStats(3, 0.0, -1.0), "`variance`", id="negative-variance"),
    pytest.param(lambda: ratio_metric([1, 2], [1], [1], [1]), "mismatched lengths: `num_t` has 2", id="ratio-lengths"),
    pytest.param(lambda: ratio_metric([1], [1], [1], [1], alpha=2), "`alpha`", id="ratio-alpha"),
    pytest.param(lambda: cuped(_Y, _X[:5], _T), "mismatched lengths", id="cuped-lengths"),
    pytest.param(lambda: cuped(_Y, _X, _T * 2), "`treated`", id="cuped-arm-values"),
    pytest.param(lambda: srm([10, 10], [0.5]), "mismatched lengths", id="srm-lengths"),
    pytest.param(lambda: srm([-1, 3], [0.5, 0.5]), "`observed_counts`", id="srm-negative"),
    pytest.param(lambda: srm([1, 2], [-0.5, 1.5]), "`expected_shares`", id="srm-negative-share"),
    pytest.param(lambda: srm([1, 2], [0, 0]), "`expected_shares`", id="srm-zero-shares"),
    pytest.param(lambda: srm([1, 2], [1, 1], threshold=0), "`threshold`", id="srm-threshold"),
    pytest.param(lambda: msprt_proportions([5, 3], _LOOKS, [5, 6], _LOOKS), "`x_t` must be cumulative",
                 id="msprt-decreasing"),
    pytest.param(lambda: msprt_proportions([5, 300], _LOOKS, [5, 6], _LOOKS), "`x_t` exceeds `n_t`",
                 id="msprt-x-above-n"),
    pytest.param(lambda: msprt_proportions([5, 6], _LOOKS, [5, 6, 7], [1, 2, 3]), "mismatched shapes",
                 id="msprt-shapes"),
    pytest.param(lambda: msprt_proportions([5, 6], _LOOKS, [5, 6], _LOOKS, tau=0), "`tau`", id="msprt-tau"),
    pytest.param(lambda: msprt(_LOOKS, [1, np.inf], [1, 2], _LOOKS, [1, 2], [1, 2]), "`sum_t`", id="msprt-inf"),
    pytest.param(lambda: benjamini_hochberg([0.1, 1.2]), "`pvalues`", id="bh-above-one"),
    pytest.param(lambda: benjamini_hochberg([0.1], alpha=-0.1), "`alpha`", id="bh-alpha"),
    pytest.param(lambda: power_two_proportions(0.0, 0.1, 100), "`p_control`", id="power-rate"),
    pytest.param(lambda: power_two_proportions(0.1, 0.12, 0), "`n_per_arm`", id="power-n"),
    pytest.param(lambda: sample_size_two_proportions(0.1, 0.1), "`p_treatment` equals", id="size-no-effect"),
    pytest.param(lambda: sample_size_two_proportions(0.1, 0.12, power=1.0), "`power`", id="size-power"),
])
def test_invalid_arguments_raise_and_name_the_argument(compute, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compute()
