"""ε-greedy: the best candidate with probability 1 − ε, a uniform one with probability ε (exact propensities)."""

from __future__ import annotations

import numpy as np

from nbm.arrays import append
from nbm.policy.explore.base import Explorer, greedy_probabilities, greedy_probabilities_batch


class EpsilonGreedy(Explorer):
    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"`epsilon` must lie in [0, 1], got {epsilon!r}")
        self.epsilon = epsilon

    def _probabilities(self, values: np.ndarray) -> np.ndarray:
        return (1.0 - self.epsilon) * greedy_probabilities(values) + self.epsilon / len(values)

    def probabilities_batch(self, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        sizes = np.diff(append(starts, len(values)))
        return ((1.0 - self.epsilon) * greedy_probabilities_batch(np.asarray(values, np.float64), starts)
                + self.epsilon / np.repeat(sizes, sizes))
