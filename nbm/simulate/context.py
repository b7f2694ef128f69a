"""What a policy sees when it decides, and what it answers, in the simulated world.

Each simulated day the environment builds one :class:`DecisionContext` for every live user at the start
of the day (00:00 UTC) and asks the policy for at most one :class:`Actions` row per user: a message, a
channel and a send slot (a local hour of ``SimConfig.slot_hours`` within the next 24 hours), with the
probability with which the policy chose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nbm.simulate.catalog import Catalog
from nbm.simulate.truth import DAY_NS, HOUR_NS

if TYPE_CHECKING:
    from nbm.simulate.environment import Environment


@dataclass(frozen=True)
class DecisionContext:
    """The observable state of the ``k`` users a policy decides for on one day.

    Every per-user array has length ``k`` and is aligned with ``users``. ``stage`` follows
    ``nbm.config.LIFECYCLE_STAGES`` and is derived from observable facts only (signup and the last
    activity: a visit, or a click in a world whose stages follow clicks) by the world's own lifecycle
    definition (``SimConfig.lifecycle``), with :func:`nbm.lifecycle.stage_codes`.
    """

    now: int                        # int64 ns, the start of the day (UTC)
    weekday: int                    # 0 = Monday
    users: np.ndarray               # int indices into the population
    stage: np.ndarray               # int index into LIFECYCLE_STAGES
    consent: np.ndarray             # bool (k, channels), after unsubscribes and bounces
    days_since_signup: np.ndarray   # float days
    days_since_contact: np.ndarray  # float days; inf when never contacted
    contacts_7d: np.ndarray         # int, sends in the last 7 days
    welcome_sent: np.ndarray        # int, welcome messages received so far
    favourite_topic: np.ndarray     # int index into topics; -1 when the profile does not say
    live: np.ndarray                # bool (messages,): messages that may be sent at any time today
    catalog: Catalog
    slot_hours: tuple[int, ...]
    environment: Environment

    @property
    def k(self) -> int:
        return len(self.users)

    def eligible(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Eligible (message, channel) pairs, bool of shape (len(rows), messages, channels).

        A pair is eligible when the message is live, targets the user's stage, allows the channel, and
        the user consents to the channel. ``rows`` selects users by position in this context.
        """
        rows = np.arange(self.k) if rows is None else rows
        cat = self.catalog
        targeted = cat.stages[:, self.stage[rows]].T & self.live[None, :]          # (r, m)
        return targeted[:, :, None] & cat.channels[None, :, :] & self.consent[rows][:, None, :]

    def actions_at(self, rows: np.ndarray, message_ids: np.ndarray, channels: np.ndarray, send_at: np.ndarray,
                   propensity: np.ndarray) -> tuple[Actions, np.ndarray, int]:
        """Answers that name a send instant (an nbm decision's items) as the world's actions.

        ``rows`` are positions of users in this context, each with a message id, a channel and ``send_at``
        (int64 ns). An instant is played at the world's slot of the same local hour today; one whose local
        hour is no slot hour is dropped, and one outside today (quiet hours moved it to tomorrow morning) is
        played at today's slot of its hour and counted as ``moved``. The world's own check (liveness,
        stage, consent) has the last word. Returns (the actions, the positions of ``rows`` kept, moved).
        """
        rows = np.asarray(rows, dtype=np.int64)
        world = self.environment.world
        catalog = pd.Index(world.catalog.table["message_id"].astype(str))
        message = catalog.get_indexer(np.asarray(message_ids, dtype=str))
        channel = pd.Index(list(world.config.channels)).get_indexer(np.asarray(channels, dtype=str))
        at = np.asarray(send_at, dtype=np.int64)
        offset = world.truth.utc_offset_hours(self.users[rows], np.full(len(rows), self.now))
        local = np.round(((at - self.now) / HOUR_NS + offset) % 24).astype(np.int64) % 24
        slot_of_hour = np.full(24, -1, dtype=np.int64)
        slot_of_hour[np.asarray(self.slot_hours, dtype=np.int64)] = np.arange(len(self.slot_hours))
        slot = slot_of_hour[local]
        moved = int(((slot < 0) | (at < self.now) | (at >= self.now + DAY_NS)).sum())
        ok = (slot >= 0) & (message >= 0) & (channel >= 0)
        ok[ok] = self.eligible(rows[ok])[np.arange(int(ok.sum())), message[ok], channel[ok]]
        keep = np.flatnonzero(ok)
        return (Actions(self.users[rows[keep]], message[keep], channel[keep], slot[keep],
                        np.asarray(propensity, dtype=float)[keep]), keep, moved)

    def n_eligible_actions(self) -> np.ndarray:
        """Number of eligible (message, channel, slot) actions of every user, int (k,).

        Counted per (stage, consent pattern) and looked up, so it costs O(k) rather than
        O(k × messages × channels).
        """
        cat, n_channels = self.catalog, self.consent.shape[1]
        patterns = (np.arange(2 ** n_channels)[:, None] >> np.arange(n_channels)[None, :]) & 1   # (2^C, C)
        pairs = cat.channels.astype(np.int64) @ patterns.T                                          # (m, 2^C)
        per_stage = (cat.stages & self.live[:, None]).T.astype(np.int64) @ pairs                   # (stages, 2^C)
        code = self.consent.astype(np.int64) @ (1 << np.arange(n_channels))
        return per_stage[self.stage, code] * len(self.slot_hours)


@dataclass(frozen=True)
class Actions:
    """A policy's answer: at most one (message, channel, slot) per user, with its propensity.

    ``users`` are population indices (a subset of the context's users, each at most once); users left
    out get nothing today. ``propensity`` is the probability with which the policy chose exactly this
    action for this user (1.0 for a deterministic policy). ``nothing_propensity``, when a policy sets it,
    is aligned with the context's users: the probability of sending that user nothing today (``None``
    means 1.0 for every user left out, as for a deterministic policy).
    """

    users: np.ndarray
    messages: np.ndarray
    channels: np.ndarray
    slots: np.ndarray
    propensity: np.ndarray
    nothing_propensity: np.ndarray | None = None

    @classmethod
    def empty(cls) -> Actions:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none, none, none, np.zeros(0))

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray) -> Actions:
        return Actions(self.users[index], self.messages[index], self.channels[index], self.slots[index],
                       self.propensity[index])

    @staticmethod
    def concat(parts: list[Actions]) -> Actions:
        parts = [p for p in parts if len(p)] or [Actions.empty()]
        return Actions(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("users", "messages", "channels", "slots", "propensity")))
