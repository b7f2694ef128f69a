"""Off-policy estimators: the value of a target policy from a log written by another (with propensities).

For each logged decision *i* the log gives the reward ``r_i`` of the action taken and its logging
propensity ``p_i``; the target policy gives ``π(a_i | x_i)`` (``target``) — the probability it would have
taken the same action — and, for doubly robust, a reward model gives ``q̂(x_i, a_i)`` (``q_logged``) and
the model's value of the target policy ``Σ_a π(a | x_i) q̂(x_i, a)`` (``q_target``). With importance
weights ``w_i = π(a_i | x_i) / p_i``:

* IPS: ``mean(w r)`` — unbiased, high variance;
* SNIPS: ``sum(w r) / sum(w)`` — self-normalised, slightly biased, much lower variance;
* DR: ``mean(q_target + w (r − q_logged))`` — unbiased if either the propensities or the reward model are right.

Confidence intervals come from a seeded bootstrap over decisions. A degenerate input (no decision, or no
weight) gives an explicit NaN estimate, not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class BanditLog:
    """Arrays of length ``n`` (decisions), validated on construction."""

    reward: np.ndarray
    propensity: np.ndarray
    target: np.ndarray
    q_logged: np.ndarray | None = None
    q_target: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.reward)
        for name in ("propensity", "target", "q_logged", "q_target"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"`{name}` has {len(value)} values, `reward` has {n}")
        if n and ((self.propensity <= 0) | (self.propensity > 1)).any():
            raise ValueError("`propensity` must lie in (0, 1]")
        if n and ((self.target < 0) | (self.target > 1)).any():
            raise ValueError("`target` must be probabilities in [0, 1]")

    @property
    def weight(self) -> np.ndarray:
        return self.target / self.propensity

    def take(self, index: np.ndarray) -> BanditLog:
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return BanditLog(self.reward[index], self.propensity[index], self.target[index],
                         pick(self.q_logged), pick(self.q_target))


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its bootstrap confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int


def ips(log: BanditLog) -> float:
    return float(np.mean(log.weight * log.reward)) if len(log.reward) else float("nan")


def snips(log: BanditLog) -> float:
    total = log.weight.sum()
    return float((log.weight * log.reward).sum() / total) if total > 0 else float("nan")


def doubly_robust(log: BanditLog) -> float:
    if log.q_logged is None or log.q_target is None:
        raise ValueError("doubly robust needs `q_logged` and `q_target` (a reward model)")
    if not len(log.reward):
        return float("nan")
    return float(np.mean(log.q_target + log.weight * (log.reward - log.q_logged)))


ESTIMATORS: dict[str, Callable[[BanditLog], float]] = {"ips": ips, "snips": snips, "dr": doubly_robust}


def estimate(log: BanditLog, estimator: str = "snips", n_bootstrap: int = 500, alpha: float = 0.05,
             seed: int = 0) -> Estimate:
    """``estimator``'s value and a percentile bootstrap ``1 − alpha`` interval (resampling decisions)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown `estimator` {estimator!r}; expected one of {sorted(ESTIMATORS)}")
    function = ESTIMATORS[estimator]
    n = len(log.reward)
    value = function(log)
    if n < 2:
        return Estimate(estimator, value, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    draws = np.array([function(log.take(rng.integers(0, n, n))) for _ in range(n_bootstrap)])
    low, high = np.nanquantile(draws, [alpha / 2, 1 - alpha / 2])
    return Estimate(estimator, value, float(low), float(high), n)
