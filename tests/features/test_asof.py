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


def test_queries_past_the_last_event_match_a_naive_scan_as_windows_slide() -> None:
    """The fast path for queries after every event (the service's): exact for every window, as the window
    leaves a key's first events (query times on both sides of each such instant), for unseen keys, and with
    times that are not on the millisecond grid."""
    rng = np.random.default_rng(11)
    n, base = 3000, 1_700_000_000 * 10**9
    keys = rng.integers(0, 40, n)
    times = base + rng.integers(0, 10**7, n) * 10**5      # 0.1 ms grid: the index keeps milliseconds
    weights = rng.random(n)
    index = AsOfIndex(keys, times, {"w": weights, "n": np.ones(n)}, base, keep_times=True)
    assert index.after > times.max()
    window = 2 * 10**5 * MS
    # Instants at which some event leaves the window, and points around them (all past the last event).
    # Each asked for the key of the event that leaves.
    late = times + window >= index.after
    leave, leave_keys = times[late] + window, keys[late]
    around = np.concatenate([leave + d for d in (-1, 0, 1, MS - 1, MS, -MS)])
    qt = np.concatenate([np.full(200, index.after), index.after + rng.integers(0, 3 * window, 300), around])
    qk = np.concatenate([rng.integers(0, 43, 500), np.tile(leave_keys, 6)])    # keys 40–42 were never seen
    qk, qt = qk[qt >= index.after], qt[qt >= index.after]
    ms_times = times // MS * MS                            # what the index resolves
    got = index.window_totals(qk, qt, ("w", "n"), (None, window, 7 * window))
    for w in (None, window, 7 * window):
        expect = _naive(keys, ms_times, weights, qk, qt // MS * MS, w)
        np.testing.assert_allclose(got[w]["w"], expect, rtol=0, atol=1e-9)
    last = index.last_time(qk, qt)
    for k in range(43):
        on = qk == k
        if (keys == k).any():
            assert (last[on] == times[keys == k].max()).all()
        else:
            assert np.isnan(last[on]).all()
    frozen = index.window_totals(qk, qt, ("n",), (window,))[window]["n"]
    slow = AsOfIndex(keys, times, {"n": np.ones(n)}, base)
    slow.after = np.iinfo(np.int64).max                    # the general path only
    np.testing.assert_array_equal(frozen, slow.window_totals(qk, qt, ("n",), (window,))[window]["n"])


def test_queries_before_the_last_event_take_the_general_path() -> None:
    index = AsOfIndex(np.array([1, 1, 2]), np.array([10 * MS, 20 * MS, 30 * MS]), {"n": np.ones(3)}, 0)
    index.freeze((5 * MS,))
    assert index.after == 31 * MS
    at = np.array([15 * MS, 31 * MS, 40 * MS, 24 * MS])
    assert index.total(np.array([1, 1, 1, 1]), at, "n").tolist() == [1, 2, 2, 2]
    assert index.total(np.array([1, 1, 2, 2]), np.array([21 * MS, 26 * MS, 31 * MS, 36 * MS]), "n", 5 * MS
                       ).tolist() == [1, 0, 1, 0]


def test_freeze_precomputes_the_windows_the_features_query(dataset, config) -> None:
    """A frozen store answers the service's first request without computing a window (and only those)."""
    from features.pipeline import FeatureStore

    store = FeatureStore.build(dataset, config).freeze()
    frozen = {id(index): set(index._windows) for index in store.history.indexes()}
    rows = _candidates_after(dataset, store)
    store.featurise(rows)
    after = {id(index): set(index._windows) for index in store.history.indexes()}
    assert after == frozen
    assert sum(len(w) for w in frozen.values()) == 4 + 3 + 5     # user_channel, user, five 90-day indexes


def _candidates_after(dataset, store):
    from features.compute import Candidates

    users = dataset.users["user_id"].to_numpy(dtype=object)[:20]
    messages = dataset.messages["message_id"].to_numpy(dtype=object)
    t = int(dataset.events["timestamp"].max().value) + 3_600 * 10**9
    n = len(users) * len(messages)
    return Candidates(np.repeat(users, len(messages)), np.tile(messages, len(users)),
                      np.full(n, "email", dtype=object), np.full(n, t, dtype=np.int64),
                      np.full(n, t + 7_200 * 10**9, dtype=np.int64))
