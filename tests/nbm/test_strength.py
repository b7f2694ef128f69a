"""The empirical-Bayes strength estimator (nbm/shrinkage.py) against known truth: seeded beta-binomial
cells with a known prior strength, and a slow reference likelihood from scipy.stats."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import betabinom

from nbm.shrinkage import HIGH, LOW, MIN_CELLS, fit_strength


def _cells(strength: float, seed: int, n_cells: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells of three parents (rates 2 %, 10 %, 35 %), 1 + Poisson(6) trials each (most cells small, as a
    user's sends on a channel are), true rates Beta(s·μ, s·(1 − μ))."""
    rng = np.random.default_rng(seed)
    mu = rng.choice([0.02, 0.10, 0.35], n_cells)
    n = 1 + rng.poisson(6, n_cells)
    p = rng.beta(strength * mu, strength * (1 - mu))
    return rng.binomial(n, p), n, mu


@pytest.mark.parametrize(("strength", "tolerance"), [(3.0, 0.10), (30.0, 0.20)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_known_prior_strength(strength: float, tolerance: float, seed: int) -> None:
    """Over 20 seeds the relative error's standard deviation is 1.5 % at s = 3 and 5.8 % at s = 30
    (20,000 cells of ~7 trials): the tolerances are ≥ 3.4 of them."""
    fit = fit_strength(*_cells(strength, seed))
    assert fit.learned and not fit.at_bound
    assert abs(fit.strength / strength - 1) < tolerance, fit


def test_equals_the_maximum_of_scipys_beta_binomial_likelihood() -> None:
    """A slow, obviously-right reference: Σ log betabinom.pmf over the cells on a fine grid of strengths."""
    k, n, mu = _cells(12.0, seed=5, n_cells=3_000)
    grid = np.exp(np.linspace(np.log(2.0), np.log(60.0), 400))
    likelihood = [betabinom.logpmf(k, n, s * mu, s * (1 - mu)).sum() for s in grid]
    best = grid[int(np.argmax(likelihood))]
    step = grid[1] / grid[0]
    fit = fit_strength(k, n, mu)
    assert best / step <= fit.strength <= best * step


def test_cells_that_differ_only_by_noise_pool_and_cells_apart_do_not() -> None:
    rng = np.random.default_rng(3)
    n = rng.integers(2, 30, 5_000)
    same = fit_strength(rng.binomial(n, 0.1), n, 0.1)          # one true rate: binomial noise only
    assert same.strength > 300                                  # (infinite in truth; noise keeps it finite)
    pooled = fit_strength(np.full(5_000, 2), np.full(5_000, 20), 0.1)   # every cell exactly at the parent
    assert pooled.at_bound and pooled.strength == HIGH
    extreme = rng.random(5_000) < 0.1                           # each cell always or never succeeds
    apart = fit_strength(np.where(extreme, n, 0), n, 0.1)
    assert apart.at_bound and apart.strength == LOW


def test_too_few_informative_cells_learn_nothing() -> None:
    n = np.r_[np.ones(500), np.full(MIN_CELLS - 1, 5)]          # single trials say nothing about the strength
    fit = fit_strength(np.zeros(len(n)), n, 0.1)
    assert not fit.learned and fit.cells == MIN_CELLS - 1


def test_successes_over_trials_are_clipped_not_fatal() -> None:
    k, n, mu = _cells(5.0, seed=7, n_cells=4_000)
    over = k.copy()
    over[:10] = n[:10] + 3                                      # two opens of one send, counted twice
    assert fit_strength(over, n, mu).strength == pytest.approx(
        fit_strength(np.minimum(over, n), n, mu).strength)


@pytest.mark.parametrize(("low", "high"), [(0.0, 10.0), (5.0, 5.0), (10.0, 1.0), (-1.0, 3.0)])
def test_invalid_bounds_are_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="`low` and `high`"):
        fit_strength(np.zeros(30), np.full(30, 3), 0.1, low=low, high=high)


def test_shrink_is_the_posterior_mean():
    from nbm.shrinkage import shrink

    assert shrink([3, 0], [10, 0], [0.1, 0.2], 10.0).tolist() == pytest.approx([(3 + 1) / 20, 0.2])


def test_too_few_cells_fall_back_to_the_default():
    from nbm.shrinkage import strength_or

    assert strength_or([1, 2], [10, 10], 0.1, default=7.0) == 7.0
    rng = np.random.default_rng(0)
    trials = rng.integers(20, 200, 300)
    assert 1.0 <= strength_or(rng.binomial(trials, rng.beta(1, 9, 300)), trials, 0.1, default=7.0, min_cells=2) <= 1000
