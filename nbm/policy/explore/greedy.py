"""Greedy: always the best expected value (ties split evenly). Propensity 1 unless tied."""

from __future__ import annotations

import numpy as np

from nbm.policy.explore.base import Explorer, greedy_probabilities


class Greedy(Explorer):
    name = "greedy"

    def _probabilities(self, values: np.ndarray) -> np.ndarray:
        return greedy_probabilities(values)
