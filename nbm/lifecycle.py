"""The lifecycle definition — one, used by the features, the decision path, ``nbm report`` and ``nbm ab``.

A user's stage at an instant ``t`` is a code into :data:`LIFECYCLE_STAGES` (new 0, active 1, at_risk 2,
dormant 3), by the thresholds of ``[lifecycle]`` (:class:`~nbm.config.LifecycleConfig`):

* ``new`` while the days since ``signup_at`` are below ``new_days`` (an unknown signup is never new);
* else by the days since the user's last **activity** strictly before ``t``: at most ``at_risk_after_days``
  → ``active``, at most ``dormant_after_days`` → ``at_risk``, more (or no activity at all) → ``dormant``.

Activity is an event whose type is in :func:`activity_events` — a visit, a click or a conversion: what the
person did — not what was done to them (sends, bounces), nor an open, which a mail client can register alone.
Every stage reads those types from :func:`activity_events` alone, so that making them a setting changes one
line. (The activity *states* of the features and the report — power, core, casual, low — are another
concept: visits in 30 days against an ideal frequency, ``[activity]``.)

Days are time differences divided by a day. :func:`stages_at` (``nbm report``, ``nbm ab``) subtracts int64
nanoseconds before dividing, so a visit exactly ``at_risk_after_days`` before ``t`` is ``active``. The features
and the decision path subtract the last activity time as float64 nanoseconds
(``features.keys.KeyedIndex.last_time``), which holds epoch times of 2006–2043 to 256 ns. With thresholds of
whole seconds the two agree exactly for timestamps of microsecond resolution or coarser, the boundary itself
included (tests/test_lifecycle_agreement.py pins it); only nanosecond timestamps within 256 ns of a threshold
could fall on different sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nbm.config import LIFECYCLE_STAGES, LifecycleConfig

__all__ = ["ACTIVITY_EVENTS", "LIFECYCLE_STAGES", "activity_events", "days_since", "last_activity_before",
           "stage_codes", "stages_at"]

DAY_NS = 86_400 * 10**9
NAT = np.iinfo(np.int64).min
"""int64 nanoseconds of a missing time (``NaT``)."""

ACTIVITY_EVENTS: tuple[str, ...] = ("visit", "click", "convert")
"""Event types (``events.event_type``) that count as a user's activity for the lifecycle stage, by default."""


def activity_events(lifecycle: LifecycleConfig) -> tuple[str, ...]:
    """The event types that count as activity under ``lifecycle`` — the one place every stage reads them.

    Today always :data:`ACTIVITY_EVENTS`; a later ``[lifecycle] activity_events`` setting is returned here.
    """
    return ACTIVITY_EVENTS


def stage_codes(lifecycle: LifecycleConfig, days_since_signup: np.ndarray,
                days_since_activity: np.ndarray) -> np.ndarray:
    """Stage codes into :data:`LIFECYCLE_STAGES` (new 0, active 1, at_risk 2, dormant 3), any shape.

    ``days_since_signup`` (NaN: unknown signup, never ``new``) and ``days_since_activity`` (NaN or inf: no
    activity, ``dormant``) broadcast together; the thresholds are ``lifecycle``'s.
    """
    activity = np.asarray(days_since_activity)
    # Nested np.where: np.select's argument handling costs more than the comparisons on a decision's row.
    return np.where(np.asarray(days_since_signup) < lifecycle.new_days, 0,
                    np.where(activity <= lifecycle.at_risk_after_days, 1,
                             np.where(activity <= lifecycle.dormant_after_days, 2, 3)))


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
    return stage_codes(lifecycle, days_since(instants, signup), days_since(instants, last)).astype(np.int8)


def _ns(timestamps: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds (NaT as :data:`NAT`)."""
    return timestamps.to_numpy(dtype="datetime64[ns]").view("int64")
