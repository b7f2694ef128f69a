"""The contact policy: caps, gaps, cooldowns and quiet hours, applied to the candidates of one decision.

Rules (``[contact_policy]`` in the configuration, documented in ``docs/contact-policy.md``):

* **quiet hours** — a send time inside the user's local quiet hours moves to the end of them (it is not
  dropped); the other rules are checked at the moved time;
* ``daily_cap_per_channel`` — sends on the channel within 24 hours of the send time;
* ``weekly_cap_per_channel`` — sends on the channel within 7 days of it (``channel_caps`` sets a channel's own daily and weekly caps);
* ``weekly_cap_total`` — sends on any channel within 7 days of it;
* ``min_gap_hours`` — another send on any channel is closer than this;
* ``message_cooldown_days`` — the same message reaches the user within this many days;
* ``topic_caps`` — sends of the message's topic (any channel) within 24 hours / 7 days of the send time;
* ``mandatory_messages`` / ``mandatory_topics`` — transactional messages: none of the rules above holds them
  back (their sends still count toward every cap).

Outcome-based suppression (``ignored_sends``) needs the user's opens and clicks, which a send history does not
hold: :func:`decision.contact.ignored_pairs` applies it from the feature store's history.

Windows reach both ways: past sends lie before the decision, but a send already planned for later (an
earlier item of the same slate, a decision taken earlier for a later hour) counts as well. Counting both
sides is conservative — it never lets a rolling window exceed a cap.

A candidate that breaks a rule is suppressed with the first broken rule's name as its reason, in the order
above. Vectorised over candidates: one ``searchsorted`` per rule over the user's sorted send times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from nbm.arrays import distinct_rows
from nbm.config import ContactPolicyConfig

HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS
REASONS = ("frequency_cap_daily", "frequency_cap_weekly", "frequency_cap_total", "min_gap", "cooldown",
           "topic_cap_daily", "topic_cap_weekly", "suppressed_ignored")


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
    code: np.ndarray | None = None
    """Per candidate, the reason as its index in :data:`REASON_NAMES` (0: allowed), when the policy computed it."""
    held: np.ndarray | None = None
    """Per candidate, held back by a rule the send history does not decide (outcome-based suppression), when
    one was applied: a slate's later picks, judged again with the earlier ones, keep it (:meth:`keeping`)."""
    fixed_at: np.ndarray | None = None
    """Per candidate, the send time a mandatory message goes at whatever its slot (−1: none)."""

    def take(self, index: np.ndarray) -> ContactDecision:
        return ContactDecision(self.allowed[index], self.reason[index], self.send_at[index],
                               None if self.code is None else self.code[index],
                               None if self.held is None else self.held[index],
                               None if self.fixed_at is None else self.fixed_at[index])

    def keeping(self, before: ContactDecision | None) -> ContactDecision:
        """This verdict (the send-history rules, judged again) with ``before``'s holds and fixed send times on
        the same rows: what a slate's later pick is judged by."""
        if before is None or (before.held is None and before.fixed_at is None):
            return self
        allowed, code = np.array(self.allowed, dtype=bool), np.array(self.code, dtype=np.int8)
        send_at = np.array(self.send_at, dtype=np.int64)
        if before.held is not None:
            hit = allowed & before.held
            allowed[hit], code[hit] = False, REASONS.index("suppressed_ignored") + 1
        if before.fixed_at is not None:
            fixed = before.fixed_at >= 0
            send_at[fixed] = before.fixed_at[fixed]
        return ContactDecision(allowed, REASON_NAMES[code], send_at, code, before.held, before.fixed_at)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def shift_quiet_hours(send_at: np.ndarray, timezone: str, start: int, end: int) -> np.ndarray:
    """Move send times inside local quiet hours ``[start, end)`` (which may wrap midnight) to their end.

    Wall-clock arithmetic on the local date, then back to UTC, so it is right across DST changes (an
    ambiguous end hour is its first occurrence). Computed once per distinct send time: a decision has a
    handful, a batch of thousands of decisions a few hundred.
    """
    send_at = np.asarray(send_at, dtype=np.int64)
    if start == end or not len(send_at):
        return send_at
    distinct, inverse = np.unique(send_at, return_inverse=True)
    moved = np.array([_quiet_end(t, timezone, start, end) for t in distinct.tolist()], dtype=np.int64)
    return moved[inverse.reshape(-1)]


def in_quiet_hours(hour, start: int, end: int):
    """Whether local ``hour`` (an int or an int array) lies in quiet hours ``[start, end)``, which may wrap
    midnight (``start > end``); none when ``start == end``."""
    return (hour >= start) | (hour < end) if start > end else (hour >= start) & (hour < end)


@lru_cache(maxsize=65536)
def _quiet_end(t: int, timezone: str, start: int, end: int) -> int:
    """``t`` (ns), or the end of the local quiet hours it falls in (cached: the slots repeat all day)."""
    zone = _zone(timezone)
    local = datetime.fromtimestamp(t // 10**9, zone)
    hour = local.hour
    if not in_quiet_hours(hour, start, end):
        return t
    day = local.date() if hour < end else local.date() + timedelta(days=1)
    return int(datetime(day.year, day.month, day.day, end, tzinfo=zone).timestamp()) * 10**9


MS = 10**6


@dataclass(frozen=True)
class SendHistories:
    """Past sends of the users of many decisions: ``group`` is the decision (0..n_groups-1) each send counts for."""

    group: np.ndarray
    times: np.ndarray
    channels: np.ndarray
    messages: np.ndarray

    @classmethod
    def single(cls, history: SendHistory) -> SendHistories:
        return cls(np.zeros(len(history.times), dtype=np.int64), history.times, history.channels, history.messages)

    @classmethod
    def empty(cls) -> SendHistories:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, object))


class _PackedCounts:
    """Counts of past sends per key in time windows, for many keys at once.

    Each send becomes ``key · span + milliseconds since the earliest time``: one sorted int64 array in
    which a window of one key is a contiguous range, found by two ``searchsorted`` calls for all queries.
    Times are compared at millisecond resolution.
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray, origin: int, span: int, max_key: int) -> None:
        if (max_key + 1) * span >= 2**63:
            raise ValueError("too many decisions over too long a period for one batch; split the batch")
        self.origin, self.span = origin, span
        self.packed = np.sort(self.pack(keys, times))

    def pack(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """One int64 per (key, time), in the order of the packed sends."""
        offset = np.clip((np.asarray(times, np.int64) - self.origin) // MS, 0, self.span - 1)
        return np.asarray(keys, np.int64) * self.span + offset

    def count(self, keys: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Sends of each query's key in ``[low, high)``."""
        return (np.searchsorted(self.packed, self.pack(keys, high), side="left")
                - np.searchsorted(self.packed, self.pack(keys, low), side="left"))

    def nearest(self, keys: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Milliseconds from ``at`` to the key's nearest send on either side (``inf`` when none)."""
        if not len(self.packed):
            return np.full(len(keys), np.inf)
        q = self.pack(keys, at)
        i = np.searchsorted(self.packed, q, side="left")
        after = self.packed[np.minimum(i, len(self.packed) - 1)]
        before = self.packed[np.maximum(i - 1, 0)]
        d_after = np.where((i < len(self.packed)) & (after // self.span == keys), after - q, np.inf)
        d_before = np.where((i > 0) & (before // self.span == keys), q - before, np.inf)
        return np.minimum(d_after, d_before)


def _codes(candidates: np.ndarray | pd.Categorical, history: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of the candidates' and the history's values on one scale, and the number of codes.

    A ``pd.Categorical`` of candidates is used as it is (a batch has ~10⁶ rows over a few dozen strings:
    hashing them costs more than the rest of the policy); a history value no candidate has gets a code of
    its own, past the candidates'.
    """
    if isinstance(candidates, pd.Categorical):
        n = len(candidates.categories)
        lookup = _lookup(candidates.categories)    # a dict: Index.get_indexer costs ~0.4 ms a call
        h = np.fromiter((lookup.get(v, n) for v in np.asarray(history, dtype=object).tolist()), np.int64, len(history))
        return np.asarray(candidates.codes, np.int64), h, n + 1
    codes, names = pd.factorize(np.concatenate([np.asarray(candidates, object), np.asarray(history, object)]))
    return codes[: len(candidates)].astype(np.int64), codes[len(candidates):].astype(np.int64), max(len(names), 1)


_LOOKUPS: dict[int, tuple[pd.Index, dict]] = {}


def _lookup(categories: pd.Index) -> dict:
    """Category → code, built once per categories object (candidates of a vocabulary share theirs)."""
    hit = _LOOKUPS.get(id(categories))
    if hit is None or hit[0] is not categories:
        if len(_LOOKUPS) > 256:
            _LOOKUPS.clear()
        hit = _LOOKUPS[id(categories)] = (categories, dict(zip(categories.tolist(), range(len(categories)))))
    return hit[1]


REASON_NAMES = np.array(["", *REASONS], dtype=object)
"""Reason codes: 0 is allowed, then :data:`REASONS` in order."""


def apply_contact_policy_batch(group: np.ndarray, channels: np.ndarray | pd.Categorical,
                               messages: np.ndarray | pd.Categorical, send_at: np.ndarray, timezones: np.ndarray,
                               histories: SendHistories, policy: ContactPolicyConfig,
                               shifted: bool = False) -> ContactDecision:
    """:func:`apply_contact_policy` for the candidates of many decisions at once.

    ``group`` (int, per candidate) is the candidate's decision; ``timezones`` (per decision) its user's
    time zone; ``histories`` the past sends, by decision. ``channels`` and ``messages`` are strings, or
    ``pd.Categorical`` of them (faster for large batches).

    The channel rules depend on (decision, channel, send time) only, so they are checked once per distinct
    triple (a decision of 100 messages × 3 channels × 6 slots has 18); the cooldown only for candidates
    whose message the decision's user has been sent. ``shifted``: the send times are already out of quiet
    hours (:func:`quiet_shifted` of the same decisions' zones; shifting is idempotent, so this only saves
    the work).
    """
    group = np.asarray(group, np.int64)
    at = np.asarray(send_at, dtype=np.int64)
    n = len(at)
    if not n:
        return ContactDecision(np.zeros(0, bool), np.full(0, "", dtype=object), at.copy(), np.zeros(0, np.int8))
    if not shifted:
        at = quiet_shifted(group, at, timezones, policy)

    h_times = np.asarray(histories.times, np.int64)
    h_group = np.asarray(histories.group, np.int64)
    cooldown = int(policy.message_cooldown_days * DAY_NS)
    lookback = max(7 * DAY_NS, cooldown) + DAY_NS
    origin = int(min(at.min(), h_times.min() if len(h_times) else at.min())) - lookback
    origin -= origin % MS     # whole milliseconds: every call buckets the same instants the same way
    span = int((max(at.max(), h_times.max() if len(h_times) else at.max()) + lookback - origin) // MS) + 2
    n_groups = int(max(group.max(), h_group.max() if len(h_group) else 0)) + 1

    c_cand, c_hist, n_ch = _codes(channels, histories.channels)
    by_channel = _PackedCounts(h_group * n_ch + c_hist, h_times, origin, span, n_groups * n_ch)
    c_key = group * n_ch + c_cand
    triple_code, first = distinct_rows(by_channel.pack(c_key, at))
    t_group, t_at, t_key = group[first], at[first], c_key[first]
    t_reason = np.zeros(len(first), dtype=np.int8)   # 0: allowed, else 1 + the first broken rule's index in REASONS

    def flag(target: np.ndarray, broken: np.ndarray, rule: str) -> None:
        target[(target == 0) & broken] = REASONS.index(rule) + 1

    # Windows reach both ways: past sends lie before the decision, but sends already planned (an earlier
    # item of the same slate, an earlier decision for a later hour) may lie after the candidate's time.
    daily_cap, weekly_cap = _channel_caps(channels, first, policy)
    flag(t_reason, by_channel.count(t_key, t_at - DAY_NS + 1, t_at + DAY_NS) >= daily_cap, "frequency_cap_daily")
    flag(t_reason, by_channel.count(t_key, t_at - 7 * DAY_NS + 1, t_at + 7 * DAY_NS) >= weekly_cap,
         "frequency_cap_weekly")
    by_user = _PackedCounts(h_group, h_times, origin, span, n_groups)
    flag(t_reason, by_user.count(t_group, t_at - 7 * DAY_NS + 1, t_at + 7 * DAY_NS) >= policy.weekly_cap_total,
         "frequency_cap_total")
    flag(t_reason, by_user.nearest(t_group, t_at) < policy.min_gap_hours * HOUR_NS / MS, "min_gap")
    reason = t_reason[triple_code]

    m_cand, m_hist, n_msg = _codes(messages, histories.messages)
    sent = np.unique(h_group * n_msg + m_hist)
    m_key = group * n_msg + m_cand
    maybe = np.flatnonzero((reason == 0) & np.isin(m_key, sent, kind="table" if len(sent) else None))
    if len(maybe):
        by_message = _PackedCounts(h_group * n_msg + m_hist, h_times, origin, span, n_groups * n_msg)
        hit = by_message.count(m_key[maybe], at[maybe] - cooldown + 1, at[maybe] + cooldown) > 0
        reason[maybe[hit]] = REASONS.index("cooldown") + 1
    if policy.topic_caps:
        _topic_caps(reason, group, messages, at, histories, policy, origin, span, n_groups)
    if policy.mandatory_messages or policy.mandatory_topics:
        names, codes = _names_codes(messages)
        reason[policy.mandatory(names)[codes]] = 0
    return ContactDecision(reason == 0, REASON_NAMES[reason], at, reason)


def _names_codes(values: np.ndarray | pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values (object) and each row's code into them."""
    if isinstance(values, pd.Categorical):
        return np.asarray(values.categories, dtype=object), np.asarray(values.codes, np.int64)
    codes, names = pd.factorize(np.asarray(values, dtype=object))
    return np.asarray(names, dtype=object), codes.astype(np.int64)


def _topic_caps(reason: np.ndarray, group: np.ndarray, messages, at: np.ndarray, histories: SendHistories,
                policy: ContactPolicyConfig, origin: int, span: int, n_groups: int) -> None:
    """Flag the rows still allowed whose topic has ``topic_caps`` reached (in place)."""
    topic_of = policy.topic_of
    if topic_of is None:
        raise ValueError("`contact_policy.topic_caps` needs each message's topic: the policy was not given the "
                         "catalog (ContactPolicyConfig.with_topics)")
    names, codes = _names_codes(messages)
    topics = pd.Index(sorted(set(policy.topic_caps)))
    n_topics = len(topics) + 1                                  # the last: a topic without caps
    name_topic = topics.get_indexer([topic_of.get(m) for m in names.tolist()])
    row_topic = np.where(name_topic >= 0, name_topic, len(topics))[codes] if len(names) else np.zeros(0, np.int64)
    h_topic = topics.get_indexer([topic_of.get(m) for m in np.asarray(histories.messages, dtype=object).tolist()])
    h_topic = np.where(h_topic >= 0, h_topic, len(topics)).astype(np.int64)
    open_rows = np.flatnonzero((reason == 0) & (row_topic < len(topics)))
    if not len(open_rows):
        return
    h_group = np.asarray(histories.group, np.int64)
    by_topic = _PackedCounts(h_group * n_topics + h_topic, np.asarray(histories.times, np.int64), origin, span,
                             n_groups * n_topics)
    caps = np.array([policy.topic_cap(str(t)) for t in topics] + [(2**62, 2**62)], dtype=np.int64)
    key, t = group[open_rows] * n_topics + row_topic[open_rows], at[open_rows]
    daily = by_topic.count(key, t - DAY_NS + 1, t + DAY_NS) >= caps[row_topic[open_rows], 0]
    weekly = by_topic.count(key, t - 7 * DAY_NS + 1, t + 7 * DAY_NS) >= caps[row_topic[open_rows], 1]
    reason[open_rows[daily]] = REASONS.index("topic_cap_daily") + 1
    reason[open_rows[weekly & ~daily]] = REASONS.index("topic_cap_weekly") + 1


def _channel_caps(channels: np.ndarray | pd.Categorical, rows: np.ndarray, policy: ContactPolicyConfig):
    """(daily, weekly) caps of the candidates ``rows``' channels: the two settings as they are (scalars) when no
    channel has caps of its own (``[contact_policy] channel_caps``), else one value per row."""
    if not policy.channel_caps:
        return policy.daily_cap_per_channel, policy.weekly_cap_per_channel
    if isinstance(channels, pd.Categorical):
        names, codes = channels.categories.tolist(), np.asarray(channels.codes, np.int64)[rows]
    else:
        codes, uniques = pd.factorize(np.asarray(channels, dtype=object)[rows])
        names = list(uniques)
    daily = np.array([policy.daily_cap(str(n)) for n in names], dtype=np.int64)
    weekly = np.array([policy.weekly_cap(str(n)) for n in names], dtype=np.int64)
    return daily[codes], weekly[codes]


FEW_TIMES = 64
"""Up to this many send times, :func:`quiet_shifted` looks each up (cached) instead of grouping them."""


def quiet_shifted(group: np.ndarray, at: np.ndarray, timezones: np.ndarray, policy: ContactPolicyConfig) -> np.ndarray:
    """``at`` (send times of decisions ``group``, whose users' zones are ``timezones``) moved out of quiet
    hours in each row's zone: what :func:`apply_contact_policy_batch` does first. A few times (a decision's
    slots) are looked up one by one (cached); more are computed once per distinct (time zone, send time):
    a batch of a million candidates has a few hundred."""
    group, at = np.asarray(group, np.int64), np.asarray(at, np.int64)
    start, end = policy.quiet_hours_start, policy.quiet_hours_end
    if start != end and len(at) <= FEW_TIMES:
        zones = np.asarray(timezones, dtype=object)[group].tolist()
        return np.array([_quiet_end(t, str(z), start, end) for t, z in zip(at.tolist(), zones)], dtype=np.int64)
    zone_codes, zone_names = pd.factorize(np.asarray(timezones, dtype=object))
    at_codes = pd.factorize(at)[0].astype(np.int64)
    combo, first = distinct_rows(at_codes * max(len(zone_names), 1) + zone_codes[group])
    c_zone, c_at = zone_codes[group[first]], at[first]
    moved = c_at.copy()
    for z in np.unique(c_zone).tolist():
        rows = c_zone == z
        moved[rows] = shift_quiet_hours(c_at[rows], str(zone_names[z]), policy.quiet_hours_start, policy.quiet_hours_end)
    return moved[combo]


def apply_contact_policy(channels: np.ndarray, messages: np.ndarray, send_at: np.ndarray, history: SendHistory,
                         timezone: str, policy: ContactPolicyConfig) -> ContactDecision:
    """Check every candidate (channel, message, send time) of one user against the contact policy."""
    return apply_contact_policy_batch(np.zeros(len(send_at), np.int64), channels, messages, send_at,
                                      np.array([timezone], dtype=object), SendHistories.single(history), policy)
