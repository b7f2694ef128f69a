"""Candidates of a decision: every eligible (message × channel × send slot) for a user at a time.

Eligibility is :func:`nbm.policy.eligibility.eligible` (the message is live over the slot, targets the user's
lifecycle stage, allows the channel; the user consents to the channel and has not unsubscribed from or
bounced on it); this module gathers its arrays from the feature indexes. Slots are the configured local hours (``features.slot_hours``) within
``features.horizon_hours`` after the decision, moved out of the user's quiet hours
(``contact_policy.quiet_hours_*``, :func:`out_of_quiet_hours`) before anything else: a candidate's send time
is where it will be sent, so the message's live window is checked, and the model scores, at the moved time;
slots that land on the same instant become one. The other contact-policy rules (caps, gaps, cooldowns)
belong to the decision policy, not here. Vectorised: no Python loop per candidate.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.compute import HOUR_NS, Candidates, user_stages
from features.keys import pair
from features.pipeline import FeatureStore
from nbm.policy.contact import quiet_shifted
from nbm.policy.eligibility import eligible


def slot_times(now: int, timezone: str, slot_hours: tuple[int, ...], horizon_hours: float) -> np.ndarray:
    """UTC instants (int64 ns) of the local slot hours in ``[now, now + horizon)``, sorted.

    Wall-clock slots of the local days around ``now``; on a day with a DST change, an ambiguous slot hour
    is skipped and a nonexistent one moves forward (the pandas rules, which that rare case uses).
    """
    first = datetime.fromtimestamp(int(now) // 10**9, _zone(timezone)).date()
    values = _day_slots(first.toordinal(), timezone, tuple(slot_hours), int(np.ceil(horizon_hours / 24)) + 2)
    if values is None:
        return _slot_times_pandas(now, timezone, slot_hours, horizon_hours)   # DST change at a slot
    return values[(values >= now) & (values < now + int(horizon_hours * HOUR_NS))]


def out_of_quiet_hours(slots: np.ndarray, zones: np.ndarray, policy) -> np.ndarray:
    """Slot instants (n, S; −1 past a decision's last) moved out of each decision's local quiet hours
    (``zones[i]``, ``policy`` a ``ContactPolicyConfig``), sorted per decision, with slots that land on the
    same instant merged: (n, S') with S' ≤ S, left-packed, −1 padded. Without quiet hours, ``slots``."""
    slots = np.asarray(slots, dtype=np.int64)
    if policy.quiet_hours_start == policy.quiet_hours_end or not slots.size:
        return slots
    g, s = np.nonzero(slots >= 0)
    moved = np.full(slots.shape, np.iinfo(np.int64).max, dtype=np.int64)
    moved[g, s] = quiet_shifted(g, slots[g, s], np.asarray(zones, dtype=object), policy)
    moved.sort(axis=1)
    keep = moved != np.iinfo(np.int64).max
    keep[:, 1:] &= moved[:, 1:] != moved[:, :-1]
    rows, cols = np.nonzero(keep)
    out = np.full((len(slots), int(keep.sum(axis=1).max()) if len(rows) else 0), -1, dtype=np.int64)
    out[rows, (np.cumsum(keep, axis=1) - 1)[rows, cols]] = moved[rows, cols]
    return out


@lru_cache(maxsize=4096)
def _day_slots(first_day: int, timezone: str, slot_hours: tuple[int, ...], n_days: int) -> np.ndarray | None:
    """The slot instants of ``n_days`` local days from ``first_day`` (an ordinal), sorted; ``None`` when
    a DST change falls on a slot (cached: the service asks for the same days all day)."""
    zone = _zone(timezone)
    start = datetime.fromordinal(first_day).date()
    values = []
    for offset in range(n_days):
        day = start + timedelta(days=offset)
        for hour in slot_hours:
            wall = datetime(day.year, day.month, day.day, hour, tzinfo=zone)
            later = wall.replace(fold=1)
            if wall.utcoffset() != later.utcoffset() or datetime.fromtimestamp(wall.timestamp(), zone).hour != hour:
                return None
            values.append(int(wall.timestamp()) * 10**9)
    out = np.sort(np.asarray(values, dtype=np.int64))
    out.flags.writeable = False
    return out


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _slot_times_pandas(now: int, timezone: str, slot_hours: tuple[int, ...], horizon_hours: float) -> np.ndarray:
    start = pd.Timestamp(now, tz="UTC").tz_convert(timezone)
    days = pd.date_range(start.normalize(), periods=int(np.ceil(horizon_hours / 24)) + 2, freq="D")
    local = (days.tz_localize(None).to_numpy()[:, None] + np.asarray(slot_hours, dtype="timedelta64[h]")[None, :]).ravel()
    times = pd.DatetimeIndex(local).tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward").tz_convert("UTC")
    values = times.dropna().asi8
    return np.sort(values[(values >= now) & (values < now + int(horizon_hours * HOUR_NS))])


FEW_DECISIONS = 16
"""Up to this many decisions, :func:`slot_matrix` looks up each one's slots instead of grouping them."""


def slot_matrix(now: np.ndarray, zones: np.ndarray, slot_hours: tuple[int, ...], horizon_hours: float) -> np.ndarray:
    """Slot instants per decision, (n, S) int64, −1 where a decision has fewer slots than S."""
    width = len(slot_hours) * (int(np.ceil(horizon_hours / 24)) + 1)
    out = np.full((len(now), width), -1, dtype=np.int64)
    if len(now) <= FEW_DECISIONS:     # the service's few decisions: each row's slots looked up (cached)
        for i, (t, zone) in enumerate(zip(np.asarray(now).tolist(), np.asarray(zones, dtype=object).tolist())):
            slots = slot_times(int(t), str(zone), slot_hours, horizon_hours)
            out[i, : len(slots)] = slots
        used = int((out >= 0).sum(axis=1).max()) if len(out) else 0
        return out[:, :used]
    zone_codes, zone_names = pd.factorize(np.asarray(zones, dtype=object))
    times, time_codes = np.unique(now, return_inverse=True)
    n_zones = max(len(zone_names), 1)
    combined, codes = np.unique(time_codes.reshape(-1) * n_zones + zone_codes, return_inverse=True)
    codes = codes.reshape(-1)
    for code, key in enumerate(combined.tolist()):   # distinct (time, time zone): tens to hundreds
        t, zone = times[key // n_zones], zone_names[key % n_zones]
        slots = slot_times(int(t), str(zone), slot_hours, horizon_hours)
        out[codes == code, : len(slots)] = slots
    used = int((out >= 0).sum(axis=1).max()) if len(out) else 0
    return out[:, :used]


def expand(store: FeatureStore, user_id: str, now: pd.Timestamp, channels: list[str] | None = None,
           message_ids: list[str] | None = None) -> Candidates:
    """All eligible candidates of ``user_id`` for a decision at ``now`` (an unknown user is a new user)."""
    history, voc, cfg = store.history, store.globals.vocabulary, store.config
    t = pd.Timestamp(now).value
    code = history.user_codes(np.array([user_id], dtype=object))
    row = history.users.get_indexer([user_id])[0]
    timezone = str(history.user_frame["timezone"].iloc[row]) if row >= 0 else "UTC"
    slots = out_of_quiet_hours(slot_times(t, timezone, cfg.features.slot_hours, cfg.features.horizon_hours)[None, :],
                               np.array([timezone], dtype=object), cfg.contact_policy)[0]

    consent = history.consent_matrix[row].copy() if row >= 0 else np.zeros(len(voc.channels), dtype=bool)
    lost = history.user_channel.totals(pair(np.repeat(code, len(voc.channels)), np.arange(len(voc.channels)),
                                            len(voc.channels)), np.full(len(voc.channels), t), ("lost",))["lost"]
    consent &= lost == 0
    if channels is not None:
        consent &= voc.channels.isin(channels)
    at = np.array([t], dtype=np.int64)
    signup = history.signup[row] if row >= 0 else np.nan
    stage = int(user_stages(history, code, at, np.array([signup], dtype=float))[0])

    wanted = None if message_ids is None else np.asarray(voc.messages.isin(message_ids))[None, :]
    ok = eligible(history.message_channels, history.message_stages, history.catalog_arrays["start_ns"],
                  history.catalog_arrays["end_ns"], consent[None, :], np.array([stage]), slots[None, :], wanted)[0]
    m, c, s = np.nonzero(ok)
    n = len(m)
    return Candidates(
        user_id=np.full(n, user_id, dtype=object),
        message_id=np.asarray(voc.messages, dtype=object)[m],
        channel=np.asarray(voc.channels, dtype=object)[c],
        as_of=np.full(n, t, dtype=np.int64),
        send_at=slots[s],
        message_code=m,
        channel_code=c,
        user_code=np.full(n, code[0], dtype=np.int64),
    )
