"""The contact policy: caps, gaps, cooldowns and quiet hours, applied to the candidates of one decision.

Rules (``[contact_policy]`` in the configuration, documented in ``docs/contact-policy.md`` when the
service lands):

* **quiet hours** — a send time inside the user's local quiet hours moves to the end of them (it is not
  dropped); the other rules are checked at the moved time;
* ``daily_cap_per_channel`` — sends on the channel in the 24 hours before the send time;
* ``weekly_cap_per_channel`` — sends on the channel in the 7 days before;
* ``weekly_cap_total`` — sends on any channel in the 7 days before;
* ``min_gap_hours`` — the last send on any channel is closer than this;
* ``message_cooldown_days`` — the same message reached the user within this many days.

A candidate that breaks a rule is suppressed with the first broken rule's name as its reason, in the order
above. Vectorised over candidates: one ``searchsorted`` per rule over the user's sorted send times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.config import ContactPolicyConfig

HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS
REASONS = ("frequency_cap_daily", "frequency_cap_weekly", "frequency_cap_total", "min_gap", "cooldown")


@dataclass(frozen=True)
class SendHistory:
    """One user's past sends: times (int64 ns, sorted), channels and message ids (aligned)."""

    times: np.ndarray
    channels: np.ndarray
    messages: np.ndarray

    @classmethod
    def of(cls, times: np.ndarray, channels: np.ndarray, messages: np.ndarray) -> SendHistory:
        order = np.argsort(times, kind="stable")
        return cls(np.asarray(times, dtype=np.int64)[order], np.asarray(channels, dtype=object)[order],
                   np.asarray(messages, dtype=object)[order])


@dataclass(frozen=True)
class ContactDecision:
    """Per candidate: allowed or not, the reason when not (``""`` when allowed), the (moved) send time."""

    allowed: np.ndarray
    reason: np.ndarray
    send_at: np.ndarray


def shift_quiet_hours(send_at: np.ndarray, timezone: str, start: int, end: int) -> np.ndarray:
    """Move send times inside local quiet hours ``[start, end)`` (which may wrap midnight) to their end."""
    if start == end or not len(send_at):
        return send_at
    local = pd.DatetimeIndex(pd.to_datetime(send_at, utc=True)).tz_convert(timezone)
    hour = np.asarray(local.hour)
    quiet = (hour >= start) | (hour < end) if start > end else (hour >= start) & (hour < end)
    if not quiet.any():
        return send_at
    # Wall-clock arithmetic on the local date, then back to UTC (right across DST changes).
    midnight = local.tz_localize(None).normalize()
    end_of_quiet = np.where(hour < end, midnight + pd.Timedelta(hours=end), midnight + pd.Timedelta(days=1, hours=end))
    moved = pd.DatetimeIndex(end_of_quiet).tz_localize(timezone, ambiguous=True, nonexistent="shift_forward")
    return np.where(quiet, moved.tz_convert("UTC").asi8, send_at)


def _count(times: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Number of ``times`` in ``[low, high)`` per query (``times`` sorted)."""
    return np.searchsorted(times, high, side="left") - np.searchsorted(times, low, side="left")


def apply_contact_policy(channels: np.ndarray, messages: np.ndarray, send_at: np.ndarray, history: SendHistory,
                         timezone: str, policy: ContactPolicyConfig) -> ContactDecision:
    """Check every candidate (channel, message, send time) of one user against the contact policy."""
    at = shift_quiet_hours(np.asarray(send_at, dtype=np.int64), timezone, policy.quiet_hours_start,
                           policy.quiet_hours_end)
    n = len(at)
    reason = np.full(n, "", dtype=object)
    channels = np.asarray(channels, dtype=object)
    messages = np.asarray(messages, dtype=object)

    def flag(broken: np.ndarray, name: str) -> None:
        reason[(reason == "") & broken] = name

    for channel in pd.unique(channels):  # a handful of channels
        rows = channels == channel
        times = history.times[history.channels == channel]
        flag(rows & (_count(times, at - DAY_NS, at) >= policy.daily_cap_per_channel), "frequency_cap_daily")
        flag(rows & (_count(times, at - 7 * DAY_NS, at) >= policy.weekly_cap_per_channel), "frequency_cap_weekly")
    flag(_count(history.times, at - 7 * DAY_NS, at) >= policy.weekly_cap_total, "frequency_cap_total")
    if len(history.times):
        before = np.searchsorted(history.times, at, side="left")
        last = np.where(before > 0, history.times[np.maximum(before - 1, 0)], np.iinfo(np.int64).min)
        flag((before > 0) & (at - last < policy.min_gap_hours * HOUR_NS), "min_gap")
    cooldown = int(policy.message_cooldown_days * DAY_NS)
    for message in pd.unique(messages[np.isin(messages, history.messages)]):
        rows = messages == message
        times = history.times[history.messages == message]
        flag(rows & (_count(times, at - cooldown, at) > 0), "cooldown")
    return ContactDecision(reason == "", reason, at)
