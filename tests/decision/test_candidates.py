"""Candidates of one decision (decision/candidates.py): slots within the horizon, eligibility rules, new users."""

from __future__ import annotations

import numpy as np
import pandas as pd

from decision.candidates import expand, slot_times
from features.pipeline import FeatureStore


def test_slots_are_local_hours_within_the_horizon() -> None:
    now = pd.Timestamp("2026-10-10T07:30:00Z").value
    slots = slot_times(now, "Asia/Tokyo", (8, 12, 21), 24.0)
    local = pd.to_datetime(slots, utc=True).tz_convert("Asia/Tokyo")
    assert set(local.hour) <= {8, 12, 21}
    assert ((slots > now) & (slots <= now + 24 * 3_600 * 10**9)).all()
    assert len(slots) == 3


def test_candidates_respect_consent_unsubscribes_targeting_and_live_windows(dataset, config) -> None:
    store = FeatureStore.build(dataset, config)
    now = dataset.events["timestamp"].max()
    users = dataset.users.set_index("user_id")
    lost = dataset.events[dataset.events["event_type"].isin(["unsubscribe", "bounce"])]
    lost = set(zip(lost["user_id"], lost["channel"]))
    messages = dataset.messages.set_index("message_id")
    for user_id in dataset.users["user_id"].iloc[:40]:
        rows = expand(store, user_id, now)
        frame = pd.DataFrame(rows.__dict__)
        if not len(frame):
            continue
        assert frame["channel"].isin(users.loc[user_id, "consent"]).all()
        assert not any((user_id, c) in lost for c in frame["channel"].unique())
        allowed = messages.loc[frame["message_id"], "channels"].to_numpy()
        assert all(c in a for c, a in zip(frame["channel"], allowed))
        start = messages.loc[frame["message_id"], "start_at"].to_numpy()
        end = messages.loc[frame["message_id"], "end_at"]
        sent = pd.to_datetime(frame["send_at"], utc=True).to_numpy()
        assert (pd.isna(start) | (start <= sent)).all() and (end.isna().to_numpy() | (sent < end.to_numpy())).all()
        stage = store.featurise(rows)["user_lifecycle_stage"].iloc[0]
        stage_name = ("new", "active", "at_risk", "dormant")[stage]
        targets = messages.loc[frame["message_id"], "lifecycle_stages"]
        assert all(not t or stage_name in t for t in targets)
    some = expand(store, dataset.users["user_id"].iloc[0], now, channels=["email"])
    assert set(some.channel) <= {"email"}


def test_unknown_user_is_a_new_user_without_consent(dataset, config) -> None:
    store = FeatureStore.build(dataset, config)
    rows = expand(store, "nobody-knows-me", dataset.events["timestamp"].max())
    assert len(rows) == 0  # no consent recorded: nothing may be sent
    now = np.array([dataset.events["timestamp"].max().value])
    frame = store.featurise(type(rows)(np.array(["nobody"], dtype=object), np.array(["m001"], dtype=object),
                                       np.array(["email"], dtype=object), now, now))
    assert frame["user_visits_30d"].iloc[0] == 0 and frame["uc_sends_30d"].iloc[0] == 0
