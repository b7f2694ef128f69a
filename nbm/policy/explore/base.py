"""The explorer's shared base: validate, ask the subclass for probabilities, draw, return the propensity.

An explorer turns the expected values of one decision's candidates into a choice and the exact probability
of that choice (its propensity), so that the next model can be evaluated off-policy on the log. Subclasses
write :meth:`Explorer._probabilities`; an explorer whose probabilities have no closed form (Thompson
sampling) overrides :meth:`Explorer._choose` and states the error of its estimate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Choice:
    """The chosen candidate (position), the probability it was chosen with, and that probability's error."""

    index: int
    propensity: float
    propensity_error: float = 0.0


@dataclass(frozen=True)
class Arms:
    """Beta posteriors of the candidates' arms (successes and failures from feedback), aligned with values."""

    successes: np.ndarray
    failures: np.ndarray


class Explorer(ABC):
    """Base class; see the module docstring."""

    name: str = "explorer"

    def choose(self, values: np.ndarray, rng: np.random.Generator, arms: Arms | None = None) -> Choice:
        """Choose one of ``values`` (expected values of the candidates; higher is better)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or not len(values):
            raise ValueError(f"`values` must be a non-empty 1-d array, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("`values` must be finite")
        return self._choose(values, rng, arms)

    def _choose(self, values: np.ndarray, rng: np.random.Generator, arms: Arms | None) -> Choice:
        p = self._probabilities(values)
        index = int(rng.choice(len(values), p=p))
        return Choice(index, float(p[index]))

    def probabilities(self, values: np.ndarray) -> np.ndarray:
        """The exact probability of choosing each candidate (for explorers that have one)."""
        return self._probabilities(np.asarray(values, dtype=np.float64))

    @abstractmethod
    def _probabilities(self, values: np.ndarray) -> np.ndarray: ...


def greedy_probabilities(values: np.ndarray) -> np.ndarray:
    """All mass on the best value; ties share it equally (so the propensity stays exact)."""
    best = values == values.max()
    return best / best.sum()
