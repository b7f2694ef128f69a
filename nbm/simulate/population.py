"""The people of the simulated world: latent traits, observable attributes, consent and identities.

Latent traits (never written to the tables) drive the ground truth: topic interests, per-channel
responsiveness, a preferred local hour and an activity level. Observable attributes are noisy views of
them, as a real profile would be: a stated favourite category that is right 60 % of the time, an age band
that shifts channel responsiveness, an app flag that goes with push and in-app consent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.simulate.config import ACTIVITY_LEVELS, SimConfig

NAT = np.iinfo(np.int64).min
"""int64 nanoseconds of a missing time: a person who never clicked."""

TIMEZONES = (
    "America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
    "Europe/Berlin", "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney",
)
TIMEZONE_WEIGHTS = (0.20, 0.10, 0.12, 0.15, 0.15, 0.12, 0.08, 0.08)
COUNTRIES = ("US", "US", "US", "GB", "DE", "CN", "JP", "AU")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
ACTIVITY_SHARES = (0.10, 0.30, 0.40, 0.20)
SECOND_TOPIC_SHARE = 0.5
"""Share of people with a second favourite topic (``EngagementParams.second_boost``)."""
UNSTATED_FAVOURITE_SHARE = 0.3
"""Share of profiles that leave ``favourite_category`` empty."""
LOYALTY_POINTS_MEDIAN = (400.0, 150.0, 50.0, 10.0)
LOYALTY_POINTS_SPREAD = 0.8
"""``loyalty_points`` = round(log-normal(log median of the activity level, spread)): an observable view of the
activity level."""
CLICKS_PER_DAY = np.array([0.08, 0.04, 0.015, 0.004])
"""Clicks per day before the period of a fully engaged user, by activity level: where each person's last
click lies on day one (what a world whose stages follow clicks starts from)."""


@dataclass(frozen=True)
class Population:
    """Arrays of length ``n`` (users) or ``n × k``; row ``i`` is the user ``user_ids[i]``."""

    user_ids: np.ndarray          # str, canonical ids
    signup_at: np.ndarray         # int64 ns since epoch, UTC
    timezone: np.ndarray          # int index into TIMEZONES
    interest: np.ndarray          # float (n, topics): latent topic interest, logit units
    responsiveness: np.ndarray    # float (n, channels): latent channel responsiveness, logit units
    preferred_hour: np.ndarray    # float, local hour in [0, 24)
    activity: np.ndarray          # int index into ACTIVITY_LEVELS
    initial_engagement: np.ndarray  # float multiplier of the visit rate at the start of the period
    initial_last_visit: np.ndarray  # int64 ns, last visit before the period (signup if none)
    initial_last_click: np.ndarray  # int64 ns, last click before the period; NAT when none
    consent: np.ndarray           # bool (n, channels) at the start of the period
    attributes: pd.DataFrame      # observable attribute columns of the users table
    device_ids: np.ndarray        # str, "" where the user has no second identifier
    cookie_ids: np.ndarray        # str, "" where the user has no third identifier

    @property
    def n(self) -> int:
        return len(self.user_ids)


def build_population(config: SimConfig, rng: np.random.Generator, click_rng: np.random.Generator) -> Population:
    """Draw the users of a world. Vectorised; about 1 s for a million users.

    ``click_rng`` draws each person's last click before the period, apart from ``rng`` so that the rest of
    the population does not depend on it.
    """
    n, n_topics = config.n_users, len(config.topics)
    p = config.engagement
    width = max(6, len(str(n)))
    user_ids = np.char.add("u", np.char.zfill(np.arange(n).astype(str), width)).astype(object)

    start = config.period_start.value
    day = pd.Timedelta(days=1).value
    is_new = rng.random(n) < config.new_user_share
    signup = np.where(
        is_new,
        start + (rng.random(n) * config.n_days * day).astype(np.int64),
        start - (rng.random(n) * 730 * day).astype(np.int64) - day,
    )

    timezone = rng.choice(len(TIMEZONES), size=n, p=TIMEZONE_WEIGHTS)
    favourite = rng.integers(0, n_topics, size=(n, 2))
    interest = rng.normal(0.0, p.interest_spread, size=(n, n_topics)) + p.interest_mean
    interest[np.arange(n), favourite[:, 0]] += p.favourite_boost
    interest[np.arange(n), favourite[:, 1]] += p.second_boost * (rng.random(n) < SECOND_TOPIC_SHARE)

    age = rng.choice(len(AGE_BANDS), size=n, p=(0.15, 0.30, 0.25, 0.18, 0.12))
    app = rng.random(n) < np.array([0.75, 0.65, 0.5, 0.35, 0.2])[age]
    responsiveness = _responsiveness(config, rng, age, app)

    centres = np.asarray(p.preferred_hours, dtype=float)
    preferred = centres[rng.choice(len(centres), size=n, p=p.preferred_hour_shares)]
    preferred = np.mod(preferred + rng.normal(0.0, p.preferred_hour_spread, n), 24.0)
    activity = rng.choice(len(ACTIVITY_LEVELS), size=n, p=ACTIVITY_SHARES)

    # Some existing users have already lapsed, so every lifecycle stage is present on day one.
    initial_engagement = np.where(is_new, 1.2, rng.choice([1.0, 0.35, 0.08], size=n, p=(0.6, 0.25, 0.15)))
    rate = visit_rate(config, activity, initial_engagement)
    days_since_visit = np.minimum(rng.exponential(1.0 / np.maximum(rate, 1e-3)), (start - signup) / day)
    last_visit = np.where(is_new, signup, start - (np.maximum(days_since_visit, 0.0) * day).astype(np.int64))

    country = np.array(COUNTRIES, dtype=object)[timezone]
    consent = _consent(config, rng, app, country)

    stated = np.where(rng.random(n) < p.stated_favourite_accuracy, favourite[:, 0], rng.integers(0, n_topics, n))
    stated_names = np.array(config.topics, dtype=object)[stated]
    stated_names[rng.random(n) < UNSTATED_FAVOURITE_SHARE] = None  # profile left incomplete
    points = np.round(rng.lognormal(np.log(LOYALTY_POINTS_MEDIAN)[activity], LOYALTY_POINTS_SPREAD), 0)
    attributes = pd.DataFrame({
        "country": pd.array(country, dtype="str"),
        "age_band": pd.array(np.array(AGE_BANDS, dtype=object)[age], dtype="str"),
        "app_installed": pd.array(np.where(app, "yes", "no"), dtype="str"),
        "favourite_category": pd.array(stated_names, dtype="str"),
        "loyalty_points": points.astype(float),
    })

    device_ids, cookie_ids = _identities(config, rng, n)
    return Population(
        user_ids=user_ids, signup_at=signup.astype(np.int64), timezone=timezone, interest=interest,
        responsiveness=responsiveness, preferred_hour=preferred, activity=activity,
        initial_engagement=initial_engagement, initial_last_visit=last_visit.astype(np.int64),
        initial_last_click=_last_click(click_rng, activity, initial_engagement, signup, start, is_new),
        consent=consent, attributes=attributes, device_ids=device_ids, cookie_ids=cookie_ids,
    )


def visit_rate(config: SimConfig, activity: np.ndarray, engagement: np.ndarray) -> np.ndarray:
    """Expected organic visits per day: ``visits_per_day`` of each activity level × engagement to
    ``visit_engagement_power``."""
    base = np.asarray(config.visits_per_day, dtype=float)[activity]
    power = config.visit_engagement_power
    return base * (engagement if power == 1.0 else np.power(engagement, power))


def _last_click(rng: np.random.Generator, activity: np.ndarray, engagement: np.ndarray, signup: np.ndarray,
                start: int, is_new: np.ndarray) -> np.ndarray:
    """Each person's last click before the period (int64 ns), :data:`NAT` when none since signup."""
    day = pd.Timedelta(days=1).value
    days_since = rng.exponential(1.0 / np.maximum(CLICKS_PER_DAY[activity] * engagement, 1e-3))
    clicked = ~is_new & (days_since < (start - signup) / day)
    return np.where(clicked, start - (days_since * day).astype(np.int64), NAT).astype(np.int64)


def _responsiveness(config: SimConfig, rng: np.random.Generator, age: np.ndarray, app: np.ndarray) -> np.ndarray:
    """Latent per-channel responsiveness: personal noise N(0, ``channel_spread``) plus :func:`channel_shift`."""
    spread = config.engagement.channel_spread
    return rng.normal(0.0, spread, size=(len(age), len(config.channels))) + channel_shift(config.channels, age, app)


def channel_shift(channels: tuple[str, ...], age: np.ndarray, app: np.ndarray) -> np.ndarray:
    """The observable part of channel responsiveness, shape (n, channels): younger people and app users on
    push and in-app, older people on email. ``age`` indexes ``AGE_BANDS``; ``app`` is bool."""
    shift = np.zeros((len(age), len(channels)))
    youth = (2.0 - age) / 2.0  # +1 for 18-24 … -1 for 55+
    for j, channel in enumerate(channels):
        if channel in ("push", "in_app"):
            shift[:, j] = 0.4 * youth + 0.5 * app
        elif channel == "email":
            shift[:, j] = -(0.3 * youth)
    return shift


def _consent(config: SimConfig, rng: np.random.Generator, app: np.ndarray, country: np.ndarray) -> np.ndarray:
    n = len(app)
    probability = {
        "email": np.full(n, 0.85),
        "sms": np.full(n, 0.35),
        "push": np.where(app, 0.75, 0.03),
        "in_app": np.where(app, 0.9, 0.0),
        "wechat": np.where(country == "CN", 0.85, 0.02),
    }
    columns = [probability.get(c, np.full(n, 0.5)) for c in config.channels]
    return rng.random((n, len(config.channels))) < np.stack(columns, axis=1)


def _identities(config: SimConfig, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Second identifiers: a device id for ``link_share`` of users, a cookie behind it for ``chain_share``."""
    has_device = rng.random(n) < config.link_share
    has_cookie = has_device & (rng.random(n) < config.chain_share / max(config.link_share, 1e-12))
    tokens = rng.integers(0, 2**40, size=(2, n))
    device = np.where(has_device, np.char.add("dev-", np.char.mod("%010x", tokens[0])), "")
    cookie = np.where(has_cookie, np.char.add("ck-", np.char.mod("%010x", tokens[1])), "")
    return device.astype(object), cookie.astype(object)
