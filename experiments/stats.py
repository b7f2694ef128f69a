"""A/B test statistics: treatment against control, from per-user arrays or their sufficient statistics.

The user is the unit of randomisation. Per arm: ``n`` users, estimate ``m`` (rate, mean or ratio), ``V`` the
variance of ``m``; ``z = Φ⁻¹(1 − α/2)``. Every comparison returns a `Comparison`: the difference
``m_t − m_c`` with its ``1 − α`` interval, the relative difference ``m_t / m_c − 1`` with a log-ratio interval
``exp(log(m_t / m_c) ± z sqrt(V_t / m_t² + V_c / m_c²)) − 1`` (the delta method on the log scale, as statsmodels'
``confint_proportions_2indep(compare="ratio", method="log")`` for rates: it stays above −100 % and is skewed as
a ratio is; it needs both estimates > 0), and a two-sided test.

* `two_proportions`: rates ``p = x / n``; Wald interval with ``V = p (1 − p) / n`` per arm (unpooled); the
  test is the pooled z ``(p_t − p_c) / sqrt(p̄ (1 − p̄) (1/n_t + 1/n_c))``, ``p̄ = (x_t + x_c) / (n_t + n_c)``.
* `welch`: means with ``V = s² / n`` (``s²`` the sample variance); ``t = Δ / sqrt(V_t + V_c)`` on the
  Welch–Satterthwaite ``df = (V_t + V_c)² / (V_t² / (n_t − 1) + V_c² / (n_c − 1))``; t interval.
* `ratio_metric`: ``R = Σ num / Σ den`` per arm (e.g. clicks per send, users randomised); delta method
  (Deng et al. 2018) ``V = (s²_num − 2 R s_num,den + R² s²_den) / (n · mean(den)²)``; z-test, normal interval.
* `cuped` (Deng et al. 2013): ``θ = cov(y, x) / var(x)`` over both arms, ``y − θ (x − x̄)`` compared by Welch;
  the variance falls by ``1 − var(y_adj) / var(y) ≈ ρ²(x, y)``.
* `srm`: Pearson χ² of the users per arm against the expected shares (``scipy.stats.chisquare``), ``df = arms − 1``.
* `msprt` / `msprt_proportions`: always-valid p-values over repeated looks (Johari, Koomen, Pekelis and
  Walsh 2017). With ``Δ̂ ~ N(Δ, V)`` at a look and the mixture ``Δ ~ N(0, τ²)``, the likelihood ratio is
  ``Λ = sqrt(V / (V + τ²)) exp(Δ̂² τ² / (2 V (V + τ²)))``; ``p = min(1, 1/Λ)`` as a running minimum, and
  ``Δ̂ ± sqrt(V (V + τ²) / τ² · (log((V + τ²) / V) − 2 log α))`` is an always-valid interval. ``V`` is the
  plug-in variance of each look. ``tau`` is in per-user standard deviations (``τ = tau · σ̂``); the default 0.1
  makes the test most sensitive (``τ² ≈ 3–30 V``) from ~600 to ~6,000 users per arm and loses little beyond;
  a ``tau`` too small for the sample (``τ² < V``) costs far more power than one too large.
* `benjamini_hochberg`: step-up adjusted p-values ``min(1, min_{j ≥ i} p_(j) m / j)``
  (``statsmodels.stats.multitest.multipletests(method="fdr_bh")``), NaN ones left out.
* `power_two_proportions` / `sample_size_two_proportions`: the pooled z-test's normal-approximation power
  ``Φ((|Δ| √n − z sqrt(2 p̄ q̄)) / sqrt(p_t q_t + p_c q_c))`` (plus the far tail), ``p̄ = (p_t + p_c) / 2``.

A degenerate input (an empty arm, zero variance, a control of 0, an estimate ≤ 0 for the relative interval)
gives NaN fields and a `note` saying why,
not an exception; an invalid argument raises ValueError naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

NAN = float("nan")
DEFAULT_TAU = 0.1


@dataclass(frozen=True)
class Comparison:
    """Treatment against control on one metric: one row of the long-format report.

    ``treatment`` and ``control`` are the arms' estimates (rate, mean or ratio); ``difference`` is treatment −
    control with its ``1 − alpha`` interval ``[ci_low, ci_high]``; ``relative`` is treatment / control − 1;
    ``statistic`` is the test's z or t (``df`` is ``inf`` for a z-test), ``p_value`` two-sided. ``note`` says
    why a field is NaN ("" when none is).
    """

    method: str
    n_treatment: int
    n_control: int
    treatment: float
    control: float
    difference: float
    ci_low: float
    ci_high: float
    relative: float
    relative_ci_low: float
    relative_ci_high: float
    statistic: float
    df: float
    p_value: float
    alpha: float
    note: str = ""


@dataclass(frozen=True)
class SampleStats:
    """One arm's per-user metric summarised: users, mean and sample variance (ddof 1; NaN below 2 users)."""

    n: int
    mean: float
    variance: float

    def __post_init__(self) -> None:
        _count("n", self.n)
        if self.variance < 0:
            raise ValueError(f"`variance` must be ≥ 0, got {self.variance!r}")

    @classmethod
    def from_values(cls, values: ArrayLike) -> SampleStats:
        values = _finite_1d("values", values)
        n = len(values)
        return cls(n, float(values.mean()) if n else NAN, float(values.var(ddof=1)) if n > 1 else NAN)

    @classmethod
    def from_sums(cls, n: int, total: float, total_squares: float) -> SampleStats:
        """From ``n``, ``Σ y`` and ``Σ y²`` (what a SQL aggregate gives)."""
        n = _count("n", n)
        mean = total / n if n else NAN
        variance = max(0.0, (total_squares - total * mean) / (n - 1)) if n > 1 else NAN
        return cls(n, mean, variance)


@dataclass(frozen=True)
class RatioStats:
    """One arm's per-user numerator and denominator summarised: the sufficient statistics of a ratio metric."""

    n: int
    sum_numerator: float
    sum_denominator: float
    sum_numerator_squares: float
    sum_denominator_squares: float
    sum_cross: float  # Σ numerator × denominator

    def __post_init__(self) -> None:
        _count("n", self.n)

    @classmethod
    def from_values(cls, numerator: ArrayLike, denominator: ArrayLike) -> RatioStats:
        num, den = _finite_1d("numerator", numerator), _finite_1d("denominator", denominator)
        _same_length(("numerator", num), ("denominator", den))
        return cls(len(num), float(num.sum()), float(den.sum()), float(num @ num), float(den @ den),
                   float(num @ den))


@dataclass(frozen=True)
class CupedResult:
    """`welch` on the CUPED-adjusted metric, the adjustment ``theta`` and the share of variance removed."""

    comparison: Comparison
    theta: float
    variance_reduction: float


@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch test: ``mismatch`` when ``p_value < threshold``; counts in the order given."""

    chi2: float
    df: int
    p_value: float
    mismatch: bool
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    threshold: float
    note: str = ""


@dataclass(frozen=True)
class SequentialResult:
    """Always-valid inference at each look; arrays of shape ``(..., looks)`` like the inputs.

    ``p_value`` never increases over looks; stopping at the first look where it falls below ``alpha`` keeps
    the false-positive rate at ``alpha`` however often one looks. ``tau`` is in per-user standard deviations.
    """

    n_treatment: np.ndarray
    n_control: np.ndarray
    difference: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    tau: float
    alpha: float
    note: str = ""

    @property
    def reject(self) -> np.ndarray:
        return self.p_value < self.alpha


@dataclass(frozen=True)
class MultipleTesting:
    """Benjamini–Hochberg: adjusted p-values (NaN where the input was) and rejections at ``alpha``."""

    p_adjusted: np.ndarray
    reject: np.ndarray
    n_tests: int
    alpha: float


# ---------------------------------------------------------------------------------------------- comparisons


def two_proportions(x_t: int, n_t: int, x_c: int, n_c: int, alpha: float = 0.05) -> Comparison:
    """Conversion rates ``x / n``: Wald interval of the difference, pooled two-proportion z-test."""
    _check_alpha(alpha)
    x_t, n_t, x_c, n_c = _count("x_t", x_t), _count("n_t", n_t), _count("x_c", x_c), _count("n_c", n_c)
    for x_name, x, n_name, n in (("x_t", x_t, "n_t", n_t), ("x_c", x_c, "n_c", n_c)):
        if x > n:
            raise ValueError(f"`{x_name}` = {x} exceeds `{n_name}` = {n}")
    notes = _arm_notes(n_t, n_c, minimum=1)
    if notes:
        return _undefined("two_proportions", n_t, n_c, alpha, notes)
    p_t, p_c = x_t / n_t, x_c / n_c
    pooled = (x_t + x_c) / (n_t + n_c)
    null_se = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    return _compare("two_proportions", (n_t, n_c), (p_t, p_c), (p_t * (1 - p_t) / n_t, p_c * (1 - p_c) / n_c),
                    alpha, null_se=null_se)


def welch(treatment: SampleStats | ArrayLike, control: SampleStats | ArrayLike, alpha: float = 0.05) -> Comparison:
    """Difference of means by Welch's t-test, from `SampleStats` or per-user arrays."""
    _check_alpha(alpha)
    t, c = (arm if isinstance(arm, SampleStats) else SampleStats.from_values(_finite_1d(name, arm))
            for name, arm in (("treatment", treatment), ("control", control)))
    notes = _arm_notes(t.n, c.n, minimum=2)
    if notes:
        return _undefined("welch", t.n, c.n, alpha, notes, t.mean, c.mean)
    v_t, v_c = t.variance / t.n, c.variance / c.n
    se2 = v_t + v_c
    # Welch–Satterthwaite in shares of se2: the same number, without underflow when the variances are tiny
    df = 1 / ((v_t / se2) ** 2 / (t.n - 1) + (v_c / se2) ** 2 / (c.n - 1)) if se2 > 0 else NAN
    return _compare("welch", (t.n, c.n), (t.mean, c.mean), (v_t, v_c), alpha, df=df)


def ratio_metric(num_t: ArrayLike, den_t: ArrayLike, num_c: ArrayLike, den_c: ArrayLike,
                 alpha: float = 0.05) -> Comparison:
    """``Σ num / Σ den`` per arm from per-user arrays (e.g. clicks and sends per user), by the delta method."""
    arms = []
    for (num_name, num), (den_name, den) in ((("num_t", num_t), ("den_t", den_t)),
                                             (("num_c", num_c), ("den_c", den_c))):
        num, den = _finite_1d(num_name, num), _finite_1d(den_name, den)
        _same_length((num_name, num), (den_name, den))
        arms.append(RatioStats.from_values(num, den))
    return ratio_metric_from_stats(*arms, alpha=alpha)


def ratio_metric_from_stats(treatment: RatioStats, control: RatioStats, alpha: float = 0.05) -> Comparison:
    """`ratio_metric` from each arm's sums (`RatioStats`)."""
    _check_alpha(alpha)
    notes = _arm_notes(treatment.n, control.n, minimum=2)
    notes += [f"denominator sums to 0 in {arm}: no ratio"
              for arm, s in (("treatment", treatment), ("control", control)) if s.n and s.sum_denominator == 0]
    (r_t, v_t), (r_c, v_c) = _ratio_and_variance(treatment), _ratio_and_variance(control)
    if notes:
        return _undefined("ratio", treatment.n, control.n, alpha, notes, r_t, r_c)
    return _compare("ratio", (treatment.n, control.n), (r_t, r_c), (v_t, v_c), alpha)


def cuped(y: ArrayLike, x: ArrayLike, treated: ArrayLike, alpha: float = 0.05) -> CupedResult:
    """Welch on ``y − θ (x − x̄)``: ``x`` a pre-experiment covariate, ``treated`` True for treatment users."""
    _check_alpha(alpha)
    y, x = _finite_1d("y", y), _finite_1d("x", x)
    arm = np.asarray(treated)
    if arm.ndim != 1 or (arm.dtype != bool and not np.isin(arm, (0, 1)).all()):
        raise ValueError("`treated` must be one-dimensional booleans or 0/1 (1 = treatment)")
    arm = arm.astype(bool)
    _same_length(("y", y), ("x", x), ("treated", arm))
    n = len(y)
    var_x = float(x.var(ddof=1)) if n > 1 else NAN
    note = ""
    if var_x > 0:
        theta = float(np.cov(y, x, ddof=1)[0, 1] / var_x)
    else:
        theta, note = 0.0, "covariate `x` has no variance: no adjustment"
    adjusted = y - theta * (x - x.mean()) if n else y
    var_y = float(y.var(ddof=1)) if n > 1 else NAN
    reduction = 1 - float(adjusted.var(ddof=1)) / var_y if var_y > 0 else NAN
    comparison = welch(adjusted[arm], adjusted[~arm], alpha)
    notes = "; ".join(text for text in (note, comparison.note) if text)
    return CupedResult(replace(comparison, method="cuped", note=notes), theta, reduction)


# ------------------------------------------------------------------------------------- assignment health


def srm(observed_counts: ArrayLike, expected_shares: ArrayLike, threshold: float = 0.001) -> SrmResult:
    """χ² goodness of fit of users per arm to the designed shares (normalised to sum to 1)."""
    _check_alpha(threshold, "threshold")
    observed = _whole("observed_counts", observed_counts).ravel()
    shares = _finite_1d("expected_shares", expected_shares)
    _same_length(("observed_counts", observed), ("expected_shares", shares))
    if (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"`expected_shares` must be ≥ 0 with a positive sum, got {shares.tolist()}")
    total = observed.sum()
    expected = shares / shares.sum() * total
    live = shares > 0
    df = int(live.sum()) - 1
    record = (tuple(int(v) for v in observed), tuple(float(v) for v in expected))
    impossible = np.flatnonzero(~live & (observed > 0))
    if total == 0:
        return SrmResult(NAN, df, NAN, False, *record, threshold, "no users: nothing to test")
    if impossible.size:
        return SrmResult(math.inf, df, 0.0, True, *record, threshold,
                         f"users in arm(s) {impossible.tolist()} whose expected share is 0")
    if df == 0:
        return SrmResult(NAN, df, NAN, False, *record, threshold, "one arm with a positive share: nothing to test")
    test = scipy_stats.chisquare(observed[live], expected[live])
    chi2, p_value = float(test.statistic), float(test.pvalue)
    return SrmResult(chi2, df, p_value, p_value < threshold, *record, threshold)


# ------------------------------------------------------------------------------------------- sequential


def msprt(n_t: ArrayLike, sum_t: ArrayLike, sum_squares_t: ArrayLike, n_c: ArrayLike, sum_c: ArrayLike,
          sum_squares_c: ArrayLike, *, tau: float = DEFAULT_TAU, alpha: float = 0.05) -> SequentialResult:
    """Always-valid test of a difference in means from cumulative ``n``, ``Σ y``, ``Σ y²`` per arm and look.

    Inputs broadcast to a common shape ``(..., looks)`` (e.g. experiments × days); looks run along the last axis.
    """
    n_t, n_c = _looks("n_t", n_t), _looks("n_c", n_c)
    sums = {name: _finite(name, value) for name, value in
            (("sum_t", sum_t), ("sum_squares_t", sum_squares_t), ("sum_c", sum_c), ("sum_squares_c", sum_squares_c))}
    n_t, n_c, s_t, q_t, s_c, q_c = _broadcast(n_t=n_t, n_c=n_c, **sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_t, m_c = s_t / n_t, s_c / n_c
        v_t = np.where(n_t > 1, np.maximum(q_t - s_t * m_t, 0) / (n_t - 1), NAN)
        v_c = np.where(n_c > 1, np.maximum(q_c - s_c * m_c, 0) / (n_c - 1), NAN)
    return _mixture(n_t, n_c, m_t, m_c, v_t, v_c, tau, alpha)


def msprt_proportions(x_t: ArrayLike, n_t: ArrayLike, x_c: ArrayLike, n_c: ArrayLike, *, tau: float = DEFAULT_TAU,
                      alpha: float = 0.05) -> SequentialResult:
    """Always-valid test of a difference in rates from cumulative conversions ``x`` and users ``n`` per look."""
    x_t, n_t, x_c, n_c = _broadcast(x_t=_looks("x_t", x_t), n_t=_looks("n_t", n_t),
                                    x_c=_looks("x_c", x_c), n_c=_looks("n_c", n_c))
    for x_name, x, n_name, n in (("x_t", x_t, "n_t", n_t), ("x_c", x_c, "n_c", n_c)):
        if (x > n).any():
            raise ValueError(f"`{x_name}` exceeds `{n_name}` at some look")
    with np.errstate(divide="ignore", invalid="ignore"):
        p_t, p_c = x_t / n_t, x_c / n_c
    return _mixture(n_t, n_c, p_t, p_c, p_t * (1 - p_t), p_c * (1 - p_c), tau, alpha)


def _mixture(n_t, n_c, m_t, m_c, v_t, v_c, tau: float, alpha: float) -> SequentialResult:
    """The normal-mixture likelihood ratio per look, from each arm's estimate and per-user variance."""
    _check_alpha(alpha)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"`tau` must be a positive number, got {tau!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        difference = m_t - m_c
        v = v_t / n_t + v_c / n_c
        tau2 = tau**2 * (n_t * v_t + n_c * v_c) / (n_t + n_c)
        usable = v > 0  # False for NaN: an empty arm, one user, or no variance
        log_lr = np.where(usable, 0.5 * np.log(v / (v + tau2)) + difference**2 * tau2 / (2 * v * (v + tau2)), 0.0)
        half = np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) - 2 * math.log(alpha)))
    p_value = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)), axis=-1)
    low, high = np.where(usable, difference - half, NAN), np.where(usable, difference + half, NAN)
    skipped = int((~usable).sum())
    note = (f"{skipped} of {usable.size} looks had an arm with too few users or no variance: no evidence there"
            if skipped else "")
    return SequentialResult(n_t, n_c, difference, p_value, low, high, tau, alpha, note)


# --------------------------------------------------------------------------------- multiplicity and design


def benjamini_hochberg(pvalues: ArrayLike, alpha: float = 0.05) -> MultipleTesting:
    """False-discovery-rate adjusted p-values over the non-NaN entries; NaN stays NaN and is never rejected."""
    _check_alpha(alpha)
    p = np.asarray(pvalues, dtype=float)
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"`pvalues` must lie in [0, 1] (or be NaN), got {p[(p < 0) | (p > 1)][0]!r}")
    tested = ~np.isnan(p)
    adjusted, reject = np.full(p.shape, NAN), np.zeros(p.shape, dtype=bool)
    if tested.any():
        reject[tested], adjusted[tested] = multipletests(p[tested], alpha=alpha, method="fdr_bh")[:2]
    return MultipleTesting(adjusted, reject, int(tested.sum()), alpha)


def power_two_proportions(p_control: float, p_treatment: float, n_per_arm: float, alpha: float = 0.05) -> float:
    """Probability that the two-sided pooled z-test at ``alpha`` rejects with ``n_per_arm`` users in each arm."""
    null_sd, alt_sd, z = _design(p_control, p_treatment, alpha)
    if not (math.isfinite(n_per_arm) and n_per_arm > 0):
        raise ValueError(f"`n_per_arm` must be positive, got {n_per_arm!r}")
    shift = abs(p_treatment - p_control) * math.sqrt(n_per_arm)
    return float(special.ndtr((shift - z * null_sd) / alt_sd) + special.ndtr((-shift - z * null_sd) / alt_sd))


def sample_size_two_proportions(p_control: float, p_treatment: float, power: float = 0.8,
                                alpha: float = 0.05) -> int:
    """Users per arm for the pooled z-test to reach ``power`` (the far tail ignored, as is usual)."""
    null_sd, alt_sd, z = _design(p_control, p_treatment, alpha)
    _check_alpha(power, "power")
    if p_treatment == p_control:
        raise ValueError("`p_treatment` equals `p_control`: no sample size detects a difference of 0")
    n = ((z * null_sd + special.ndtri(power) * alt_sd) / (p_treatment - p_control)) ** 2
    return math.ceil(n)


# ----------------------------------------------------------------------------------------------- helpers


def _compare(method: str, n: tuple[int, int], estimate: tuple[float, float], variance: tuple[float, float],
             alpha: float, *, df: float = math.inf, null_se: float | None = None) -> Comparison:
    """Difference, relative difference and test from each arm's estimate and that estimate's variance."""
    (m_t, m_c), (v_t, v_c) = estimate, variance
    notes: list[str] = []
    difference = m_t - m_c
    se = math.sqrt(v_t + v_c)
    test_se = se if null_se is None else null_se
    statistic = difference / test_se if test_se > 0 else NAN
    p_value = float(2 * (special.ndtr(-abs(statistic)) if math.isinf(df) else special.stdtr(df, -abs(statistic))))
    if se > 0:
        critical = special.ndtri(1 - alpha / 2) if math.isinf(df) else special.stdtrit(df, 1 - alpha / 2)
        low, high = difference - critical * se, difference + critical * se
    else:
        low = high = NAN
        notes.append("zero variance in both arms" + (": no interval" if test_se > 0 else ": no test"))
    relative = NAN
    if m_c == 0:
        notes.append("control is 0: no relative difference")
    else:
        relative = m_t / m_c - 1
    rel_low, rel_high, rel_note = _log_ratio_interval(m_t, m_c, v_t, v_c, alpha)
    if m_c != 0 and rel_note and se > 0:
        notes.append(rel_note)
    return Comparison(method, int(n[0]), int(n[1]), float(m_t), float(m_c), float(difference), float(low),
                      float(high), float(relative), float(rel_low), float(rel_high), float(statistic), float(df),
                      p_value, alpha, "; ".join(notes))


def _log_ratio_interval(m_t: float, m_c: float, v_t: float, v_c: float,
                        alpha: float) -> tuple[float, float, str]:
    """``1 − alpha`` interval of ``m_t / m_c − 1`` from the normal interval of ``log(m_t / m_c)``.

    ``Var(log m) ≈ V / m²`` per arm (the delta method), so the bounds are ``exp(log(m_t / m_c) ± z sqrt(V_t / m_t²
    + V_c / m_c²)) − 1``: always > −1, since a ratio of positive estimates is positive. NaN bounds and a note
    when an estimate is ≤ 0 (no logarithm) or both variances are 0 (no spread).
    """
    if not (m_t > 0 and m_c > 0):  # also False for NaN
        return NAN, NAN, "an arm's estimate is ≤ 0: no log-ratio interval of the relative difference"
    log_se = math.hypot(math.sqrt(v_t) / m_t, math.sqrt(v_c) / m_c)
    if not log_se > 0:
        return NAN, NAN, "zero variance in both arms: no relative interval"
    log_ratio, half = math.log(m_t / m_c), special.ndtri(1 - alpha / 2) * log_se
    return math.expm1(log_ratio - half), math.expm1(log_ratio + half), ""


def _undefined(method: str, n_t: int, n_c: int, alpha: float, notes: list[str], treatment: float = NAN,
               control: float = NAN) -> Comparison:
    return Comparison(method, int(n_t), int(n_c), float(treatment), float(control), float(treatment - control),
                      NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, alpha, "; ".join(notes))


def _ratio_and_variance(s: RatioStats) -> tuple[float, float]:
    """``Σ num / Σ den`` and its delta-method variance (NaN below 2 users or with a zero denominator)."""
    if s.n < 2 or s.sum_denominator == 0:
        return (s.sum_numerator / s.sum_denominator if s.n and s.sum_denominator else NAN), NAN
    ratio = s.sum_numerator / s.sum_denominator
    mean_den = s.sum_denominator / s.n
    var_num = (s.sum_numerator_squares - s.sum_numerator**2 / s.n) / (s.n - 1)
    var_den = (s.sum_denominator_squares - s.sum_denominator**2 / s.n) / (s.n - 1)
    cov = (s.sum_cross - s.sum_numerator * s.sum_denominator / s.n) / (s.n - 1)
    return ratio, max(0.0, (var_num - 2 * ratio * cov + ratio**2 * var_den) / (s.n * mean_den**2))


def _design(p_control: float, p_treatment: float, alpha: float) -> tuple[float, float, float]:
    """Per-user standard deviations of the difference under the null (pooled) and the alternative, and ``z``."""
    _check_alpha(alpha)
    for name, p in (("p_control", p_control), ("p_treatment", p_treatment)):
        if not 0 < p < 1:
            raise ValueError(f"`{name}` must lie in (0, 1), got {p!r}")
    pooled = (p_control + p_treatment) / 2
    null_sd = math.sqrt(2 * pooled * (1 - pooled))
    alt_sd = math.sqrt(p_control * (1 - p_control) + p_treatment * (1 - p_treatment))
    return null_sd, alt_sd, float(special.ndtri(1 - alpha / 2))


def _arm_notes(n_t: int, n_c: int, minimum: int) -> list[str]:
    notes = []
    for arm, n in (("treatment", n_t), ("control", n_c)):
        if n == 0:
            notes.append(f"empty arm: {arm} has no users")
        elif n < minimum:
            notes.append(f"fewer than {minimum} users in {arm}: no variance")
    return notes


def _check_alpha(value: float, name: str = "alpha") -> None:
    if not 0 < value < 1:  # also False for NaN
        raise ValueError(f"`{name}` must lie in (0, 1), got {value!r}")


def _finite(name: str, value: ArrayLike) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` must be finite, got {array[~np.isfinite(array)].ravel()[0]!r}")
    return array


def _finite_1d(name: str, value: ArrayLike) -> np.ndarray:
    array = _finite(name, value)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional (one value per user), got shape {array.shape}")
    return array


def _whole(name: str, value: ArrayLike) -> np.ndarray:
    array = _finite(name, value)
    bad = (array < 0) | (array != np.round(array))
    if bad.any():
        raise ValueError(f"`{name}` must be whole numbers ≥ 0, got {array[bad].ravel()[0]!r}")
    return array


def _count(name: str, value: float) -> int:
    array = _whole(name, value)
    if array.ndim:
        raise ValueError(f"`{name}` must be one number, got shape {array.shape}")
    return int(array)


def _looks(name: str, value: ArrayLike) -> np.ndarray:
    """Cumulative counts per look (last axis): whole, ≥ 0 and non-decreasing."""
    array = np.atleast_1d(_whole(name, value))
    if (np.diff(array, axis=-1) < 0).any():
        raise ValueError(f"`{name}` must be cumulative: non-decreasing over looks (the last axis)")
    return array


def _same_length(*named: tuple[str, np.ndarray]) -> None:
    lengths = {name: len(array) for name, array in named}
    if len(set(lengths.values())) > 1:
        raise ValueError("mismatched lengths: " + ", ".join(f"`{name}` has {n}" for name, n in lengths.items()))


def _broadcast(**arrays: np.ndarray) -> list[np.ndarray]:
    try:
        return [np.atleast_1d(a) for a in np.broadcast_arrays(*arrays.values())]
    except ValueError:
        shapes = ", ".join(f"`{name}` {np.shape(a)}" for name, a in arrays.items())
        raise ValueError(f"mismatched shapes: {shapes}") from None
