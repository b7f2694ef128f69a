"""Empirical-Bayes strength recovers the prior it was simulated with (seeded; stated tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

from nbm.shrinkage import beta_binomial_strength, shrink


@pytest.mark.parametrize("strength", [5.0, 50.0, 500.0])
def test_method_of_moments_recovers_the_prior_strength(strength):
    rng = np.random.default_rng(int(strength))
    mean, cells = 0.05, 2000
    rate = rng.beta(mean * strength, (1 - mean) * strength, cells)
    trials = rng.integers(50, 2000, cells)
    got = beta_binomial_strength(rng.binomial(trials, rate), trials)
    assert got == pytest.approx(strength, rel=0.15)       # 2,000 cells: the estimate's spread is ~5 %


def test_cells_that_differ_by_noise_alone_are_pooled():
    rng = np.random.default_rng(0)
    trials = rng.integers(20, 200, 500)
    assert beta_binomial_strength(rng.binomial(trials, 0.1), trials, high=1e4) >= 1e3
    assert beta_binomial_strength([0, 0], [10, 10]) == 1e4                    # nothing to tell them apart
    assert beta_binomial_strength([3], [10]) == 1e4                           # one cell


def test_shrink_is_the_posterior_mean():
    assert shrink([3, 0], [10, 0], [0.1, 0.2], 10.0).tolist() == pytest.approx([(3 + 1) / 20, 0.2])
