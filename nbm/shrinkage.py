"""Empirical-Bayes shrinkage of rates: the prior strength of a family of rates — how many pseudo-trials of
its parent's rate a cell's own rate is shrunk with — learned from the data, and the shrunk rates.

Used by the features (user × channel, user × topic, … rates: ``features.priors``) and by training (a
message's P(convert | click) toward its topic's: ``training.fit.fit_followup``; a channel's unsubscribe rate:
``training.risk``).

The model is beta-binomial: the true rate of cell ``i`` (a user × channel pair, say) is drawn from
Beta(s·μᵢ, s·(1 − μᵢ)) around its parent's rate μᵢ (the channel's population rate), and the cell observes
kᵢ successes in nᵢ trials. The posterior mean is (kᵢ + s·μᵢ) / (nᵢ + s): the features' smoothing. The
strength ``s`` is common to the family and estimated by **maximising the marginal likelihood**

    ℓ(s) = Σᵢ log B(kᵢ + s·μᵢ, nᵢ − kᵢ + s·(1 − μᵢ)) − log B(s·μᵢ, s·(1 − μᵢ))      (+ terms without s)

over ``[low, high]`` (log scale: a coarse grid, then Brent's bounded search around the best grid point).

Why the likelihood and not the method of moments (Kleinman 1973): each cell here has its own parent μᵢ, which the likelihood takes as it is; the cells are
many and small (most users have a handful of sends on a channel), where the moment estimator's
trial weights let the few heavy cells decide and its variance is several times the likelihood's; and the
likelihood costs milliseconds, because cells are first collapsed to their distinct (k, n, μ) — small
counts repeat. A cell with fewer than two trials says nothing about ``s`` (one Bernoulli draw has
probability μ whatever ``s``) and is left out. When the rates differ no more than binomial noise explains
the likelihood grows up to ``high`` (pool the cells); when they differ a lot it peaks near ``low``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import betaln

LOW, HIGH = 1.0, 1000.0
"""The range learned strengths are clipped to (pseudo-trials)."""
MIN_CELLS = 20
"""Fewer informative cells (two trials or more) than this: nothing is learned (the caller's fallback)."""
GRID = 25
"""Points of the coarse log-spaced grid over ``[low, high]``."""


@dataclass(frozen=True)
class StrengthFit:
    """A learned strength and what it rests on.

    Attributes
    ----------
    strength
        Pseudo-trials of the parent's rate, in ``[low, high]``; ``nan`` when ``cells < MIN_CELLS``.
    cells
        Cells with at least two trials (the informative ones).
    trials
        Their trials, in all.
    at_bound
        The likelihood was largest at ``low`` or ``high``: the clipped value, not an interior optimum.
    """

    strength: float
    cells: int
    trials: float
    at_bound: bool

    @property
    def learned(self) -> bool:
        return bool(np.isfinite(self.strength))


def fit_strength(successes: np.ndarray, trials: np.ndarray, prior_mean: np.ndarray | float,
                 low: float = LOW, high: float = HIGH, min_cells: int = MIN_CELLS) -> StrengthFit:
    """Maximum-marginal-likelihood strength of a beta-binomial over cells (see the module docstring).

    Parameters
    ----------
    successes, trials
        Per cell, shape (cells,); successes are clipped to ``[0, trials]`` (a log may count two opens of
        one send).
    prior_mean
        The parent's rate of each cell (shape (cells,) or a scalar), clipped into ``(0, 1)``.
    low, high
        Bounds of the strength, ``0 < low < high``.
    min_cells
        Fewer informative cells than this: nothing is learned (``strength`` NaN).
    """
    if not 0 < low < high:
        raise ValueError(f"`low` and `high` must satisfy 0 < low < high, got {low!r} and {high!r}")
    n = np.asarray(trials, dtype=float)
    k = np.clip(np.asarray(successes, dtype=float), 0.0, n)
    mu = np.clip(np.broadcast_to(np.asarray(prior_mean, dtype=float), n.shape), 1e-9, 1 - 1e-9)
    keep = n >= 2
    cells = int(keep.sum())
    if cells < max(min_cells, 1):
        return StrengthFit(float("nan"), cells, float(n[keep].sum()), False)
    # Collapse identical cells: small counts repeat, and so do parents (a channel's rate, 1/24).
    distinct = pd.DataFrame({"k": k[keep], "n": n[keep], "mu": mu[keep]}).value_counts(sort=False)
    table = distinct.index.to_frame(index=False)
    k, n, mu, weight = (table["k"].to_numpy(), table["n"].to_numpy(), table["mu"].to_numpy(),
                        distinct.to_numpy(dtype=float))

    def minus_log_likelihood(log_s: float) -> float:
        a, b = np.exp(log_s) * mu, np.exp(log_s) * (1 - mu)
        return -float(np.dot(weight, betaln(k + a, n - k + b) - betaln(a, b)))

    grid = np.linspace(np.log(low), np.log(high), GRID)
    values = np.array([minus_log_likelihood(x) for x in grid])
    best = int(np.argmin(values))
    trials_total = float(np.dot(weight, n))
    if best in (0, GRID - 1):
        return StrengthFit(float(low if best == 0 else high), cells, trials_total, True)
    found = minimize_scalar(minus_log_likelihood, bounds=(grid[best - 1], grid[best + 1]), method="bounded",
                            options={"xatol": 1e-4})
    return StrengthFit(float(np.clip(np.exp(found.x), low, high)), cells, trials_total, False)


def strength_or(successes: np.ndarray, trials: np.ndarray, prior_mean: np.ndarray | float, default: float,
                min_cells: int = MIN_CELLS) -> float:
    """:func:`fit_strength`'s strength, or ``default`` when too few cells say anything."""
    fit = fit_strength(successes, trials, prior_mean, min_cells=min_cells)
    return fit.strength if fit.learned else float(default)


def shrink(successes: np.ndarray, trials: np.ndarray, prior: np.ndarray | float, strength: float) -> np.ndarray:
    """Posterior mean rate of each cell: (successes + strength · prior) / (trials + strength)."""
    return (np.asarray(successes, dtype=float) + strength * np.asarray(prior, dtype=float)) / (
        np.asarray(trials, dtype=float) + strength)
