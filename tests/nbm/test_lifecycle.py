"""The lifecycle rule of :mod:`nbm.lifecycle` at its thresholds, and its as-of lookup against a loop.

That every stage of nbm uses this one definition is tests/test_lifecycle_agreement.py's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.config import LifecycleConfig
from nbm.lifecycle import (ACTIVITY_EVENTS, LIFECYCLE_STAGES, NAT, activity_events, conversions_before,
                           days_since, last_activity_before, stage_codes, stages_at)

DAY_NS = pd.Timedelta(days=1).value


def test_activity_is_a_visit_click_or_conversion_unless_the_operator_says_otherwise() -> None:
    assert ACTIVITY_EVENTS == ("visit", "click", "convert")
    assert activity_events(LifecycleConfig()) == ACTIVITY_EVENTS
    assert activity_events(LifecycleConfig(activity_events=("click", "click"))) == ("click",)


@pytest.mark.parametrize(("stage", "conversions", "expected"), [
    ("active", 2, "loyal"), ("active", 5, "loyal"), ("active", 1, "active"), ("active", 0, "active"),
    ("at_risk", 9, "at_risk"), ("dormant", 9, "dormant"), ("new", 9, "new"),
])
def test_an_active_user_with_enough_conversions_is_loyal(stage, conversions, expected) -> None:
    """Loyal is the active users' with `loyal_min_conversions` in the window: not the lapsing, not the new."""
    days = {"new": (1.0, 1.0), "active": (400.0, 1.0), "at_risk": (400.0, 30.0), "dormant": (400.0, 90.0)}[stage]
    lifecycle = LifecycleConfig(loyal_min_conversions=2)
    code = stage_codes(lifecycle, np.array([days[0]]), np.array([days[1]]), np.array([conversions]))
    assert LIFECYCLE_STAGES[int(code[0])] == expected
    off = stage_codes(LifecycleConfig(), np.array([days[0]]), np.array([days[1]]), np.array([conversions]))
    assert LIFECYCLE_STAGES[int(off[0])] == stage                       # 0 conversions required: no loyal stage
    with pytest.raises(ValueError, match="`conversions`"):
        stage_codes(lifecycle, np.array([days[0]]), np.array([days[1]]))


def test_conversions_before_count_the_window_like_a_loop() -> None:
    """Conversions in [t − window, t) per query, against a loop (the window's start counts, t itself not)."""
    rng = np.random.default_rng(3)
    t0 = pd.Timestamp("2026-01-01T00:00:00Z").value
    n = 500
    events = pd.DataFrame({"user_id": rng.choice(["a", "b", "c"], n),
                           "event_type": rng.choice(["convert", "click", "visit"], n),
                           "timestamp": pd.to_datetime(t0 + rng.integers(0, 60, n) * DAY_NS, utc=True)})
    ids = rng.choice(["a", "b", "c", "z"], 200).astype(object)
    instants = t0 + rng.integers(0, 62, 200) * DAY_NS
    window = 10 * DAY_NS
    got = conversions_before(events, ids, instants, window)
    t = events["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")
    converts = (events["event_type"] == "convert").to_numpy()
    for user, at, count in zip(ids, instants, got):
        mine = converts & (events["user_id"] == user).to_numpy()
        assert count == int((mine & (t >= at - window) & (t < at)).sum())


def test_an_operator_whose_active_means_clicked() -> None:
    """`activity_events = ["click"]`: a user who only visits is dormant; one who clicked is active, and with
    two conversions in the loyal window (conversions counting for loyalty, not for activity) loyal."""
    at = pd.Timestamp("2026-06-01T00:00:00Z")
    users = pd.DataFrame({"user_id": ["visitor", "clicker", "buyer"], "signup_at": [at - pd.Timedelta(days=400)] * 3})
    rows = [("visitor", "visit", 1), ("clicker", "click", 3), ("buyer", "click", 3), ("buyer", "convert", 5),
            ("buyer", "convert", 20)]
    events = pd.DataFrame({"user_id": [r[0] for r in rows], "event_type": [r[1] for r in rows],
                           "timestamp": [at - pd.Timedelta(days=r[2]) for r in rows]})
    lifecycle = LifecycleConfig(activity_events=("click",), loyal_min_conversions=2, loyal_window_days=30)
    codes = stages_at(events, users, users["user_id"].to_numpy(dtype=object), np.full(3, at.value), lifecycle)
    assert [LIFECYCLE_STAGES[c] for c in codes] == ["dormant", "active", "loyal"]
    default = stages_at(events, users, users["user_id"].to_numpy(dtype=object), np.full(3, at.value),
                        LifecycleConfig())
    assert [LIFECYCLE_STAGES[c] for c in default] == ["active", "active", "active"]


@pytest.mark.parametrize(("signup", "activity", "stage"), [
    (29.999, 1.0, "new"), (30.0, 1.0, "active"), (np.nan, 1.0, "active"), (-2.0, np.nan, "new"),
    (400.0, 21.0, "active"), (400.0, 21.000001, "at_risk"), (400.0, 60.0, "at_risk"),
    (400.0, 60.000001, "dormant"), (400.0, np.nan, "dormant"), (400.0, np.inf, "dormant"), (400.0, 0.0, "active"),
])
def test_stage_codes_at_the_thresholds(signup, activity, stage) -> None:
    """new below `new_days`; then active up to `at_risk_after_days` inclusive, at risk up to `dormant_after_days`."""
    code = stage_codes(LifecycleConfig(new_days=30, at_risk_after_days=21, dormant_after_days=60),
                       np.array([signup]), np.array([activity]))
    assert LIFECYCLE_STAGES[int(code[0])] == stage


def test_days_since_subtracts_nanoseconds_before_dividing() -> None:
    t = pd.Timestamp("2026-06-08T00:00:00.000000123Z").value
    got = days_since(np.array([t, t, t]), np.array([t - 21 * DAY_NS, t - 21 * DAY_NS - 1, NAT]))
    assert got[0] == 21.0 and got[1] > 21.0 and np.isnan(got[2])


def test_last_activity_before_equals_a_loop_over_the_rows() -> None:
    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2026-01-01T00:00:00Z").value
    n = 400
    events = pd.DataFrame({"user_id": rng.choice(["a", "b", "c", "d"], n),
                           "event_type": rng.choice(["visit", "click", "convert", "open", "send"], n),
                           "timestamp": pd.to_datetime(t0 + rng.integers(0, 50, n) * DAY_NS, utc=True)})
    ids = rng.choice(["a", "b", "c", "d", "e"], 300).astype(object)
    instants = t0 + rng.integers(0, 52, 300) * DAY_NS     # many at an event's exact time
    got = last_activity_before(events, ids, instants, LifecycleConfig())
    t = events["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")
    for user, at, last in zip(ids, instants, got):
        before = t[(events["user_id"] == user).to_numpy() & events["event_type"].isin(ACTIVITY_EVENTS).to_numpy()
                   & (t < at)]
        assert last == (before.max() if len(before) else NAT)
