"""Point-in-time aggregates: sums of event weights per key, queried as of any time, strictly before it.

Events are sorted by (key, time) once; a query (key, t) is a binary search for the first event of that key
at or after ``t``, and the cumulative sums before that position give every total over ``[−∞, t)``. A
window ``[t − w, t)`` is the difference of two such totals. Keys and times are packed into one int64
(``key · SPAN + milliseconds since base``) so a whole batch of queries is one ``np.searchsorted``.

Queries past the index's last event (the service's: ``now`` is after the loaded history) take a faster
path, exact too: every event of a key is then before ``t``, so the key's positions are fixed per key, and
a window's first position stays what it was at the last event until that event leaves the window. Those
positions and the time each stays valid until are computed once per key (:meth:`AsOfIndex.freeze`, or
lazily at the first such query); a query is then a few gathers, and only queries whose window has moved
past a key's first event are searched.
"""

from __future__ import annotations

import numpy as np

MS = 10**6
"""Nanoseconds per millisecond: times are handled in milliseconds."""
SPAN_BITS = 39
"""Milliseconds a key's segment can hold: 2^39 ms ≈ 17 years of history."""
SPAN = np.int64(1) << SPAN_BITS
MAX_KEYS = int(np.iinfo(np.int64).max >> SPAN_BITS)
NEVER = np.iinfo(np.int64).max


def ms_offset(times, base: int):
    """Whole milliseconds of ``times`` (ns) since ``base``, clamped to a key's segment: what the indexes
    compare. An event counts for a query when its offset is below the query's (strictly before it)."""
    return np.clip((times - base) // MS, 0, SPAN - 1)


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

    def __init__(self, keys: np.ndarray, times: np.ndarray, weights: dict[str, np.ndarray], base: int,
                 keep_times: bool = False) -> None:
        if len(keys) and (keys.min() < 0 or keys.max() >= MAX_KEYS):
            raise ValueError(f"keys must lie in [0, {MAX_KEYS}), got [{keys.min()}, {keys.max()}]")
        self.base = base
        packed = self._pack(keys.astype(np.int64), times.astype(np.int64))
        order = np.argsort(packed, kind="stable")
        self.packed = packed[order]
        # Times are kept only where `last_time` is asked; counts accumulate in int32 (exact, half the memory).
        self.times = times.astype(np.int64)[order] if keep_times else None
        self.cumulative = {name: _cumulative(np.asarray(w)[order]) for name, w in weights.items()}
        last_offset = int((self.packed & (SPAN - 1)).max()) if len(self.packed) else -1
        # From this instant on every event is strictly before the query time (in the packed milliseconds).
        self.after = base + (last_offset + 1) * MS
        self._segments: tuple[np.ndarray, np.ndarray] | None = None
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- queries past the last event ---------------------------------------------------------------
    def freeze(self, windows: tuple[int, ...] = ()) -> None:
        """Precompute the positions of every key for queries past the last event (and these windows)."""
        self._frozen_segments()
        for w in windows:
            self._frozen_window(int(w))

    def _frozen_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per key, the first and the end position of its events; one entry more for keys past the last."""
        if self._segments is None:
            n_keys = int(self.packed[-1] >> SPAN_BITS) + 1 if len(self.packed) else 0
            bounds = np.searchsorted(self.packed, np.arange(n_keys + 2, dtype=np.int64) * SPAN)
            self._segments = (bounds[:-1], bounds[1:])    # (a key past the last one: empty, at the end)
        return self._segments

    def _frozen_window(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Per key, the first position inside ``[t − window, t)`` for t from :attr:`after` on, and the
        instant from which that is no longer so (its first event has left the window)."""
        hit = self._windows.get(window)
        if hit is None:
            start, end = self._frozen_segments()
            keys = np.arange(len(start), dtype=np.int64)
            first = np.searchsorted(self.packed, self._pack(keys, np.full(len(keys), self.after - window)))
            has = first < end
            offset = self.packed[np.minimum(first, max(len(self.packed) - 1, 0))] & (SPAN - 1) if len(self.packed) \
                else np.zeros(len(keys), np.int64)
            # The event at offset o is inside while (t − window − base) // MS ≤ o.
            until = np.where(has, self.base + (offset + 1) * MS + window, NEVER)
            hit = self._windows[window] = (first, until)
        return hit

    def _frozen_positions(self, keys: np.ndarray, times: np.ndarray, windows: tuple[int | None, ...]
                          ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        seg_start, seg_end = self._frozen_segments()
        k = np.minimum(keys, len(seg_start) - 1)
        start, stop = seg_start[k], seg_end[k]
        firsts = []
        for w in windows:
            if w is None:
                firsts.append(start)
                continue
            first, until = self._frozen_window(int(w))
            f = first[k]
            moved = times >= until[k]
            if moved.any():                       # the window has left the key's first event: search those
                rows = np.flatnonzero(moved)
                f = f.copy()
                f[rows] = np.searchsorted(self.packed, self._pack(keys[rows], times[rows] - w), side="left")
            firsts.append(f)
        return start, stop, firsts

    def _pack(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        return keys * SPAN + ms_offset(times, self.base)

    def _search(self, packed: np.ndarray, order: np.ndarray) -> np.ndarray:
        """``searchsorted`` of queries visited in ``order`` (sorted queries search ~4× faster)."""
        out = np.empty(len(packed), dtype=np.int64)
        out[order] = np.searchsorted(self.packed, packed[order], side="left")
        return out

    def _positions(self, keys: np.ndarray, times: np.ndarray, windows: tuple[int | None, ...] = (None,),
                   dedupe: bool = True) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """First position of each key, first at or after ``times``, and first at or after ``times − w``."""
        keys, times = np.asarray(keys, dtype=np.int64), np.asarray(times, dtype=np.int64)   # (no copies)
        if not len(times) or times.min() >= self.after:     # (no queries: nothing to search)
            return self._frozen_positions(keys, times, windows)
        if dedupe and len(times) > 1 and times[0] == times[-1] and (times == times[0]).all():
            # One decision time (the candidates of a decision): search each distinct key once.
            if keys[0] == keys[-1] and (keys == keys[0]).all():      # one key too (user-level features)
                start, stop, firsts = self._positions(keys[:1], times[:1], windows, dedupe=False)
                n = len(keys)
                return (np.broadcast_to(start, (n,)), np.broadcast_to(stop, (n,)),
                        [np.broadcast_to(f, (n,)) for f in firsts])
            unique, inverse = np.unique(keys, return_inverse=True)
            start, stop, firsts = self._positions(unique, np.full(len(unique), times[0]), windows, dedupe=False)
            return start[inverse], stop[inverse], [f[inverse] for f in firsts]
        packed = self._pack(keys, times)
        # One sort serves every search: shifting all times by a constant (and clipping) keeps the order.
        order = np.argsort(packed, kind="stable")
        start = self._search(keys * SPAN, order)
        stop = self._search(packed, order)
        firsts = [start if w is None else self._search(self._pack(keys, times - w), order) for w in windows]
        return start, stop, firsts

    def total(self, keys: np.ndarray, times: np.ndarray, name: str, window_ns: int | None = None) -> np.ndarray:
        """Sum of weight ``name`` of the key's events in ``[t − window, t)`` (all before ``t`` without window)."""
        return self.totals(keys, times, (name,), window_ns)[name]

    def totals(self, keys: np.ndarray, times: np.ndarray, names: tuple[str, ...],
               window_ns: int | None = None) -> dict[str, np.ndarray]:
        """Several sums over one window at once."""
        return self.window_totals(keys, times, names, (window_ns,))[window_ns]

    def window_totals(self, keys: np.ndarray, times: np.ndarray, names: tuple[str, ...],
                      windows: tuple[int | None, ...]) -> dict[int | None, dict[str, np.ndarray]]:
        """Sums of ``names`` over several windows (``None``: all history) with one sort of the queries."""
        _, stop, firsts = self._positions(keys, times, windows)
        return {w: {n: self.cumulative[n][stop] - self.cumulative[n][first] for n in names}
                for w, first in zip(windows, firsts)}

    def last_time(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Time (ns) of the key's last event strictly before ``times``; NaN when none (float64)."""
        if self.times is None:
            raise ValueError("this index was built without `keep_times`")
        start, stop, _ = self._positions(keys, times, ())
        has = stop > start
        out = np.full(len(keys), np.nan)
        out[has] = self.times[stop[has] - 1]
        return out


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """Cumulative sums with a leading 0: int32 for counts that fit, float64 otherwise."""
    integral = weights.dtype == bool or (np.issubdtype(weights.dtype, np.integer)) or (
        len(weights) < 2**31 and np.array_equal(weights, np.round(weights)) and (weights >= 0).all())
    if integral and weights.sum() < 2**31 - 1:
        return np.concatenate([[0], np.cumsum(weights, dtype=np.int32)]).astype(np.int32)
    return np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])
