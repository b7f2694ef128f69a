"""The training set: one row per logged send, graded labels attributed per DESIGN.md."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nbm.attribution import attribute, send_outcomes
from features.pipeline import FeatureStore
from nbm.config import AttributionConfig, NbmConfig


def _events(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["event_id", "timestamp", "user_id", "event_type", "message_id", "channel",
                                        "decision_id", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return frame


def test_attribution_by_decision_id_then_by_window() -> None:
    events = _events([
        ["s1", "2026-10-01T09:00Z", "u1", "send", "m1", "email", "d1", np.nan],
        ["s2", "2026-10-01T09:00Z", "u2", "send", "m1", "email", "d2", np.nan],
        ["o1", "2026-10-01T10:00Z", "u1", "open", "m1", "email", "d1", np.nan],       # by decision id
        ["c1", "2026-10-01T10:05Z", "u1", "click", "m1", "email", None, np.nan],     # by window: s1
        ["s3", "2026-10-02T09:00Z", "u1", "send", "m1", "email", "d3", np.nan],
        ["v1", "2026-10-03T09:00Z", "u1", "convert", "m1", "email", None, 30.0],      # latest send: s3
        ["o2", "2026-10-08T09:00Z", "u2", "open", "m1", "email", None, np.nan],      # 7 days after s2: too late
        ["v2", "2026-10-07T09:00Z", "u2", "convert", "m1", "email", None, 12.0],      # within 7 days of s2
        ["o3", "2026-10-01T11:00Z", "u2", "open", "m2", "email", None, np.nan],      # other message: none
    ])
    sends = attribute(events, AttributionConfig())
    assert sends.tolist() == [0, 1, 0, 0, 4, 4, -1, 1, -1]
    outcomes = send_outcomes(events, sends)
    assert outcomes["label"].to_dict() == {0: 2, 1: 3, 4: 3}
    assert outcomes["revenue"].to_dict() == {0: 0.0, 1: 12.0, 4: 30.0}
    shorter = attribute(events, AttributionConfig(convert_days=3))
    assert shorter.tolist()[7] == -1


def test_training_set_rows_labels_and_groups(dataset, config) -> None:
    train = FeatureStore.build(dataset, config).training_set()
    sends = dataset.events[dataset.events["event_type"] == "send"]
    assert len(train) == len(sends)
    assert train["event_id"].tolist() == sends["event_id"].tolist()
    np.testing.assert_array_equal(train["propensity"].to_numpy(), sends["propensity"].to_numpy())
    assert set(train["label"].unique()) <= {0, 1, 2, 3} and (train["label"] > 0).mean() > 0.05
    # Sends whose click carries the decision id are labelled at least 2.
    clicks = dataset.events[(dataset.events["event_type"] == "click") & dataset.events["decision_id"].notna()]
    assert (train.set_index("decision_id").loc[clicks["decision_id"].unique(), "label"] >= 2).all()
    # Groups: per user and day by default, per decision when configured.
    day = train["timestamp"].dt.floor("D").astype("int64") // 86_400_000_000_000
    assert train["group"].tolist() == (train["user_id"] + "@" + day.astype(str)).tolist()
    by_decision = FeatureStore.build(dataset, NbmConfig.model_validate({"features": {"group_by": "decision"}})).training_set()
    assert (by_decision["group"] == by_decision["decision_id"]).all()


def test_chunked_training_set_equals_one_pass(dataset, config, monkeypatch) -> None:
    import features.pipeline as pipeline

    whole = FeatureStore.build(dataset, config).training_set()
    monkeypatch.setattr(pipeline, "TRAINING_CHUNK", 997)
    chunked = FeatureStore.build(dataset, config).training_set()
    pd.testing.assert_frame_equal(chunked, whole)
