"""Empirical-Bayes shrinkage of rates: how strongly a cell's rate (a message's, a topic's) is pulled toward
its parent's rate is learned from the spread of the cells' rates, not fixed.

The model is beta-binomial: each cell's true rate is drawn from Beta(μ·s, (1 − μ)·s) around the parent's
rate μ, and the cell observes ``successes`` out of ``trials``. The prior strength ``s`` (pseudo-trials) is
estimated by the method of moments: the trial-weighted variance of the observed rates, less the part
binomial noise explains (μ(1 − μ)·E[1/n] per cell), is the variance of the true rates τ² = μ(1 − μ)/(s + 1).
Cells whose rates differ no more than noise explains get the largest strength (pool them); cells that
differ a lot get a small one (trust each cell). The moment estimator needs no optimisation and is the
classical one (Kleinman 1973, "Proportions with extraneous variance"); with few cells it is noisy, which is
why the strength is clipped to ``[low, high]``.
"""

from __future__ import annotations

import numpy as np


def beta_binomial_strength(successes: np.ndarray, trials: np.ndarray, low: float = 1.0,
                           high: float = 10_000.0) -> float:
    """Prior strength (pseudo-trials) of a beta-binomial fitted to the cells by the method of moments.

    Cells without trials are ignored; fewer than two cells with trials, or no success at all, give ``high``
    (nothing to tell the cells apart: pool them)."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    keep = n > 0
    k, n = k[keep], n[keep]
    if len(n) < 2 or k.sum() <= 0:
        return float(high)
    mu = k.sum() / n.sum()
    if mu >= 1.0:
        return float(high)
    rate = k / n
    weight = n / n.sum()
    observed = float(np.sum(weight * (rate - mu) ** 2))
    # With weights w = n / N (N = Σ n) and Var(r) = τ² + (μ(1 − μ) − τ²)/n, the observed spread S = Σ w (r − μ̂)²
    # has E[S] = τ² (1 − Σ w² − (cells − 1)/N) + μ(1 − μ)(cells − 1)/N: solved for τ².
    cells, total = len(n), n.sum()
    noise = mu * (1.0 - mu) * (cells - 1) / total
    between = (observed - noise) / max(1.0 - float(np.sum(weight ** 2)) - (cells - 1) / total, 1e-12)
    if between <= 0:
        return float(high)
    return float(np.clip(mu * (1.0 - mu) / between - 1.0, low, high))


def shrink(successes: np.ndarray, trials: np.ndarray, prior: np.ndarray | float, strength: float) -> np.ndarray:
    """Posterior mean rate of each cell: (successes + strength · prior) / (trials + strength)."""
    return (np.asarray(successes, dtype=float) + strength * np.asarray(prior, dtype=float)) / (
        np.asarray(trials, dtype=float) + strength)
