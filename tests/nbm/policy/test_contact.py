"""The contact policy: one table of situations and the reason each candidate gets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.config import ContactPolicyConfig
from nbm.policy.contact import SendHistory, apply_contact_policy, shift_quiet_hours

NOW = pd.Timestamp("2026-10-14T12:00:00Z")  # a Wednesday, 12:00 UTC
POLICY = ContactPolicyConfig(daily_cap_per_channel=1, weekly_cap_per_channel=2, weekly_cap_total=3,
                             min_gap_hours=12, message_cooldown_days=7, quiet_hours_start=21, quiet_hours_end=8)


def _history(*sends: tuple[str, str, str]) -> SendHistory:
    """(time offset from NOW like '-3h', channel, message)."""
    times = np.array([(NOW + pd.Timedelta(offset)).value for offset, _, _ in sends], dtype=np.int64)
    return SendHistory.of(times, np.array([c for _, c, _ in sends], dtype=object),
                          np.array([m for *_, m in sends], dtype=object))


CASES = [
    # (history, candidate channel, message, send offset, expected reason)
    ((), "email", "m1", "0h", ""),
    ((("-20h", "email", "m9"),), "email", "m1", "0h", "frequency_cap_daily"),
    ((("-20h", "sms", "m9"),), "email", "m1", "0h", ""),                        # other channel: no daily cap
    ((("-3D", "email", "m8"), ("-5D", "email", "m9")), "email", "m1", "0h", "frequency_cap_weekly"),
    ((("-3D", "email", "m8"), ("-9D", "email", "m9")), "email", "m1", "0h", ""),  # 9 days ago: outside the week
    ((("-2D", "sms", "m7"), ("-3D", "push", "m8"), ("-4D", "email", "m9")), "in_app", "m1", "0h", "frequency_cap_total"),
    ((("-6h", "sms", "m9"),), "email", "m1", "0h", "min_gap"),
    ((("-13h", "sms", "m9"),), "email", "m1", "0h", ""),
    ((("-6D", "sms", "m1"),), "email", "m1", "0h", "cooldown"),
    ((("-8D", "sms", "m1"),), "email", "m1", "0h", ""),
    # A send already planned after the candidate (an earlier item of a slate, a reservation) counts too.
    ((("+1h", "email", "m9"),), "email", "m1", "0h", "frequency_cap_daily"),
    ((("+30h", "email", "m9"),), "email", "m1", "0h", ""),
    ((("+6h", "sms", "m9"),), "email", "m1", "0h", "min_gap"),
    ((("+3D", "sms", "m1"),), "email", "m1", "0h", "cooldown"),
]


@pytest.mark.parametrize(("history", "channel", "message", "offset", "expected"), CASES)
def test_contact_rules(history, channel, message, offset, expected) -> None:
    at = np.array([(NOW + pd.Timedelta(offset)).value], dtype=np.int64)
    decision = apply_contact_policy(np.array([channel], dtype=object), np.array([message], dtype=object), at,
                                    _history(*history), "UTC", POLICY)
    assert decision.reason[0] == expected
    assert decision.allowed[0] == (expected == "")


@pytest.mark.parametrize(("local", "timezone", "expected_local"), [
    ("2026-10-14T22:30", "Europe/Berlin", "2026-10-15T08:00"),    # evening: next morning
    ("2026-10-15T03:00", "Europe/Berlin", "2026-10-15T08:00"),    # night: same morning
    ("2026-10-15T12:00", "Europe/Berlin", "2026-10-15T12:00"),    # allowed: unchanged
    ("2026-10-24T23:00", "Europe/Berlin", "2026-10-25T08:00"),    # across the end of summer time
    ("2026-10-14T21:00", "Asia/Tokyo", "2026-10-15T08:00"),
])
def test_quiet_hours_move_the_send_to_their_end(local, timezone, expected_local) -> None:
    at = pd.Timestamp(local).tz_localize(timezone).tz_convert("UTC").value
    moved = shift_quiet_hours(np.array([at], dtype=np.int64), timezone, 21, 8)[0]
    assert pd.Timestamp(moved, tz="UTC").tz_convert(timezone).tz_localize(None) == pd.Timestamp(expected_local)


def test_rules_are_checked_at_the_moved_time() -> None:
    # 22:00 UTC is quiet and only 10 h after an SMS (min gap 12 h); moved to 08:00 the next day, 20 h after it.
    history = _history(("0h", "sms", "m9"))
    at = np.array([(NOW + pd.Timedelta("10h")).value], dtype=np.int64)
    decision = apply_contact_policy(np.array(["email"], dtype=object), np.array(["m1"], dtype=object), at, history,
                                    "UTC", POLICY)
    assert decision.send_at[0] == pd.Timestamp("2026-10-15T08:00Z").value
    assert decision.reason[0] == ""
