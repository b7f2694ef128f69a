"""The ground truth of the simulated world: how a person responds to a message.

For a send of message ``m`` to user ``u`` on channel ``c`` at time ``t`` (all vectorised):

* ``P(open) = σ(channel_base[c] + responsiveness[u, c] + topic_weight · interest[u, topic(m)]
  + quality[m] + hour_weight · hour_fit(u, t) − quiet_penalty · quiet(u, t) − fatigue_weight · fatigue[u]
  + activity_base[level(u)] + ½ log engagement[u])``
* ``P(click | open) = σ(click_base + click_topic_weight · interest + quality)``
* ``P(convert | click) = σ(convert_base + convert_topic_weight · interest + ½ quality)``; revenue has
  mean ``value[m]``
* ``P(unsubscribe) = σ(unsubscribe_base + unsubscribe_fatigue_weight · fatigue
  + unsubscribe_quiet_weight · quiet − unsubscribe_interest_weight · interest)``

``hour_fit`` is a Gaussian bump around the user's preferred local hour, ``quiet`` is 1 inside the quiet
hours of the user's local time, ``fatigue`` the decayed count of recent contacts. The *true value* of a
send is expected revenue minus ``unsubscribe_cost`` times the unsubscribe probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from nbm.policy.contact import in_quiet_hours
from nbm.simulate.catalog import Catalog
from nbm.simulate.config import SimConfig
from nbm.simulate.population import TIMEZONES, Population

ACTIVITY_BASE = np.array([0.6, 0.3, 0.0, -0.4])
"""Logit shift of every response by activity level (power, core, casual, low)."""
DAY_NS = pd.Timedelta(days=1).value
HOUR_NS = pd.Timedelta(hours=1).value


@dataclass(frozen=True)
class Response:
    """True response probabilities of a batch of sends; every array has the batch's length."""

    p_bounce: np.ndarray
    p_open: np.ndarray              # P(open | not bounced)
    p_click_given_open: np.ndarray
    p_convert_given_click: np.ndarray
    p_unsubscribe: np.ndarray
    expected_revenue: np.ndarray    # E[revenue], unconditional
    value: np.ndarray               # expected_revenue − unsubscribe_cost · p_unsubscribe

    @property
    def p_click(self) -> np.ndarray:
        return (1.0 - self.p_bounce) * self.p_open * self.p_click_given_open

    @property
    def p_convert(self) -> np.ndarray:
        return self.p_click * self.p_convert_given_click

    def to_frame(self) -> pd.DataFrame:
        """One row per send: the unconditional open/click/convert/unsubscribe probabilities and value."""
        return pd.DataFrame({
            "p_open": (1.0 - self.p_bounce) * self.p_open,
            "p_click": self.p_click,
            "p_convert": self.p_convert,
            "p_unsubscribe": self.p_unsubscribe,
            "expected_revenue": self.expected_revenue,
            "value": self.value,
        })


class GroundTruth:
    """Response model of one world. Pure: the state (fatigue, engagement) is passed in."""

    def __init__(self, config: SimConfig, population: Population, catalog: Catalog) -> None:
        self.config = config
        self.population = population
        self.catalog = catalog
        self._first_day = config.period_start.value // DAY_NS - 2
        self._offsets = _offset_table(self._first_day, config.n_days + 400)

    def utc_offset_hours(self, users: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
        """UTC offset in hours of each user's time zone on the day of ``at_ns``."""
        day = np.clip(np.asarray(at_ns) // DAY_NS - self._first_day, 0, self._offsets.shape[1] - 1)
        return self._offsets[self.population.timezone[users], day]

    def local_hour(self, users: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
        """Local hour of day (float in [0, 24)) of each instant in each user's time zone."""
        utc_hour = (np.asarray(at_ns) % DAY_NS) / HOUR_NS
        return np.mod(utc_hour + self.utc_offset_hours(users, at_ns), 24.0)

    def is_quiet(self, local_hour: np.ndarray) -> np.ndarray:
        return in_quiet_hours(np.floor(local_hour), *self.config.quiet_hours)

    def respond(
        self,
        users: np.ndarray,
        messages: np.ndarray,
        channels: np.ndarray,
        send_at: np.ndarray,
        fatigue: np.ndarray,
        engagement: np.ndarray,
    ) -> Response:
        """True response probabilities of sends.

        Parameters
        ----------
        users, messages, channels
            Integer indices into the population, the catalog and ``config.channels`` (length ``k``).
        send_at
            Send instants, int64 nanoseconds since the epoch (UTC), length ``k``.
        fatigue, engagement
            The world's state for the *whole* population (length ``n``), as held by the environment.
        """
        p, pop, cat = self.config.engagement, self.population, self.catalog
        interest = pop.interest[users, cat.topic[messages]]
        local = self.local_hour(users, send_at)
        distance = np.abs(local - pop.preferred_hour[users])
        distance = np.minimum(distance, 24.0 - distance)
        hour_fit = np.exp(-0.5 * (distance / p.hour_width) ** 2) - 0.5
        quiet = self.is_quiet(local).astype(float)
        tired = fatigue[users]
        base = np.asarray(p.channel_base)[channels]
        open_logit = (
            base + pop.responsiveness[users, channels] + p.topic_weight * interest + cat.quality[messages]
            + p.hour_weight * hour_fit - p.quiet_penalty * quiet - p.fatigue_weight * tired
            + ACTIVITY_BASE[pop.activity[users]] + 0.5 * np.log(np.maximum(engagement[users], 1e-3))
        )
        p_open = expit(open_logit)
        p_click = expit(p.click_base + p.click_topic_weight * interest + cat.quality[messages])
        p_convert = expit(p.convert_base + p.convert_topic_weight * interest + 0.5 * cat.quality[messages])
        p_unsub = expit(
            p.unsubscribe_base + p.unsubscribe_fatigue_weight * tired + p.unsubscribe_quiet_weight * quiet
            - p.unsubscribe_interest_weight * interest
        )
        bounce_channels = np.isin(np.asarray(self.config.channels, dtype=object)[channels], ["email", "sms"])
        p_bounce = np.where(bounce_channels, p.bounce_rate, 0.0)
        revenue = (1.0 - p_bounce) * p_open * p_click * p_convert * cat.value[messages]
        return Response(
            p_bounce=p_bounce, p_open=p_open, p_click_given_open=p_click, p_convert_given_click=p_convert,
            p_unsubscribe=p_unsub, expected_revenue=revenue,
            value=revenue - self.config.unsubscribe_cost * p_unsub,
        )


def _offset_table(first_day: int, n_days: int) -> np.ndarray:
    """UTC offsets in hours, shape (len(TIMEZONES), n_days), taken at noon UTC of each day."""
    noon = pd.to_datetime((first_day + np.arange(n_days)) * DAY_NS + 12 * HOUR_NS, utc=True)
    naive = noon.tz_localize(None)
    rows = [(noon.tz_convert(tz).tz_localize(None) - naive) / pd.Timedelta(hours=1) for tz in TIMEZONES]
    return np.stack([np.asarray(r, dtype=float) for r in rows])
