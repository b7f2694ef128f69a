"""Keys of the feature entities, and as-of indexes keyed by them.

Composite keys (user × message, user × hour …) are packed into one int64 (``a · n_b + b``) and then
made dense over the pairs that occur in the history, so an :class:`~features.asof.AsOfIndex` stays small
whatever the number of possible pairs. A query for a pair the history never saw returns zeros.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.asof import AsOfIndex


def pair(a: np.ndarray, b: np.ndarray, n_b: int) -> np.ndarray:
    """One int64 per (a, b) pair; ``b`` in ``[0, n_b)``."""
    return a.astype(np.int64) * np.int64(n_b) + b.astype(np.int64)


class KeyedIndex:
    """An :class:`AsOfIndex` over sparse int64 keys (for instance packed pairs)."""

    def __init__(self, keys: np.ndarray, times: np.ndarray, weights: dict[str, np.ndarray], base: int,
                 keep_times: bool = False) -> None:
        codes, vocabulary = pd.factorize(keys.astype(np.int64), sort=True)  # hash table in C, then sorted
        self.vocabulary = np.asarray(vocabulary, dtype=np.int64)              # sorted: lookups are binary searches
        self.index = AsOfIndex(codes.astype(np.int64), times, weights, base, keep_times)
        self.names = tuple(weights)

    def dense(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The index's own code of each key, and whether the history saw it: what every query looks up
        first (a binary search in the sorted vocabulary); a caller that asks twice about the same keys
        passes it to both queries."""
        if not len(self.vocabulary):
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        dense = np.minimum(np.searchsorted(self.vocabulary, keys), len(self.vocabulary) - 1)
        return dense, self.vocabulary[dense] == keys

    def totals(self, keys: np.ndarray, times: np.ndarray, names: tuple[str, ...] | None = None,
               window_ns: int | None = None, dense: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Sums over ``[t − window, t)`` per query; zeros for keys the history never saw. ``dense``: what
        :meth:`dense` gave for ``keys``."""
        dense, known = self.dense(keys) if dense is None else dense
        out = self.index.totals(dense, times, names or self.names, window_ns)
        return {name: np.where(known, values, 0.0) for name, values in out.items()}

    def window_totals(self, keys: np.ndarray, times: np.ndarray, names: tuple[str, ...],
                      windows: tuple[int | None, ...], dense: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> dict[int | None, dict[str, np.ndarray]]:
        """Sums over several windows with one sort of the queries; zeros for unseen keys (``dense``: see
        :meth:`totals`)."""
        dense, known = self.dense(keys) if dense is None else dense
        out = self.index.window_totals(dense, times, names, windows)
        return {w: {n: np.where(known, v, 0.0) for n, v in d.items()} for w, d in out.items()}

    def last_time(self, keys: np.ndarray, times: np.ndarray,
                  dense: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Last event time (ns, float) before each query time; NaN when none. ``dense``: see :meth:`totals`."""
        dense, known = self.dense(keys) if dense is None else dense
        return np.where(known, self.index.last_time(dense, times), np.nan)
