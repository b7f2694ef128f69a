"""The features of the hours around a send's local hour, and of the hour a person visits around, against a
naive count of the log."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.compute import NEAR_HOURS, NEAR_WEIGHTS, Candidates
from features.pipeline import FeatureStore
from nbm.config import NbmConfig

DAY = pd.Timedelta(days=1)


def test_near_hour_visit_share_and_visit_peak_equal_a_naive_count(dataset) -> None:
    config = NbmConfig.model_validate({"features": {"prior_strength": 5.0}})
    store = FeatureStore.build(dataset, config)
    events = dataset.events
    users = pd.Series(events.loc[events["event_type"] == "visit", "user_id"].value_counts().index[:25])
    zones = dataset.users.set_index("user_id")["timezone"]
    t = events["timestamp"].max() - 3 * DAY
    checked = 0
    for user in users:
        for hour in (0, 8, 13, 23):
            local_day = t.tz_convert(zones.get(user) or "UTC").normalize() + pd.Timedelta(days=1)
            send_at = (local_day + pd.Timedelta(hours=hour)).tz_convert("UTC")
            rows = Candidates(np.array([user], dtype=object), np.array([None], dtype=object),
                              np.array(["email"], dtype=object), np.array([t.value]), np.array([send_at.value]))
            got = store.featurise(rows).iloc[0]
            mine = events[(events["user_id"] == user) & (events["timestamp"] < t) & (events["timestamp"] >= t - 90 * DAY)]
            local = mine["timestamp"].dt.tz_convert(zones.get(user) or "UTC").dt.hour.to_numpy()
            distance = np.minimum(np.abs(local - hour), 24 - np.abs(local - hour))
            weight = np.where(distance <= NEAR_HOURS, NEAR_WEIGHTS[np.minimum(distance, NEAR_HOURS)], 0.0)
            kernel = NEAR_WEIGHTS[0] + 2 * NEAR_WEIGHTS[1:].sum()
            visits = (mine["event_type"] == "visit").to_numpy()
            share = (np.sum(weight * visits) / kernel + 5.0 / 24) / (visits.sum() + 5.0)
            assert got["uh_visit_share_near"] == np.float32(share) or abs(got["uh_visit_share_near"] - share) < 1e-6
            angle = 2 * np.pi * local[visits] / 24
            c, s_ = np.cos(angle).sum(), np.sin(angle).sum()
            peak = np.mod(np.degrees(np.arctan2(s_, c)) / 15, 24)
            assert abs(got["uh_hours_from_visit_peak"] - min(abs(hour - peak), 24 - abs(hour - peak))) < 1e-4
            assert abs(got["user_visit_hour_concentration"] - np.hypot(c, s_) / visits.sum()) < 1e-5
            checked += 1
    assert checked == 100
