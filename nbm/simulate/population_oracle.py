"""The population oracle: the best a policy can do that knows the world's structure and what is observable of
each person, but has learned nothing of any one person's hidden taste.

For a live user ``u`` with observable facts ``x_u`` — the profile (``age_band``, ``app_installed``,
``favourite_category``, ``loyalty_points``, time zone), consent, the world's lifecycle stage, and the contact
history (so also the fatigue, a function of the logged deliveries) — the population oracle values an eligible
action ``a`` = (message, channel, slot) at

    V̄(u, a) = E[ value(θ, a) | x_u ],

the ground truth's value (:mod:`nbm.simulate.truth`, every message's quality and value known) averaged over
the person's hidden traits ``θ`` drawn from their distribution given ``x_u``:

* **topic interest** — the world's prior (N(``interest_mean``, ``interest_spread``) per topic, +
  ``favourite_boost`` on the favourite, + ``second_boost`` on a second topic for half the people), the
  favourite drawn from its posterior given the stated one: the stated topic with probability
  ``acc + (1 − acc) / topics`` (``acc`` = ``stated_favourite_accuracy``), any other ``(1 − acc) / topics``;
  uniform when the profile is empty;
* **channel responsiveness** — N(0, ``channel_spread``) + the shift of the age band and app
  (:func:`~nbm.simulate.population.channel_shift`);
* **preferred hour** — the world's mixture (``preferred_hours``, ``preferred_hour_shares``,
  ``preferred_hour_spread``);
* **activity level and engagement** — level ``l`` with probability ∝ n(stage, l) · P(loyalty_points | l)
  (n: the live users of that stage and level; the points are a rounded log-normal of the level), then the
  engagement of a live user of the same stage and level drawn at random: the population's joint distribution
  of the two given the stage, at the current state.

``V̄`` is a mean over ``draws`` joint draws per user, common to all of that user's actions and seeded by the
policy's ``seed`` and the day. The policy is greedy on ``V̄`` and sends nothing where no action's ``V̄`` is
positive; benchmarks value its choices with the real truth. What it never uses: evidence of taste in a
person's own behaviour (opens, clicks, visits, purchases), nor what the stage says of past clicks where the
stages follow clicks. The gap oracle − population oracle is what learning individuals can win.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.special import ndtr

from nbm.simulate.config import ACTIVITY_LEVELS
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.policies import USER_CHUNK, Policy, ValueOf, best_actions
from nbm.simulate.population import (AGE_BANDS, LOYALTY_POINTS_MEDIAN, LOYALTY_POINTS_SPREAD, SECOND_TOPIC_SHARE,
                                     Population, channel_shift)
from nbm.simulate.truth import DAY_NS, GroundTruth

POSTERIOR_DRAWS = 32
"""Draws of each person's hidden traits that estimate the expected value of an action."""


class PopulationOraclePolicy(Policy):
    """Greedy on each action's expected true value given what is observable of the person (module docstring);
    nothing when no expected value is positive. Deterministic for a ``seed`` (propensity 1)."""

    name = "population_oracle"

    def __init__(self, draws: int = POSTERIOR_DRAWS, seed: int = 0) -> None:
        if draws < 1:
            raise ValueError(f"`draws` must be at least 1, got {draws!r}")
        self.draws = draws
        self.seed = seed

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        # Its own draws, the same for the same day: the world's generator plays the same days with any policy.
        own = np.random.default_rng([self.seed, ctx.now // DAY_NS])
        value_of = expected_value_of(ctx, self.draws, own)
        parts, per_chunk = [], max(1, USER_CHUNK // self.draws)
        for rows in np.array_split(np.arange(ctx.k), max(1, ctx.k // per_chunk)):
            best, value = best_actions(ctx, rows, value_of(rows))
            parts.append(best.take(np.flatnonzero(value > 0)))
        return Actions.concat(parts)


def expected_value_of(ctx: DecisionContext, draws: int,
                      rng: np.random.Generator) -> Callable[[np.ndarray], ValueOf]:
    """``value_of(rows)``: a :data:`~nbm.simulate.policies.ValueOf` of the users ``rows`` of ``ctx`` that
    gives each action's true value averaged over ``draws`` draws of the person's hidden traits
    (:func:`draw_hidden_traits`), at the world's current fatigue."""
    env = ctx.environment
    sampled, engagement = draw_hidden_traits(ctx, draws, rng)
    truth = GroundTruth(env.world.config, sampled, env.world.catalog)
    fatigue = np.repeat(env.state.fatigue[ctx.users], draws)
    each = np.arange(draws)

    def of_rows(rows: np.ndarray) -> ValueOf:
        users = ctx.users[rows]

        def value_of(r: np.ndarray, m: np.ndarray, c: np.ndarray, slot: int) -> np.ndarray:
            virtual = (rows[r][:, None] * draws + each[None, :]).ravel()
            at = np.repeat(env.send_time(users[r], slot), draws)
            value = truth.respond(virtual, np.repeat(m, draws), np.repeat(c, draws), at, fatigue, engagement).value
            return value.reshape(len(r), draws).mean(axis=1)

        return value_of

    return of_rows


def draw_hidden_traits(ctx: DecisionContext, draws: int, rng: np.random.Generator) -> tuple[Population, np.ndarray]:
    """``draws`` joint draws of the hidden traits of every user of ``ctx`` given what is observable of them.

    Returns a population of ``k · draws`` virtual people (row ``i · draws + j``: draw ``j`` for the user
    ``ctx.users[i]``) that carries what :meth:`GroundTruth.respond` reads — time zone (observed), topic
    interest, channel responsiveness, preferred hour, activity level — and their engagement, float
    (``k · draws``,). Its other arrays are the world's, unused.
    """
    world = ctx.environment.world
    config, p, pop = world.config, world.config.engagement, world.population
    n, n_topics = ctx.k * draws, len(config.topics)
    everyone = np.arange(n)

    stated = np.repeat(world.favourite_topic[ctx.users], draws)
    # The favourite's posterior given the stated one: the stated topic w.p. acc + (1 − acc)/topics.
    trusted = (stated >= 0) & (rng.random(n) < p.stated_favourite_accuracy)
    favourite = np.where(trusted, stated, rng.integers(0, n_topics, n))
    interest = rng.normal(p.interest_mean, p.interest_spread, size=(n, n_topics))
    interest[everyone, favourite] += p.favourite_boost
    interest[everyone, rng.integers(0, n_topics, n)] += p.second_boost * (rng.random(n) < SECOND_TOPIC_SHARE)

    attributes = pop.attributes.iloc[ctx.users]
    age = pd.Index(AGE_BANDS).get_indexer(attributes["age_band"].to_numpy(dtype=object))
    app = attributes["app_installed"].to_numpy(dtype=object) == "yes"
    responsiveness = (rng.normal(0.0, p.channel_spread, size=(n, len(config.channels)))
                      + np.repeat(channel_shift(config.channels, age, app), draws, axis=0))

    centres = np.asarray(p.preferred_hours, dtype=float)
    preferred = np.mod(centres[rng.choice(len(centres), size=n, p=p.preferred_hour_shares)]
                       + rng.normal(0.0, p.preferred_hour_spread, n), 24.0)

    activity, engagement = _activity_and_engagement(ctx, attributes["loyalty_points"].to_numpy(dtype=float),
                                                    draws, rng)
    sampled = replace(pop, timezone=np.repeat(pop.timezone[ctx.users], draws), interest=interest,
                      responsiveness=responsiveness, preferred_hour=preferred, activity=activity)
    return sampled, engagement


def _activity_and_engagement(ctx: DecisionContext, points: np.ndarray, draws: int,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws of (activity level, engagement) of every user of ``ctx``, each (``k · draws``,): the level from
    its posterior given the stage and the loyalty points, the engagement of a random live user of the same
    stage and level."""
    env, n_levels = ctx.environment, len(ACTIVITY_LEVELS)
    level = env.world.population.activity[ctx.users]
    cell = ctx.stage * n_levels + level
    count = np.bincount(cell, minlength=(int(ctx.stage.max(initial=0)) + 1) * n_levels).reshape(-1, n_levels)
    # Floored so that far-out points still leave the user's own cell (count ≥ 1) a positive probability.
    posterior = count[ctx.stage] * np.maximum(_points_likelihood(points), 1e-300)
    cdf = np.cumsum(posterior / posterior.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    drawn = (rng.random((ctx.k, draws))[:, :, None] >= cdf[:, None, :]).sum(axis=2).ravel()   # (k · draws,)

    # A random live user of the drawn (stage, level) cell; it holds at least one (its probability was > 0).
    order = np.argsort(cell, kind="stable")
    start = np.searchsorted(cell[order], np.arange(count.size))
    key = np.repeat(ctx.stage, draws) * n_levels + drawn
    pick = order[start[key] + (rng.random(len(key)) * count.ravel()[key]).astype(np.int64)]
    return drawn, env.state.engagement[ctx.users[pick]]


def _points_likelihood(points: np.ndarray) -> np.ndarray:
    """P(loyalty_points | activity level), (users, levels): the points are round(log-normal(log median,
    spread)), so the probability that the log-normal lands within half a point of them."""
    mu = np.log(np.asarray(LOYALTY_POINTS_MEDIAN))[None, :]
    upper = ndtr((np.log(points + 0.5)[:, None] - mu) / LOYALTY_POINTS_SPREAD)
    lower = ndtr((np.log(np.maximum(points - 0.5, 1e-300))[:, None] - mu) / LOYALTY_POINTS_SPREAD)
    return np.where((points > 0.5)[:, None], upper - lower, upper)
