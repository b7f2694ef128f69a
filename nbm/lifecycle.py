"""The lifecycle definition — one, used by the features, the decision path, ``nbm report`` and ``nbm ab``.

A user's stage at an instant ``t`` is a code into :data:`LIFECYCLE_STAGES` (new 0, active 1, at_risk 2,
dormant 3, loyal 4), by the settings of ``[lifecycle]`` (:class:`~nbm.config.LifecycleConfig`):

* ``new`` while the days since ``signup_at`` are below ``new_days`` (an unknown signup is never new);
* else by the days since the user's last **activity** strictly before ``t``: at most ``at_risk_after_days``
  → ``active``, at most ``dormant_after_days`` → ``at_risk``, more (or no activity at all) → ``dormant``;
* with ``loyal_min_conversions`` > 0, an ``active`` user with that many conversions in
  ``[t − loyal_window_days, t)`` is ``loyal`` instead (off by default: no user is loyal).

Activity is an event whose type is in :func:`activity_events`, the operator's ``[lifecycle]
activity_events``: by default a visit, a click or a conversion — what the person did, not what was done to
them (sends, bounces), nor an open, which a mail client can register alone (a brand may still count opens,
or only clicks). Every stage reads those types from :func:`activity_events` alone. A message's
``lifecycle_stages`` is a hard eligibility rule: a message for ``active`` users does not reach ``loyal``
ones unless it lists both. (The activity *states* of the features and the report — power, core, casual,
low — are another concept: visits in 30 days against an ideal frequency, ``[activity]``.)

Days are time differences divided by a day. :func:`stages_at` (``nbm report``, ``nbm ab``) subtracts int64
nanoseconds before dividing, so a visit exactly ``at_risk_after_days`` before ``t`` is ``active``. The features
and the decision path subtract the last activity time as float64 nanoseconds
(``features.keys.KeyedIndex.last_time``), which holds epoch times of 2006–2043 to 256 ns. With thresholds of
whole seconds the two agree exactly for timestamps of microsecond resolution or coarser, the boundary itself
included (tests/test_lifecycle_agreement.py pins it); only nanosecond timestamps within 256 ns of a threshold
could fall on different sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.arrays import bounded_search
from nbm.config import LIFECYCLE_STAGES, LifecycleConfig

__all__ = ["ACTIVITY_EVENTS", "LIFECYCLE_STAGES", "LOYAL", "activity_events", "conversions_before", "days_since",
           "last_activity_before", "loyal_window_ns", "stage_codes", "stage_mix", "stages_at", "stages_in_use", "StageMix"]

DAY_NS = 86_400 * 10**9
NAT = np.iinfo(np.int64).min
"""int64 nanoseconds of a missing time (``NaT``)."""

ACTIVITY_EVENTS: tuple[str, ...] = LifecycleConfig().activity_events
"""Event types (``events.event_type``) that count as a user's activity by default: visit, click, convert."""
LOYAL = LIFECYCLE_STAGES.index("loyal")


def activity_events(lifecycle: LifecycleConfig) -> tuple[str, ...]:
    """The event types that count as activity under ``lifecycle`` (``[lifecycle] activity_events``) — the one
    place every stage reads them."""
    return tuple(lifecycle.activity_events)


def stages_in_use(lifecycle: LifecycleConfig) -> tuple[str, ...]:
    """The stage names a user can be in under ``lifecycle`` (``loyal`` only with a loyal stage), by code."""
    return LIFECYCLE_STAGES if lifecycle.loyal_min_conversions > 0 else LIFECYCLE_STAGES[:LOYAL]


def loyal_window_ns(lifecycle: LifecycleConfig) -> int | None:
    """The window (ns) in which conversions make an active user ``loyal``; ``None`` when there is no loyal
    stage (``loyal_min_conversions`` 0)."""
    return int(lifecycle.loyal_window_days * DAY_NS) if lifecycle.loyal_min_conversions > 0 else None


def stage_codes(lifecycle: LifecycleConfig, days_since_signup: np.ndarray, days_since_activity: np.ndarray,
                conversions: np.ndarray | None = None) -> np.ndarray:
    """Stage codes into :data:`LIFECYCLE_STAGES` (new 0, active 1, at_risk 2, dormant 3, loyal 4), any shape.

    ``days_since_signup`` (NaN: unknown signup, never ``new``) and ``days_since_activity`` (NaN or inf: no
    activity, ``dormant``) broadcast together; the thresholds are ``lifecycle``'s. With a loyal stage
    (``loyal_min_conversions`` > 0), an ``active`` user whose ``conversions`` in the last
    ``loyal_window_days`` reach it is ``loyal`` (``conversions`` is then required): a lapsing loyal customer
    shows as ``at_risk``, where win-back content finds them.
    """
    activity = np.asarray(days_since_activity)
    # Nested np.where: np.select's argument handling costs more than the comparisons on a decision's row.
    stage = np.where(np.asarray(days_since_signup) < lifecycle.new_days, 0,
                     np.where(activity <= lifecycle.at_risk_after_days, 1,
                              np.where(activity <= lifecycle.dormant_after_days, 2, 3)))
    if lifecycle.loyal_min_conversions > 0:
        if conversions is None:
            raise ValueError("`conversions`: required when `loyal_min_conversions` > 0")
        stage = np.where((stage == 1) & (np.asarray(conversions) >= lifecycle.loyal_min_conversions), LOYAL, stage)
    return stage


def days_since(instants: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Days from ``times`` to ``instants`` (int64 ns, broadcast), NaN where ``times`` is :data:`NAT`.

    The difference is taken in int64 nanoseconds before dividing: a float of an epoch time would blur the
    exact day boundaries."""
    instants, times = np.asarray(instants, dtype=np.int64), np.asarray(times, dtype=np.int64)
    known = times != NAT
    return np.where(known, (instants - np.where(known, times, 0)) / DAY_NS, np.nan)


def last_activity_before(events: pd.DataFrame, user_ids: np.ndarray, instants: np.ndarray,
                         lifecycle: LifecycleConfig) -> np.ndarray:
    """Time (int64 ns; :data:`NAT` if none) of each query's last activity strictly before its instant.

    Query ``i`` is user ``user_ids[i]`` at ``instants[i]`` (int64 ns; aligned arrays, any number of queries
    per user). ``events`` is an events table of the data contract (``user_id``, ``timestamp``,
    ``event_type``); users without a ``users`` row count like any other.
    """
    user_ids = np.asarray(user_ids, dtype=object)
    instants = np.asarray(instants, dtype=np.int64)
    q_user, names = pd.factorize(user_ids)
    active = events["event_type"].isin(activity_events(lifecycle)).to_numpy()
    e_user = pd.Index(names).get_indexer(events["user_id"].to_numpy(dtype=object)[active])
    e_time = _ns(events["timestamp"])[active][e_user >= 0]
    e_user = e_user[e_user >= 0]
    # Events and queries in one order by (user, time), a query before an event at the same instant (an
    # event at the instant itself is not before it); each query then takes the latest event above it.
    n_events = len(e_user)
    user, time = np.r_[e_user, q_user], np.r_[e_time, instants]
    is_event = np.r_[np.ones(n_events, dtype=bool), np.zeros(len(q_user), dtype=bool)]
    order = np.lexsort((is_event, time, user))
    latest = np.maximum.accumulate(np.where(is_event[order], np.arange(len(order)), -1))
    found = np.maximum(latest, 0)
    own = (latest >= 0) & (user[order][found] == user[order])
    last = np.where(own, time[order][found], NAT)
    query = ~is_event[order]
    out = np.empty(len(q_user), dtype=np.int64)
    out[order[query] - n_events] = last[query]
    return out


def stages_at(events: pd.DataFrame, users: pd.DataFrame, user_ids: np.ndarray, instants: np.ndarray,
              lifecycle: LifecycleConfig) -> np.ndarray:
    """Stage code (int8 into :data:`LIFECYCLE_STAGES`) of each user ``user_ids[i]`` at ``instants[i]`` (ns).

    ``events`` and ``users`` are tables of the data contract (``users``: ``user_id``, ``signup_at``); a user
    without a ``users`` row has no known signup. Every user at several instants: repeat the ids and tile
    the instants, then reshape.
    """
    user_ids = np.asarray(user_ids, dtype=object)
    instants = np.asarray(instants, dtype=np.int64)
    row = pd.Index(users["user_id"]).get_indexer(user_ids)
    signup = np.full(len(user_ids), NAT)
    signup[row >= 0] = _ns(users["signup_at"])[row[row >= 0]]
    last = last_activity_before(events, user_ids, instants, lifecycle)
    window = loyal_window_ns(lifecycle)
    conversions = None if window is None else conversions_before(events, user_ids, instants, window)
    return stage_codes(lifecycle, days_since(instants, signup), days_since(instants, last),
                       conversions).astype(np.int8)


def conversions_before(events: pd.DataFrame, user_ids: np.ndarray, instants: np.ndarray, window: int) -> np.ndarray:
    """Per query (user ``user_ids[i]`` at ``instants[i]``, int64 ns), its user's ``convert`` events in
    ``[instant − window, instant)``: a binary search of each user's run of the (user, time)-sorted events."""
    user_ids = np.asarray(user_ids, dtype=object)
    instants = np.asarray(instants, dtype=np.int64)
    q_user, names = pd.factorize(user_ids)
    converts = (events["event_type"] == "convert").to_numpy()
    e_user = pd.Index(names).get_indexer(events["user_id"].to_numpy(dtype=object)[converts])
    known = e_user >= 0
    e_user, e_time = e_user[known], _ns(events["timestamp"])[converts][known]
    order = np.lexsort((e_time, e_user))
    e_time = e_time[order]
    count = np.bincount(e_user, minlength=len(names)).astype(np.int64)
    first = (np.cumsum(count) - count)[q_user]
    last = first + count[q_user]
    return bounded_search(e_time, first, last, instants) - bounded_search(e_time, first, last, instants - window)


def _ns(timestamps: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds (NaT as :data:`NAT`)."""
    return timestamps.to_numpy(dtype="datetime64[ns]").view("int64")


DOMINANT_SHARE = 0.9
"""A stage holding this share of the users or more is flagged: the definition probably does not fit the data."""


@dataclass(frozen=True)
class StageMix:
    """How many users are in each stage at ``at`` (int64 ns): the users signed up by then (unknown signup
    included). ``dominant`` names a stage that holds :data:`DOMINANT_SHARE` of them or more."""

    at: int
    counts: dict[str, int]
    activity: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def dominant(self) -> str | None:
        return next((s for s, n in self.counts.items() if self.total and n / self.total >= DOMINANT_SHARE), None)

    def lines(self) -> list[str]:
        """The mix in words (one line), and a warning line when one stage dominates."""
        at = pd.Timestamp(self.at, tz="UTC").strftime("%Y-%m-%d %H:%M")
        shares = ", ".join(f"{stage} {n / self.total:.1%} ({n:,})" for stage, n in self.counts.items()) \
            if self.total else "no users"
        out = [f"lifecycle stages at {at} UTC (activity: {', '.join(self.activity)}): {shares}"]
        if self.dominant is not None:
            out.append(f"warning: {self.counts[self.dominant] / self.total:.1%} of the users are `{self.dominant}`: "
                       "check [lifecycle] (activity_events, the thresholds) against how this brand defines an "
                       "active customer; messages targeted to the other stages reach almost nobody")
        return out


def stage_mix(events: pd.DataFrame, users: pd.DataFrame, lifecycle: LifecycleConfig,
              at: int | None = None) -> StageMix:
    """The stage mix of ``users`` at ``at`` (int64 ns; default just after the last event)."""
    times = _ns(events["timestamp"]) if len(events) else np.zeros(0, dtype=np.int64)
    at = int(times.max()) + 1 if at is None and len(times) else int(at if at is not None else 0)
    ids = users["user_id"].to_numpy(dtype=object)
    signup = _ns(users["signup_at"]) if "signup_at" in users else np.full(len(ids), NAT)
    alive = (signup == NAT) | (signup <= at)
    codes = stages_at(events, users, ids[alive], np.full(int(alive.sum()), at, dtype=np.int64), lifecycle)
    names = stages_in_use(lifecycle)
    counts = np.bincount(codes.astype(np.int64), minlength=len(names))
    return StageMix(at, {s: int(n) for s, n in zip(names, counts)}, activity_events(lifecycle))
