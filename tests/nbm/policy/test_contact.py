"""The contact policy: one table of situations and the reason each candidate gets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.config import ChannelCaps, ContactPolicyConfig, NbmConfig
from nbm.policy.contact import SendHistory, apply_contact_policy, quiet_shifted, shift_quiet_hours

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


def _naive(group, channels, messages, send_at, timezones, hist, policy):
    """The rules one candidate at a time, straight from their definitions (the reference)."""
    day, hour = 86_400 * 10**9, 3_600 * 10**9
    reasons, moved = [], []
    for g, c, m, t in zip(group, channels, messages, send_at):
        t = int(shift_quiet_hours(np.array([t]), timezones[g], policy.quiet_hours_start, policy.quiet_hours_end)[0])
        mine = [(ht, hc, hm) for hg, ht, hc, hm in zip(*hist) if hg == g]
        near = lambda width, ok: sum(1 for ht, hc, hm in mine if t - width < ht < t + width and ok(hc, hm))  # noqa: E731
        if near(day, lambda hc, hm: hc == c) >= policy.daily_cap(c):
            reasons.append("frequency_cap_daily")
        elif near(7 * day, lambda hc, hm: hc == c) >= policy.weekly_cap(c):
            reasons.append("frequency_cap_weekly")
        elif near(7 * day, lambda hc, hm: True) >= policy.weekly_cap_total:
            reasons.append("frequency_cap_total")
        elif any(abs(t - ht) < policy.min_gap_hours * hour for ht, _, _ in mine):
            reasons.append("min_gap")
        elif near(int(policy.message_cooldown_days * day), lambda hc, hm: hm == m) > 0:
            reasons.append("cooldown")
        elif (topic := (policy.topic_of or {}).get(m)) in policy.topic_caps and near(
                day, lambda hc, hm: policy.topic_of.get(hm) == topic) >= policy.topic_cap(topic)[0]:
            reasons.append("topic_cap_daily")
        elif topic in policy.topic_caps and near(
                7 * day, lambda hc, hm: policy.topic_of.get(hm) == topic) >= policy.topic_cap(topic)[1]:
            reasons.append("topic_cap_weekly")
        else:
            reasons.append("")
        if policy.mandatory([m])[0]:           # transactional: no rule holds it back
            reasons[-1] = ""
        moved.append(t)
    return np.array(reasons, dtype=object), np.array(moved, dtype=np.int64)


PER_CHANNEL = POLICY.model_copy(update={"channel_caps": {
    "sms": ChannelCaps(weekly=1), "email": ChannelCaps(daily=2, weekly=4), "push": ChannelCaps(daily=0)}})


TOPICS = {**{f"m{i}": "promo" for i in range(4)}, "m4": "news", "m5": "news", "m6": "tips", "m7": "receipts",
          "other": "promo"}
TOPICAL = POLICY.model_copy(update={"topic_caps": {"promo": ChannelCaps(daily=1, weekly=2), "news": ChannelCaps(weekly=1)},
                                    "mandatory_messages": ["m6"], "mandatory_topics": ["receipts"]}).with_topics(TOPICS)


@pytest.mark.parametrize("policy", [POLICY, PER_CHANNEL, TOPICAL], ids=["same caps", "caps per channel", "topics"])
@pytest.mark.parametrize("categorical", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_equals_the_naive_rules(seed, categorical, policy) -> None:
    from nbm.policy.contact import SendHistories, apply_contact_policy_batch

    rng = np.random.default_rng(seed)
    n_groups, n_rows, n_sends = 40, 3000, 160
    zones = rng.choice(["UTC", "Europe/Berlin", "Asia/Tokyo", "America/New_York"], n_groups).astype(object)
    channel_names, message_names = ["email", "push", "sms"], [f"m{i}" for i in range(8)]
    group = np.sort(rng.integers(0, n_groups, n_rows))
    channels = rng.choice(channel_names, n_rows).astype(object)
    messages = rng.choice(message_names, n_rows).astype(object)
    hour = 3_600 * 10**9
    send_at = NOW.value + rng.integers(0, 48, n_rows) * hour      # on the hour: slots
    h_group = np.sort(rng.integers(0, n_groups, n_sends))
    h_times = NOW.value + rng.integers(-10 * 24, 3 * 24, n_sends) * hour + rng.integers(0, 3600, n_sends) * 10**9
    order = np.lexsort((h_times, h_group))
    h_channels = rng.choice(channel_names + ["wechat"], n_sends).astype(object)[order]
    h_messages = rng.choice(message_names + ["other"], n_sends).astype(object)[order]
    histories = SendHistories(h_group[order], h_times[order], h_channels, h_messages)
    args = (pd.Categorical(channels), pd.Categorical(messages)) if categorical else (channels, messages)
    got = apply_contact_policy_batch(group, *args, send_at, zones, histories, policy)
    reasons, moved = _naive(group, channels, messages, send_at, zones,
                            (histories.group, histories.times, h_channels, h_messages), policy)
    assert len(set(reasons)) >= 5                                  # the table exercises most rules
    if policy is TOPICAL:
        assert {"topic_cap_daily", "topic_cap_weekly"} <= set(reasons)
        assert (reasons[np.isin(messages, ["m6", "m7"])] == "").all()
    np.testing.assert_array_equal(got.send_at, moved)
    np.testing.assert_array_equal(got.reason, reasons)
    np.testing.assert_array_equal(got.allowed, reasons == "")


def test_quiet_shifted_is_the_per_zone_shift_for_few_and_many_times() -> None:
    """The cached lookup of a few send times and the grouped path of many give what shift_quiet_hours gives
    zone by zone, and shifting twice changes nothing (what `shifted=True` relies on)."""
    rng = np.random.default_rng(21)
    zones = np.array(["Europe/Berlin", "Asia/Tokyo", "America/New_York", "UTC"], dtype=object)
    for n in (1, 7, 64, 65, 500):
        group = rng.integers(0, len(zones), n)
        at = NOW.value + rng.integers(-30, 30 * 24, n) * 3_600 * 10**9 + rng.integers(0, 3_600, n) * 10**9
        got = quiet_shifted(group, at, zones, POLICY)
        expected = np.array([shift_quiet_hours(np.array([t]), zones[g], 21, 8)[0] for g, t in zip(group, at)])
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(quiet_shifted(group, got, zones, POLICY), got)


@pytest.mark.parametrize(("history", "channel", "expected"), [
    ((("-3D", "sms", "m9"),), "sms", "frequency_cap_weekly"),        # an SMS a week
    ((("-3D", "email", "m9"),), "email", ""),                         # email: the default weekly cap (2)
    ((("-3D", "email", "m8"), ("-4D", "email", "m9")), "email", "frequency_cap_weekly"),
    ((), "push", "frequency_cap_daily"),                              # push: daily cap 0, never
])
def test_a_channel_may_have_caps_of_its_own(history, channel, expected) -> None:
    policy = POLICY.model_copy(update={"channel_caps": {"sms": ChannelCaps(weekly=1), "push": ChannelCaps(daily=0)}})
    at = np.array([NOW.value], dtype=np.int64)
    decision = apply_contact_policy(np.array([channel], dtype=object), np.array(["m1"], dtype=object), at,
                                    _history(*history), "UTC", policy)
    assert decision.reason[0] == expected


def test_topic_caps_need_the_catalog() -> None:
    policy = POLICY.model_copy(update={"topic_caps": {"promo": ChannelCaps(daily=1)}})
    at = np.array([NOW.value], dtype=np.int64)
    with pytest.raises(ValueError, match="with_topics"):
        apply_contact_policy(np.array(["email"], dtype=object), np.array(["m1"], dtype=object), at, _history(), "UTC",
                             policy)


def test_channel_caps_name_configured_channels() -> None:
    config = NbmConfig.model_validate({"contact_policy": {"channel_caps": {"sms": {"weekly": 1}}}})
    assert config.contact_policy.weekly_cap("sms") == 1 and config.contact_policy.weekly_cap("email") == 3
    with pytest.raises(ValueError, match="unknown channel"):
        NbmConfig.model_validate({"contact_policy": {"channel_caps": {"fax": {"weekly": 1}}}})
    with pytest.raises(ValueError):
        NbmConfig.model_validate({"contact_policy": {"channel_caps": {"sms": {"weekly": -1}}}})

