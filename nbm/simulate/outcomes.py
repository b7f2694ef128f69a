"""Drawing what happens in a simulated day: the sends' outcomes and people's own visits and purchases.

Both functions draw from the environment's generator, write events to its log and update its state.
How events are logged mimics a real CRM: outcomes carry the send's ``decision_id`` only part of the time
(the rest must be attributed by window), and people with a second identifier act under it part of the
time (identity resolution must join them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nbm.simulate.catalog import KINDS_INDEX
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.eventlog import ALIAS_COOKIE, ALIAS_DEVICE, EventType
from nbm.simulate.population import visit_rate
from nbm.simulate.truth import DAY_NS, HOUR_NS, Response

if TYPE_CHECKING:
    from nbm.simulate.environment import Environment

MINUTE_NS = 60 * 10**9
OUTCOME_CARRIES_DECISION = {"open": 0.7, "click": 0.7, "convert": 0.5, "unsubscribe": 0.7}
"""Probability that an outcome event carries the decision_id of its send."""
VISIT_UNDER_DEVICE, VISIT_UNDER_COOKIE = 0.4, 0.2
APP_OUTCOME_UNDER_DEVICE = 0.5
ORGANIC_ORDER_VALUE = 40.0
REVENUE_SPREAD = 0.3


def play_sends(env: Environment, actions: Actions, send_at: np.ndarray, response: Response,
               decision_ids: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Log the sends and draw their outcomes; returns the realised counts and revenue."""
    log, s, cat = env.log, env.state, env.world.catalog
    u, m, c = actions.users, actions.messages, actions.channels
    n = len(u)
    log.append(send_at, u, EventType.SEND, message=m, channel=c, decision=decision_ids, propensity=actions.propensity)
    if n == 0:
        return {"opens": 0.0, "clicks": 0.0, "converts": 0.0, "unsubscribes": 0.0, "realised_revenue": 0.0}
    draws = rng.random((5, n))
    bounced = draws[0] < response.p_bounce
    opened = ~bounced & (draws[1] < response.p_open)
    clicked = opened & (draws[2] < response.p_click_given_open)
    converted = clicked & (draws[3] < response.p_convert_given_click)
    unsubscribed = ~bounced & (draws[4] < response.p_unsubscribe)

    delays = rng.exponential(1.0, size=(4, n))
    open_at = send_at + MINUTE_NS + (delays[0] * 2 * HOUR_NS).astype(np.int64)
    click_at = open_at + MINUTE_NS + (delays[1] * 10 * MINUTE_NS).astype(np.int64)
    convert_at = click_at + MINUTE_NS + (np.minimum(delays[2] * 8, 150) * HOUR_NS).astype(np.int64)
    unsub_at = np.where(opened, open_at, send_at) + MINUTE_NS + (delays[3] * HOUR_NS).astype(np.int64)
    revenue = cat.value[m] * rng.lognormal(-0.5 * REVENUE_SPREAD**2, REVENUE_SPREAD, n)

    app = np.isin(np.asarray(env.config.channels, dtype=object)[c], ["push", "in_app"])
    has_device = env.world.population.device_ids[u] != ""
    alias = np.where(app & has_device & (rng.random(n) < APP_OUTCOME_UNDER_DEVICE), ALIAS_DEVICE, 0)
    carries = {k: rng.random(n) < p for k, p in OUTCOME_CARRIES_DECISION.items()}

    def outcome(mask: np.ndarray, at: np.ndarray, kind: EventType, key: str, **extra: np.ndarray) -> None:
        log.append(at[mask], u[mask], kind, alias=alias[mask], message=m[mask], channel=c[mask],
                   decision=np.where(carries[key], decision_ids, -1)[mask],
                   **{k: v[mask] for k, v in extra.items()})

    log.append(send_at[bounced] + 30 * 10**9, u[bounced], EventType.BOUNCE, message=m[bounced], channel=c[bounced],
               decision=decision_ids[bounced])
    outcome(opened, open_at, EventType.OPEN, "open")
    outcome(clicked, click_at, EventType.CLICK, "click")
    outcome(converted, convert_at, EventType.CONVERT, "convert", value=np.round(revenue, 2))
    outcome(unsubscribed, unsub_at, EventType.UNSUBSCRIBE, "unsubscribe")

    # State: fatigue from delivered contacts, consent lost, people re-engaged by what they clicked.
    np.add.at(s.fatigue, u[~bounced], 1.0)
    s.consent[u[bounced | unsubscribed], c[bounced | unsubscribed]] = False
    boosted = u[clicked]
    s.engagement[boosted] = np.minimum(1.5, s.engagement[boosted] * 1.5 + 0.2)
    s.last_visit[boosted] = np.maximum(s.last_visit[boosted], click_at[clicked])
    s.last_click[boosted] = np.maximum(s.last_click[boosted], click_at[clicked])
    welcome = cat.kind[m] == KINDS_INDEX["welcome"]
    np.add.at(s.welcome_sent, u[welcome], 1)
    return {"opens": float(opened.sum()), "clicks": float(clicked.sum()), "converts": float(converted.sum()),
            "unsubscribes": float(unsubscribed.sum()), "realised_revenue": float(revenue[converted].sum())}


def play_organic(env: Environment, ctx: DecisionContext, rng: np.random.Generator) -> float:
    """People's own visits and purchases during the day; returns the organic revenue."""
    pop, s, log, now = env.world.population, env.state, env.log, env.now
    signing_up = np.flatnonzero((pop.signup_at >= now) & (pop.signup_at < now + DAY_NS))
    log.append(pop.signup_at[signing_up], signing_up, EventType.VISIT)
    s.last_visit[signing_up] = pop.signup_at[signing_up]

    users = ctx.users
    rate = visit_rate(env.config, pop.activity[users], s.engagement[users])
    counts = rng.poisson(rate)
    visitor = np.repeat(users, counts)
    k = len(visitor)
    local = np.mod(pop.preferred_hour[visitor] + rng.normal(0.0, 2.5, k), 24.0)
    offset = env.world.truth.utc_offset_hours(visitor, np.full(k, now))
    at = now + (np.mod(local - offset, 24.0) * HOUR_NS).astype(np.int64)
    alias = np.zeros(k, dtype=np.int64)
    draw = rng.random(k)
    alias[(pop.device_ids[visitor] != "") & (draw < VISIT_UNDER_DEVICE)] = ALIAS_DEVICE
    alias[(pop.cookie_ids[visitor] != "") & (draw >= 1.0 - VISIT_UNDER_COOKIE)] = ALIAS_COOKIE
    log.append(at, visitor, EventType.VISIT, alias=alias)
    np.maximum.at(s.last_visit, visitor, at)

    affinity = pop.interest[visitor].max(axis=1)
    buys = rng.random(k) < np.minimum(env.config.engagement.organic_purchase_rate * np.exp(0.3 * (affinity - 1.0)), 0.5)
    order = ORGANIC_ORDER_VALUE * rng.lognormal(-0.5 * REVENUE_SPREAD**2, REVENUE_SPREAD, int(buys.sum()))
    log.append(at[buys] + 5 * MINUTE_NS, visitor[buys], EventType.CONVERT, alias=alias[buys], value=np.round(order, 2))
    return float(order.sum())
