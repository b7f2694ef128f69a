"""Knobs of the simulated CRM world (documented in ``docs/simulator.md``).

A :class:`SimConfig` is a frozen value: two worlds built from equal configs are equal, event for event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

DEFAULT_END = pd.Timestamp("2026-11-01T00:00:00Z")
"""The default simulated period ends here, so a default world never lies in the future."""

TOPICS = (
    "fashion", "electronics", "home", "beauty", "sports",
    "travel", "food", "books", "kids", "finance",
)
SIM_CHANNELS = ("email", "sms", "push", "in_app", "wechat")
ACTIVITY_LEVELS = ("power", "core", "casual", "low")
SLOT_HOURS = (8, 10, 12, 15, 18, 21)
"""Local hours at which a message may be scheduled; 21 lies in the default quiet hours."""


@dataclass(frozen=True)
class MessyRates:
    """Rates of injected defects, as shares of the clean rows of each table."""

    duplicate_events: float = 0.01
    late_events: float = 0.005
    malformed_events: float = 0.005
    malformed_users: float = 0.005


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulated world.

    Parameters
    ----------
    n_users
        People in the world at the end of the period (some sign up during it).
    n_days
        Length of the logged period in days.
    seed
        Seed of every random draw; the same config gives the same world.
    start
        First instant of the period (UTC); default ``DEFAULT_END - n_days``.
    epsilon
        Share of user-days on which the logging policy explores: it then picks uniformly among all
        eligible (message, channel, slot) actions and "send nothing".
    n_initial_messages, new_message_every_days
        Catalog at the start, and how often a new message appears (cold start).
    link_share, chain_share
        Share of users who also act under a device id, and share who also act under a cookie linked to
        that device (a chain of links).
    new_user_share
        Share of users who sign up during the period.
    fatigue_half_life_days
        Half-life of the fatigue a contact leaves behind.
    unsubscribe_cost
        Value lost by one unsubscribe, in revenue units; the true value of a policy is expected revenue
        minus this times expected unsubscribes.
    """

    n_users: int = 10_000
    n_days: int = 60
    seed: int = 0
    start: pd.Timestamp | None = None
    epsilon: float = 0.1
    n_initial_messages: int = 40
    new_message_every_days: float = 4.0
    link_share: float = 0.12
    chain_share: float = 0.04
    new_user_share: float = 0.15
    fatigue_half_life_days: float = 3.0
    unsubscribe_cost: float = 10.0
    messy: MessyRates | None = None
    topics: tuple[str, ...] = TOPICS
    channels: tuple[str, ...] = SIM_CHANNELS
    slot_hours: tuple[int, ...] = SLOT_HOURS
    quiet_hours: tuple[int, int] = (21, 8)
    engagement: EngagementParams = field(default_factory=lambda: EngagementParams())

    def __post_init__(self) -> None:
        if self.n_users < 1:
            raise ValueError(f"`n_users` must be at least 1, got {self.n_users!r}")
        if self.n_days < 1:
            raise ValueError(f"`n_days` must be at least 1, got {self.n_days!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"`epsilon` must lie in [0, 1], got {self.epsilon!r}")
        for name in ("link_share", "chain_share", "new_user_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}")

    @property
    def period_start(self) -> pd.Timestamp:
        if self.start is not None:
            start = pd.Timestamp(self.start)
            return start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        return DEFAULT_END - pd.Timedelta(days=self.n_days)

    @property
    def period_end(self) -> pd.Timestamp:
        return self.period_start + pd.Timedelta(days=self.n_days)


@dataclass(frozen=True)
class EngagementParams:
    """Coefficients of the true response model (logit scale unless said otherwise).

    ``P(open) = σ(channel_base + responsiveness + topic_weight·interest + quality + hour_weight·hour_fit
    − quiet_penalty·quiet − fatigue_weight·fatigue + activity_base)``; clicks and conversions follow
    given the previous step. See ``docs/simulator.md``.
    """

    channel_base: tuple[float, ...] = (-1.6, -2.0, -2.3, -1.5, -1.8)
    """Per channel of ``SimConfig.channels``: email, sms, push, in_app, wechat."""
    channel_spread: float = 0.7
    topic_weight: float = 1.0
    hour_weight: float = 0.8
    hour_width: float = 3.0
    quiet_penalty: float = 1.0
    fatigue_weight: float = 0.5
    quality_spread: float = 0.4
    click_base: float = -1.2
    click_topic_weight: float = 0.8
    convert_base: float = -1.8
    convert_topic_weight: float = 0.6
    unsubscribe_base: float = -6.0
    unsubscribe_fatigue_weight: float = 0.6
    unsubscribe_quiet_weight: float = 0.8
    unsubscribe_interest_weight: float = 0.5
    bounce_rate: float = 0.004
    organic_purchase_rate: float = 0.02
