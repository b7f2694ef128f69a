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

from nbm.arrays import append, prepend


@dataclass(frozen=True)
class Choice:
    """The chosen candidate (position), the probability it was chosen with, and that probability's error."""

    index: int
    propensity: float
    propensity_error: float = 0.0


@dataclass(frozen=True)
class ThompsonStatistics:
    """Thompson sampling's Beta posterior counts of each candidate's (message, channel): successes and failures
    from feedback, aligned with the values. (Not an experiment's arm: that word is the A/B test's.)"""

    successes: np.ndarray
    failures: np.ndarray

    def take(self, index) -> ThompsonStatistics:
        """The counts of the candidates ``index`` (positions, a slice or a mask)."""
        return ThompsonStatistics(np.asarray(self.successes)[index], np.asarray(self.failures)[index])


class Explorer(ABC):
    """Base class; see the module docstring."""

    name: str = "explorer"

    def choose(self, values: np.ndarray, rng: np.random.Generator,
               statistics: ThompsonStatistics | None = None) -> Choice:
        """Choose one of ``values`` (expected values of the candidates; higher is better)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or not len(values):
            raise ValueError(f"`values` must be a non-empty 1-d array, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("`values` must be finite")
        return self._choose(values, rng, statistics)

    def _choose(self, values: np.ndarray, rng: np.random.Generator, statistics: ThompsonStatistics | None) -> Choice:
        p = self._probabilities(values)
        index = int(rng.choice(len(values), p=p))
        return Choice(index, float(p[index]))

    def choose_batch(self, values: np.ndarray, starts: np.ndarray, rng: np.random.Generator,
                     statistics: ThompsonStatistics | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Choose once in each segment ``values[starts[i]:starts[i+1]]`` (one segment per decision).

        Returns the chosen positions (into ``values``), their propensities and the propensities' errors.
        Explorers with closed-form probabilities draw every segment at once; the others loop.
        """
        values = np.asarray(values, dtype=np.float64)
        starts = np.asarray(starts, dtype=np.int64)
        if not len(starts):
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        if not np.isfinite(values).all():
            raise ValueError("`values` must be finite")
        ends = append(starts[1:], len(values))
        try:
            p = self.probabilities_batch(values, starts)
        except NotImplementedError:
            picks = [self._choose(values[a:b], rng, None if statistics is None else statistics.take(slice(a, b)))
                     for a, b in zip(starts, ends)]
            return (starts + np.array([c.index for c in picks], np.int64), np.array([c.propensity for c in picks]),
                    np.array([c.propensity_error for c in picks]))
        # Inverse CDF within each segment: one uniform per decision.
        cumulative = np.cumsum(p)
        before = prepend(0.0, cumulative)[starts]
        total = cumulative[ends - 1] - before
        target = before + rng.random(len(starts)) * total
        index = np.searchsorted(cumulative, target, side="right")
        index = np.clip(index, starts, ends - 1)
        # Never land on a zero-probability candidate through rounding at a segment's edge.
        zero = p[index] == 0
        if zero.any():
            for i in np.flatnonzero(zero):
                seg = np.arange(starts[i], ends[i])
                index[i] = seg[np.argmax(p[seg])]
        return index, p[index], np.zeros(len(starts))

    def probabilities_batch(self, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """:meth:`probabilities` of every segment, concatenated (a loop unless a subclass vectorises it)."""
        ends = append(starts[1:], len(values))
        return np.concatenate([self._probabilities(values[a:b]) for a, b in zip(starts, ends)]) if len(values) else values

    def probabilities(self, values: np.ndarray) -> np.ndarray:
        """The exact probability of choosing each candidate (for explorers that have one)."""
        return self._probabilities(np.asarray(values, dtype=np.float64))

    @abstractmethod
    def _probabilities(self, values: np.ndarray) -> np.ndarray: ...


def segment_max(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each candidate's segment maximum (aligned with ``values``)."""
    ends = append(starts[1:], len(values))
    return np.repeat(np.maximum.reduceat(values, starts), ends - starts)


def segment_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    ends = append(starts[1:], len(values))
    return np.repeat(np.add.reduceat(values, starts), ends - starts)


def greedy_probabilities_batch(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    best = (values == segment_max(values, starts)).astype(np.float64)
    return best / segment_sum(best, starts)


def greedy_probabilities(values: np.ndarray) -> np.ndarray:
    """All mass on the best value; ties share it equally (so the propensity stays exact)."""
    best = values == values.max()
    return best / best.sum()
