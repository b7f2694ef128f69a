"""The as-of index against a naive scan: sums of events strictly before t, and within windows."""

from __future__ import annotations

import numpy as np

from features.asof import MS, AsOfIndex
from features.keys import KeyedIndex


def _naive(keys, times, weights, qk, qt, window=None):
    out = np.zeros(len(qk))
    for i, (k, t) in enumerate(zip(qk, qt)):
        low = -np.inf if window is None else t - window
        mask = (keys == k) & (times < t) & (times >= low)
        out[i] = weights[mask].sum()
    return out


def test_totals_and_windows_match_a_naive_scan() -> None:
    rng = np.random.default_rng(5)
    n, base = 4000, 1_700_000_000 * 10**9
    keys = rng.integers(0, 50, n)
    times = base + rng.integers(0, 10**6, n) * MS  # millisecond grid, with ties
    weights = rng.random(n)
    index = AsOfIndex(keys, times, {"w": weights}, base, keep_times=True)
    qk = rng.integers(0, 52, 500)  # some keys never seen
    qt = np.concatenate([times[rng.integers(0, n, 250)], base + rng.integers(0, 10**6, 250) * MS])
    np.testing.assert_allclose(index.total(qk, qt, "w"), _naive(keys, times, weights, qk, qt))
    window = 5 * 10**4 * MS
    np.testing.assert_allclose(index.total(qk, qt, "w", window), _naive(keys, times, weights, qk, qt, window))
    last = index.last_time(qk, qt)
    for k, t, got in zip(qk[:100], qt[:100], last[:100]):
        before = times[(keys == k) & (times < t)]
        assert (np.isnan(got) and not len(before)) or got == before.max()


def test_an_event_at_the_query_time_is_not_seen() -> None:
    base = 0
    index = AsOfIndex(np.array([1, 1]), np.array([10 * MS, 20 * MS]), {"n": np.ones(2)}, base)
    assert index.total(np.array([1, 1, 1]), np.array([10 * MS, 11 * MS, 21 * MS]), "n").tolist() == [0, 1, 2]


def test_keyed_index_returns_zero_for_unseen_keys() -> None:
    index = KeyedIndex(np.array([10**12, 7]), np.array([5 * MS, 5 * MS]), {"n": np.ones(2)}, 0, keep_times=True)
    totals = index.totals(np.array([10**12, 8, 7]), np.full(3, 6 * MS))["n"]
    assert totals.tolist() == [1, 0, 1]
    assert np.isnan(index.last_time(np.array([8]), np.array([6 * MS]))[0])
