"""The lifecycle rule of :mod:`nbm.lifecycle` at its thresholds, and its as-of lookup against a loop.

That every stage of nbm uses this one definition is tests/test_lifecycle_agreement.py's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.config import LifecycleConfig
from nbm.lifecycle import (ACTIVITY_EVENTS, LIFECYCLE_STAGES, NAT, activity_events, days_since,
                           last_activity_before, stage_codes)

DAY_NS = pd.Timedelta(days=1).value


def test_activity_is_a_visit_click_or_conversion() -> None:
    assert ACTIVITY_EVENTS == ("visit", "click", "convert")
    assert activity_events(LifecycleConfig()) == ACTIVITY_EVENTS


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
