"""The cost side of a send: unsubscribes attributed to sends, the auto cost, and the risk model on a world
whose truth makes unsubscribes follow fatigue."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from nbm.config import NbmConfig
from training.risk import channel_costs, unsubscribed

T0 = pd.Timestamp("2026-11-02T10:00:00Z")


def _events(rows):
    frame = pd.DataFrame(rows, columns=["event_id", "user_id", "event_type", "channel", "decision_id", "timestamp"])
    frame["timestamp"] = T0 + pd.to_timedelta(frame["timestamp"], unit="h")
    return frame


def test_unsubscribes_are_attributed_to_the_send_they_answer():
    events = _events([
        ("s1", "u1", "send", "email", "d1", 0),
        ("s2", "u1", "send", "email", "d2", 5),
        ("x1", "u1", "unsubscribe", "email", "d1", 6),        # by decision id: s1, not the later s2
        ("s3", "u2", "send", "sms", None, 0),
        ("s4", "u2", "send", "email", None, 1),
        ("x2", "u2", "unsubscribe", "sms", None, 30),         # no id: u2's latest sms send within 72 h
        ("s5", "u3", "send", "email", None, 0),
        ("x3", "u3", "unsubscribe", "email", None, 100),      # outside the 72 h window: nobody's
        ("s6", "u4", "send", "push", None, 0),
        ("x4", "u4", "unsubscribe", "email", None, 1),        # another channel: nobody's
        ("s7", "u5", "send", "email", "d5", 0),
        ("s8", "u5", "send", "email", "d5", 20),
        ("x5", "u5", "unsubscribe", "email", "d5", 21),       # a slate sent twice on email: the later send
    ])
    rows = pd.DataFrame({"event_id": ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]})
    got = unsubscribed(SimpleNamespace(events=events), rows, NbmConfig())
    assert got.tolist() == [1, 0, 1, 0, 0, 0, 0, 1]


def test_auto_cost_is_the_channels_revenue_per_person_over_the_horizon():
    seen = pd.DataFrame({"channel_name": ["email", "email", "email", "sms"], "user_id": ["a", "b", "a", "a"],
                         "revenue": [30.0, 0.0, 10.0, 0.0],
                         "timestamp": T0 + pd.to_timedelta([0, 2, 10, 10], unit="D")})
    costs, default = channel_costs(SimpleNamespace(), seen, horizon_days=90)
    assert costs["email"] == pytest.approx(40 / 2 / 10 * 90)
    assert costs["sms"] == 0.0
    assert default == pytest.approx(40 / 2 / 10 * 90)
