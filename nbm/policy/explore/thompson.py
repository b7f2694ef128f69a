"""Thompson sampling over Beta posteriors of each candidate's arm (message × channel), weighted by value.

Each candidate's success rate is drawn from Beta(1 + successes, 1 + failures); the candidate with the best
draw × value wins, so (message, channel) pairs with few impressions get tried. The propensity has no closed form: it is the
share of ``samples`` fresh posterior draws in which the chosen candidate wins, with its binomial standard
error reported in ``Choice.propensity_error`` (≤ 0.5 / √samples).
"""

from __future__ import annotations

import numpy as np

from nbm.policy.explore.base import Choice, Explorer, ThompsonStatistics


class Thompson(Explorer):
    name = "thompson"

    def __init__(self, samples: int = 2000) -> None:
        if samples < 1:
            raise ValueError(f"`samples` must be at least 1, got {samples!r}")
        self.samples = samples

    def _choose(self, values: np.ndarray, rng: np.random.Generator, statistics: ThompsonStatistics | None) -> Choice:
        statistics = statistics or ThompsonStatistics(np.zeros(len(values)), np.zeros(len(values)))
        a, b = 1.0 + np.asarray(statistics.successes, float), 1.0 + np.asarray(statistics.failures, float)
        index = int(np.argmax(rng.beta(a, b) * values))
        wins = np.argmax(rng.beta(a, b, size=(self.samples, len(values))) * values, axis=1) == index
        p = float(wins.mean())
        # The chosen index won at least once (its own draw); keep the propensity strictly positive.
        p = max(p, 1.0 / (self.samples + 1))
        return Choice(index, p, float(np.sqrt(p * (1 - p) / self.samples)))

    def _probabilities(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError("Thompson sampling has no closed-form probabilities; see `Choice.propensity`")
