"""Knobs of the simulated CRM world (documented in ``docs/simulator.md``).

A :class:`SimConfig` is a frozen value: two worlds built from equal configs are equal, event for event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from nbm.config import LIFECYCLE_STAGES, LifecycleConfig

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
KIND_VALUE = (30.0, 60.0, 20.0, 40.0)
"""Mean revenue of a conversion by kind of message (newsletter, promo, welcome, winback)."""
KIND_STAGES: tuple[tuple[str, ...], ...] = ((), (), ("new",), ("at_risk", "dormant"))
"""Lifecycle stages each kind of message targets (newsletter, promo, welcome, winback); empty = all."""
VISITS_PER_DAY = (0.8, 0.35, 0.12, 0.03)
"""Expected organic visits per day of a fully engaged user, by activity level (power, core, casual, low)."""


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
    lifecycle
        The world's *own* lifecycle definition: the stage its rules target and its eligibility checks
        (``DecisionContext.stage``). Its ``activity_events`` may be ``("visit", "click", "convert")`` or
        ``("visit", "click")`` (the world's last visit: visits, and the landing of a click) or ``("click",)``
        (the last click); see :func:`world_activity`. No ``loyal`` stage.
    visits_per_day, visit_engagement_power
        Organic visits per day by activity level, scaled by engagement to this power (0: visits ignore
        engagement and say nothing of how a person responds).
    evergreen_share, message_lifetime_days, initial_message_age_days, promo_live_days
        Catalog turnover: the share of newsletters that never end, the (min, max) days the others live,
        how long before the period the initial messages started (at most), and how long a weekly
        promotion lives.
    kind_value, kind_stages
        Mean conversion value and targeted stages of each kind of message (newsletter, promo, welcome,
        winback).
    preset
        Name of the preset this config was built from (``nbm.simulate.presets``), ``None`` for the default
        world; ``world.json`` records it so that the world can be rebuilt.
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
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    visits_per_day: tuple[float, ...] = VISITS_PER_DAY
    visit_engagement_power: float = 1.0
    evergreen_share: float = 0.5
    message_lifetime_days: tuple[float, float] = (30.0, 120.0)
    initial_message_age_days: float = 60.0
    promo_live_days: float = 14.0
    kind_value: tuple[float, ...] = KIND_VALUE
    kind_stages: tuple[tuple[str, ...], ...] = KIND_STAGES
    preset: str | None = None

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
        if not 0.0 <= self.evergreen_share <= 1.0:
            raise ValueError(f"`evergreen_share` must lie in [0, 1], got {self.evergreen_share!r}")
        low, high = self.message_lifetime_days
        if not 0.0 < low <= high:
            raise ValueError(f"`message_lifetime_days` must be (min, max) with 0 < min <= max, got "
                             f"{self.message_lifetime_days!r}")
        if len(self.visits_per_day) != len(ACTIVITY_LEVELS):
            raise ValueError(f"`visits_per_day` needs one rate per activity level {ACTIVITY_LEVELS}, "
                             f"got {self.visits_per_day!r}")
        if len(self.kind_value) != 4 or len(self.kind_stages) != 4:
            raise ValueError("`kind_value` and `kind_stages` need one entry per kind of message (newsletter, "
                             f"promo, welcome, winback), got {self.kind_value!r} and {self.kind_stages!r}")
        unknown = sorted({s for stages in self.kind_stages for s in stages} - set(LIFECYCLE_STAGES[:4]))
        if unknown:
            raise ValueError(f"`kind_stages`: unknown stage(s) {unknown}; expected among {list(LIFECYCLE_STAGES[:4])}")
        world_activity(self.lifecycle)

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
    interest_mean: float = -0.8
    """Latent topic interest: N(interest_mean, interest_spread) per user and topic, plus
    ``favourite_boost`` on a favourite topic and ``second_boost`` on a second one for half the people."""
    interest_spread: float = 0.6
    favourite_boost: float = 2.0
    second_boost: float = 1.2
    stated_favourite_accuracy: float = 0.6
    """Share of profiles whose ``favourite_category`` is the true favourite (the others name any topic)."""
    preferred_hours: tuple[float, ...] = (8.0, 12.5, 19.5)
    """Centres of the preferred local send hours; each person draws one (``preferred_hour_shares``) and
    adds N(0, ``preferred_hour_spread``) hours."""
    preferred_hour_shares: tuple[float, ...] = (0.30, 0.25, 0.45)
    preferred_hour_spread: float = 1.2
    value_spread: float = 0.35
    """Spread of a message's conversion value around its kind's: value × log-normal(0, value_spread)."""


WorldActivity = Literal["visit", "click"]


def world_activity(lifecycle: LifecycleConfig) -> WorldActivity:
    """Which trace of the world is a person's last activity under ``lifecycle`` (the world's own definition).

    The world keeps two: the last **visit** (organic visits, and the landing on the site after a click;
    conversions happen during one or after a click) for ``activity_events`` ``("visit", "click", "convert")``
    or ``("visit", "click")``, and the last **click** for ``("click",)``. Any other definition, or a
    ``loyal`` stage, is refused: the world could not follow it exactly.
    """
    events = set(lifecycle.activity_events)
    if events in ({"visit", "click", "convert"}, {"visit", "click"}):
        activity: WorldActivity = "visit"
    elif events == {"click"}:
        activity = "click"
    else:
        raise ValueError("`lifecycle.activity_events`: a simulated world follows (visit, click, convert), "
                         f"(visit, click) or (click) alone, got {lifecycle.activity_events!r}")
    if lifecycle.loyal_min_conversions > 0:
        raise ValueError("`lifecycle.loyal_min_conversions`: a simulated world has no loyal stage, got "
                         f"{lifecycle.loyal_min_conversions!r}")
    return activity
