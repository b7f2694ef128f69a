"""Small array helpers shared by the core and the feature pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd


def distinct_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the code of its key among the distinct ``keys`` (int64, first-seen order); per distinct key,
    the index of one row that has it. A hash of ``keys``, not a sort."""
    codes, distinct = pd.factorize(keys)
    first = np.empty(len(distinct), dtype=np.int64)
    first[codes] = np.arange(len(keys))
    return codes.astype(np.int64), first


def prepend(value, values: np.ndarray) -> np.ndarray:
    """``np.r_[value, values]`` in ``values``' dtype, without ``np.r_``'s parsing (~10 µs a call, ~20 calls a
    decision)."""
    values = np.asarray(values)
    out = np.empty(len(values) + 1, dtype=values.dtype)
    out[0] = value
    out[1:] = values
    return out


def append(values: np.ndarray, value) -> np.ndarray:
    """``np.r_[values, value]`` in ``values``' dtype (see :func:`prepend`)."""
    values = np.asarray(values)
    out = np.empty(len(values) + 1, dtype=values.dtype)
    out[:-1] = values
    out[-1] = value
    return out


def run_starts(keys: np.ndarray) -> np.ndarray:
    """Positions where a run of equal ``keys`` starts: ``np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])``
    (``[0]`` for one key or more; empty for none)."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    return prepend(0, np.flatnonzero(keys[1:] != keys[:-1]) + 1)


class Spread:
    """A column given as ``values[index]`` without building it: a feature that many rows share.

    A campaign batch's ~150,000 candidate rows share ~500 users, ~1,500 (user, channel) pairs and 100
    messages; building each shared feature as a full column (56 columns × 150,000 rows, ~65 MB) costs more
    in memory traffic than computing it. Scoring fills its small row buffers straight from ``values``
    through ``index`` (:meth:`nbm.compiled.CompiledForest.predict_columns`), one gather per group of columns
    that share an ``index``. ``np.asarray(spread)`` builds the column: every other consumer sees an array.
    """

    __slots__ = ("values", "index")

    def __init__(self, values, index: np.ndarray) -> None:
        self.values = values          # a numpy array or a pandas Categorical: one entry per distinct key
        self.index = index            # int, per row: its entry in ``values``

    def __len__(self) -> int:
        return len(self.index)

    @property
    def dtype(self):
        return self.values.dtype

    def __getitem__(self, rows) -> np.ndarray:
        """The column's values at ``rows`` (an array)."""
        return np.asarray(self.values)[self.index[rows]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.asarray(self.values)[self.index]
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, rows: np.ndarray, cache: dict | None = None) -> Spread:
        """The column's ``rows`` (still spread); ``cache`` (by ``id`` of the index) keeps columns that shared
        an index sharing the new one."""
        if cache is None:
            return Spread(self.values, self.index[rows])
        key = id(self.index)
        if key not in cache:
            cache[key] = (self.index, self.index[rows])     # the old index kept alive: its id stays unique
        return Spread(self.values, cache[key][1])


def take(values, rows: np.ndarray, cache: dict | None = None):
    """``values[rows]`` for an array, a Categorical or a :class:`Spread` (which stays spread)."""
    if isinstance(values, Spread):
        return values.take(rows, cache)
    if isinstance(values, pd.Categorical):
        return values.take(rows)
    return np.asarray(values)[rows]


def bounded_search(times: np.ndarray, first: np.ndarray, last: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per query, the position of ``t`` within ``times[first:last]`` (sorted there), as an absolute index.

    A vectorised binary search: ~log2(run length) passes over all queries.
    """
    lo, hi = first.copy(), last.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        go_right = active & (times[np.minimum(mid, len(times) - 1)] < t)
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
