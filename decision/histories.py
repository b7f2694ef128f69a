"""Send histories: each decision's user's sends before its time, which the contact policy counts.

:class:`SendIndex` sorts a log's sends by (user, time) once; each decision's history is then a contiguous
run of it, found by a vectorised binary search. The service keeps one index of its snapshot and adds the
state store's sends (feedback, planned items) per request; batch scoring and off-policy replay index the
data directory's events. How far back a history reaches is :func:`lookback_ns`, one rule for every path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.compute import DAY_NS
from features.pipeline import FeatureStore
from nbm.arrays import bounded_search, prepend
from nbm.config import ContactPolicyConfig
from nbm.policy.contact import SendHistories


def lookback_ns(policy: ContactPolicyConfig) -> int:
    """How far back a decision's history reaches (ns): the contact policy's longest window — a week for the
    weekly caps, or the message cooldown when longer — plus a day."""
    return int((max(7.0, policy.message_cooldown_days) + 1.0) * DAY_NS)


@dataclass(frozen=True)
class SendIndex:
    """A log's sends sorted by (user, time): user ``users[i]``'s are ``times[start[i]:start[i] + count[i]]``
    (with their ``channels`` and ``messages``), equal times in the log's order."""

    users: pd.Index
    start: np.ndarray
    count: np.ndarray
    times: np.ndarray
    channels: np.ndarray
    messages: np.ndarray

    @classmethod
    def of(cls, events: pd.DataFrame) -> SendIndex:
        """The index of the ``send`` rows of ``events`` (the data contract's table)."""
        sends = events[events["event_type"].to_numpy(dtype=object) == "send"]
        codes, users = pd.factorize(sends["user_id"].to_numpy(dtype=object))
        times = sends["timestamp"].to_numpy(dtype="int64")
        order = np.lexsort((times, codes))
        count = np.bincount(codes, minlength=len(users)).astype(np.int64)
        return cls(pd.Index(users, dtype=object), (np.cumsum(count) - count).astype(np.int64), count,
                   times[order], sends["channel"].to_numpy(dtype=object)[order],
                   sends["message_id"].to_numpy(dtype=object)[order])

    def histories(self, user_ids: np.ndarray, now: np.ndarray, lookback: int,
                  extra: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray] | None] | None = None) -> SendHistories:
        """Each decision's sends in ``[now[i] − lookback, now[i])`` (ns), grouped by decision.

        ``extra[i]``, when given, are more sends of decision ``i`` — ``(times, channels, messages)``, any
        times — that count whatever their time (the service's state store: feedback and planned items,
        which may lie after a ``now`` in the past); they follow the indexed sends of equal time.
        """
        user_ids = np.asarray(user_ids, dtype=object)
        now = np.asarray(now, dtype=np.int64)
        n = len(user_ids)
        if len(self.users):
            position = self.users.get_indexer(user_ids)
            known = position >= 0
            start = np.where(known, self.start[np.maximum(position, 0)], 0)
            count = np.where(known, self.count[np.maximum(position, 0)], 0)
        else:                                   # a log without sends
            start = count = np.zeros(n, dtype=np.int64)
        lo = bounded_search(self.times, start, start + count, now - lookback)
        hi = bounded_search(self.times, start, start + count, now)
        sizes = hi - lo
        take = np.repeat(lo - prepend(0, np.cumsum(sizes)[:-1]), sizes) + np.arange(int(sizes.sum()))
        parts = [(np.repeat(np.arange(n, dtype=np.int64), sizes), self.times[take], self.channels[take],
                  self.messages[take])]
        for i, more in enumerate(extra or ()):
            if more is not None and len(more[0]):
                parts.append((np.full(len(more[0]), i, dtype=np.int64), *more))
        if len(parts) == 1:
            group, times, channels, messages = parts[0]
            return SendHistories(group, times, channels, messages) if len(group) else SendHistories.empty()
        group, times, channels, messages = (np.concatenate([p[j] for p in parts]) for j in range(4))
        order = np.lexsort((times, group))
        return SendHistories(group[order].astype(np.int64), times[order].astype(np.int64),
                             channels[order].astype(object), messages[order].astype(object))


def send_histories(store: FeatureStore, user_ids: np.ndarray, now: np.ndarray, lookback_days: float) -> SendHistories:
    """Each decision's user's sends in the ``lookback_days`` before its ``now``, from the store's events (an
    index built for this call: callers that decide more than once keep a :class:`SendIndex`)."""
    return SendIndex.of(store.dataset.events).histories(user_ids, now, int(lookback_days * DAY_NS))
