"""Greedy: always the best expected value (ties split evenly). Propensity 1 unless tied."""

from __future__ import annotations

import numpy as np

from nbm.policy.explore.base import Explorer, greedy_probabilities, greedy_probabilities_batch


class Greedy(Explorer):
    name = "greedy"

    def _probabilities(self, values: np.ndarray) -> np.ndarray:
        return greedy_probabilities(values)

    def probabilities_batch(self, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        return greedy_probabilities_batch(np.asarray(values, np.float64), starts)
