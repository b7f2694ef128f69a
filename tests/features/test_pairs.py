"""Candidates as (message, channel) pairs with a slot mask (features/pairs.py) against the row-by-row forms."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.candidates import expand
from features.pairs import Pairs, expand_pairs
from features.pipeline import FeatureStore
from features.replay import reference_slots, top_per_group

HOUR = 3_600 * 10**9


def test_pairs_expand_to_every_candidate_expand_finds(dataset, config) -> None:
    """``expand_pairs(...).expanded()`` equals the one-user ``expand`` decision by decision, in its order."""
    store = FeatureStore.build(dataset, config)
    rng = np.random.default_rng(4)
    users = np.append(dataset.users["user_id"].to_numpy(dtype=object)[rng.integers(0, len(dataset.users), 25)],
                      "never-seen")
    t0 = int(dataset.events["timestamp"].quantile(0.7).value)
    now = t0 + rng.integers(0, 96, len(users)) * HOUR // 2
    pairs = expand_pairs(store, users, now)
    ex, p, s = pairs.expanded()
    assert len(ex) > 500 and (np.diff(pairs.group) >= 0).all()
    for i, (user, t) in enumerate(zip(users, now)):
        one = expand(store, user, pd.Timestamp(int(t), tz="UTC"))
        rows = ex.group == i
        for field in ("message_id", "channel", "send_at", "as_of"):
            assert np.asarray(getattr(ex.rows, field))[rows].tolist() == np.asarray(getattr(one, field)).tolist(), field
    # Back from rows to pairs: the same pairs and slot masks, and each row's pair.
    again, p_again = Pairs.of_rows(store, ex)
    for field in ("group", "message_code", "channel_code", "value", "ok"):
        np.testing.assert_array_equal(getattr(again, field), getattr(pairs, field))
    np.testing.assert_array_equal(p_again, p)


def test_top_per_group_equals_a_stable_sort_per_group_with_positive_ties_kept() -> None:
    """The k best of each group against sorting each group on its own: every row tied with the k-th value
    is kept when that value is positive; at a value ≤ 0 ties go to the earlier row, k in all."""
    rng = np.random.default_rng(2)
    for k in (1, 3, 7):
        for levels in ([0.1, 0.2, 0.3, 0.5, np.nan], [0.0, 0.0, 0.3, 0.5, np.nan], [-0.1, 0.0, 0.0, 0.2, np.nan]):
            group = np.sort(rng.integers(0, 40, 900))
            value = rng.choice(levels, len(group), p=[0.3, 0.3, 0.2, 0.15, 0.05])
            expected = np.zeros(len(group), dtype=bool)
            for g in np.unique(group):
                rows = np.flatnonzero(group == g)
                key = np.where(np.isnan(value[rows]), -np.inf, value[rows])
                ranked = rows[np.argsort(-key, kind="stable")]
                expected[ranked[:k]] = True
                if len(rows) > k and key.max() > -np.inf:
                    kth = np.sort(key)[::-1][k - 1]
                    if kth > 0:
                        expected[rows[key == kth]] = True
            got = top_per_group(group, value, k)
            np.testing.assert_array_equal(got, expected)
            if levels[0] > 0:                 # positive ties at the k-th value are common here: kept, more than k
                assert (np.bincount(group, weights=got) > k).any()


def test_reference_slots_are_the_allowed_slot_nearest_the_middle_first_on_a_tie() -> None:
    """Against a row-by-row search, for widths on both sides of the one-byte table (1–8 slots, then 9–10)."""
    rng = np.random.default_rng(12)
    for width in range(1, 11):
        allowed = rng.random((400, width)) < rng.uniform(0.05, 0.9)
        middle = rng.integers(0, width // 2 + 1, 400)
        live, slot = reference_slots(allowed, middle)
        expected_live = [i for i in range(400) if allowed[i].any()]
        expected = [min(np.flatnonzero(allowed[i]), key=lambda s, m=middle[i]: (abs(s - m), s)) for i in expected_live]
        np.testing.assert_array_equal(live, expected_live)
        np.testing.assert_array_equal(slot, expected)
    live, slot = reference_slots(np.zeros((0, 6), bool), np.zeros(0, np.int64))
    assert len(live) == len(slot) == 0


def test_slot_matrix_of_few_decisions_equals_the_grouped_path(monkeypatch) -> None:
    import features.pairs
    from features.pairs import slot_matrix

    rng = np.random.default_rng(5)
    zones = np.array(["Europe/Berlin", "Asia/Tokyo", "America/New_York", "UTC"], dtype=object)[rng.integers(0, 4, 12)]
    now = pd.Timestamp("2026-10-24T18:00:00Z").value + rng.integers(0, 48, 12) * 1_800 * 10**9   # across a DST end
    few = slot_matrix(now, zones, (9, 12, 18), 30.0)
    monkeypatch.setattr(features.pairs, "FEW_DECISIONS", 0)
    np.testing.assert_array_equal(few, slot_matrix(now, zones, (9, 12, 18), 30.0))
