"""Softmax: probability ∝ exp(value / temperature); values are scaled by their largest magnitude first.

Scaling makes ``temperature`` unit-free: 0.1 is sharp, 1 mild, whatever the currency of the values.
"""

from __future__ import annotations

import numpy as np

from nbm.policy.explore.base import Explorer


class Softmax(Explorer):
    name = "softmax"

    def __init__(self, temperature: float = 0.2) -> None:
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive, got {temperature!r}")
        self.temperature = temperature

    def _probabilities(self, values: np.ndarray) -> np.ndarray:
        scale = np.abs(values).max() or 1.0
        z = (values - values.max()) / (scale * self.temperature)
        e = np.exp(z)
        return e / e.sum()
