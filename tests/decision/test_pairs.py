"""Candidates as (message, channel) pairs with a slot mask (decision/pairs.py) against the row-by-row forms."""

from __future__ import annotations

import numpy as np
import pandas as pd

from decision.candidates import expand
from decision.pairs import expand_pairs, Pairs
from features.pipeline import FeatureStore
from decision.scoring import reference_slots, top_per_group

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
    import decision.candidates
    from decision.candidates import slot_matrix

    rng = np.random.default_rng(5)
    zones = np.array(["Europe/Berlin", "Asia/Tokyo", "America/New_York", "UTC"], dtype=object)[rng.integers(0, 4, 12)]
    now = pd.Timestamp("2026-10-24T18:00:00Z").value + rng.integers(0, 48, 12) * 1_800 * 10**9   # across a DST end
    few = slot_matrix(now, zones, (9, 12, 18), 30.0)
    monkeypatch.setattr(decision.candidates, "FEW_DECISIONS", 0)
    np.testing.assert_array_equal(few, slot_matrix(now, zones, (9, 12, 18), 30.0))


def test_out_of_quiet_hours_equals_shifting_each_decisions_slots_then_merging_equal_ones() -> None:
    """Against ``shift_quiet_hours`` on each decision's slots, then the distinct instants in order; quiet
    hours that wrap midnight or not, zones on both sides of a DST end, and none (``start == end``)."""
    from decision.candidates import out_of_quiet_hours
    from decision.candidates import slot_matrix
    from nbm.config import ContactPolicyConfig
    from nbm.policy.contact import shift_quiet_hours

    rng = np.random.default_rng(8)
    zones = np.array(["Europe/Berlin", "Asia/Tokyo", "America/New_York", "UTC"], dtype=object)[rng.integers(0, 4, 60)]
    now = pd.Timestamp("2026-10-24T18:00:00Z").value + rng.integers(0, 96, 60) * 1_800 * 10**9
    slots = slot_matrix(now, zones, (6, 8, 10, 12, 15, 18, 21, 23), 36.0)
    merged = 0
    for start, end in ((21, 8), (22, 7), (1, 5), (9, 9)):
        policy = ContactPolicyConfig(quiet_hours_start=start, quiet_hours_end=end)
        got = out_of_quiet_hours(slots, zones, policy)
        for i in range(len(now)):
            mine = slots[i][slots[i] >= 0]
            expected = np.unique(shift_quiet_hours(mine, str(zones[i]), start, end)) if start != end else mine
            row = got[i][got[i] >= 0]
            np.testing.assert_array_equal(row, expected)
            assert (got[i][len(row):] == -1).all()
            merged += len(mine) - len(row)
        if start == end:
            assert got is slots
    assert merged > 100                  # slots did land on the same instant: the merge was exercised


def test_a_slot_the_quiet_hours_move_past_the_messages_end_is_not_a_candidate(dataset, config) -> None:
    """Every message ends at 23:00 local of the day of the decision (14:00 local): the 21:00 slot moves to
    08:00 the next day, after the end, so only the 15:00 and 18:00 slots are candidates — in ``expand_pairs``
    and the one-user ``expand`` alike — and every candidate's send time is out of quiet hours."""
    import dataclasses

    users = dataset.users[dataset.users["consent"].map(len) > 0]
    user, zone = users["user_id"].iloc[0], str(users["timezone"].iloc[0])
    day = pd.Timestamp("2026-10-28", tz=zone)
    now, end = (day + pd.Timedelta(hours=14)).tz_convert("UTC"), (day + pd.Timedelta(hours=23)).tz_convert("UTC")
    messages = dataset.messages.assign(end_at=end)
    messages["start_at"] = messages["start_at"].where(messages["start_at"] <= now, now)
    store = FeatureStore.build(dataclasses.replace(dataset, messages=messages), config)
    ex, _, _ = expand_pairs(store, np.array([user], dtype=object), np.array([now.value])).expanded()
    one = expand(store, user, now)
    assert len(ex) > 10
    for send in (np.asarray(ex.rows.send_at), np.asarray(one.send_at)):
        local = pd.to_datetime(send, utc=True).tz_convert(zone)
        assert set(local.hour) == {15, 18}, sorted(set(local.hour))
        assert (send < end.value).all()
