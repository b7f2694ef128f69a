"""Softmax: probability ∝ exp(value / temperature); values are scaled by their largest magnitude first.

Scaling makes ``temperature`` unit-free: 0.1 is sharp, 1 mild, whatever the currency of the values.
"""

from __future__ import annotations

import numpy as np

from nbm.policy.explore.base import Explorer, segment_max, segment_sum


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

    def probabilities_batch(self, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        values = np.asarray(values, np.float64)
        scale = segment_max(np.abs(values), starts)
        scale = np.where(scale > 0, scale, 1.0)
        e = np.exp((values - segment_max(values, starts)) / (scale * self.temperature))
        return e / segment_sum(e, starts)
