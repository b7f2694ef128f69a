"""Point-in-time aggregates: sums of event weights per key, queried as of any time, strictly before it.

Events are sorted by (key, time) once; a query (key, t) is a binary search for the first event of that key
at or after ``t``, and the cumulative sums before that position give every total over ``[−∞, t)``. A
window ``[t − w, t)`` is the difference of two such totals. Keys and times are packed into one int64
(``key · SPAN + milliseconds since base``) so a whole batch of queries is one ``np.searchsorted``.
"""

from __future__ import annotations

import numpy as np

MS = 10**6
"""Nanoseconds per millisecond: times are handled in milliseconds."""
SPAN_BITS = 39
"""Milliseconds a key's segment can hold: 2^39 ms ≈ 17 years of history."""
SPAN = np.int64(1) << SPAN_BITS
MAX_KEYS = int(np.iinfo(np.int64).max >> SPAN_BITS)


class AsOfIndex:
    """Cumulative sums of named weights per integer key.

    Parameters
    ----------
    keys
        int64 key of each event, in ``[0, MAX_KEYS)``.
    times
        int64 nanoseconds since the epoch of each event.
    weights
        Named float arrays, one weight per event (a count is a weight of 1).
    base
        Nanoseconds origin shared by all indexes of one history (times before it are clamped).
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray, weights: dict[str, np.ndarray], base: int) -> None:
        if len(keys) and (keys.min() < 0 or keys.max() >= MAX_KEYS):
            raise ValueError(f"keys must lie in [0, {MAX_KEYS}), got [{keys.min()}, {keys.max()}]")
        self.base = base
        packed = self._pack(keys.astype(np.int64), times.astype(np.int64))
        order = np.argsort(packed, kind="stable")
        self.packed = packed[order]
        self.times = times.astype(np.int64)[order]
        self.cumulative = {name: np.concatenate([[0.0], np.cumsum(np.asarray(w, dtype=np.float64)[order])])
                           for name, w in weights.items()}

    def _pack(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        offset = np.clip((times - self.base) // MS, 0, SPAN - 1)
        return keys * SPAN + offset

    def _positions(self, keys: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of the key's first event, and of its first event at or after ``times``."""
        keys = keys.astype(np.int64)
        start = np.searchsorted(self.packed, keys * SPAN, side="left")
        stop = np.searchsorted(self.packed, self._pack(keys, times.astype(np.int64)), side="left")
        return start, stop

    def total(self, keys: np.ndarray, times: np.ndarray, name: str, window_ns: int | None = None) -> np.ndarray:
        """Sum of weight ``name`` of the key's events in ``[t − window, t)`` (all before ``t`` without window)."""
        cum = self.cumulative[name]
        start, stop = self._positions(keys, times)
        if window_ns is None:
            return cum[stop] - cum[start]
        _, first = self._positions(keys, times - window_ns)
        return cum[stop] - cum[first]

    def totals(self, keys: np.ndarray, times: np.ndarray, names: tuple[str, ...],
               window_ns: int | None = None) -> dict[str, np.ndarray]:
        """Several sums at once (one search for all of them)."""
        start, stop = self._positions(keys, times)
        first = start if window_ns is None else self._positions(keys, times - window_ns)[1]
        return {n: self.cumulative[n][stop] - self.cumulative[n][first] for n in names}

    def last_time(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Time (ns) of the key's last event strictly before ``times``; NaN when none (float64)."""
        start, stop = self._positions(keys, times)
        has = stop > start
        out = np.full(len(keys), np.nan)
        out[has] = self.times[stop[has] - 1]
        return out
