"""The environment: plays any policy forward day by day in a simulated world.

Each day (00:00 UTC) the environment

1. drifts each user's engagement (people lapse; fatigue makes them lapse faster);
2. asks the policy for at most one (message, channel, slot) per live user, in one vectorised call;
3. plays the day's organic visits and purchases, and the sends' outcomes drawn from the ground truth
   (bounce, open, click, convert with revenue, unsubscribe), writing events as a CRM would log them;
4. updates the state: fatigue, consent after unsubscribes and bounces, re-engagement after clicks,
   and the observable history (last visit, last contact, contacts in the last 7 days).

It records, per day, the policy's *true* expected value from the ground truth, and — when asked — the
myopic regret against the oracle that knows the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from nbm.config import LifecycleConfig
from nbm.lifecycle import NAT, stage_codes
from nbm.simulate.config import world_activity
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.eventlog import EventLog, EventType
from nbm.simulate.outcomes import play_organic, play_sends
from nbm.simulate.policies import USER_CHUNK, Policy, best_actions
from nbm.simulate.truth import DAY_NS, HOUR_NS, Response
from nbm.simulate.world import World

LAPSE_HAZARD = 0.012
"""Daily probability that a person's engagement halves, before fatigue."""
LAPSE_FATIGUE_HAZARD = 0.02
"""Extra lapse probability per unit of fatigue above 2."""
RECOVERY_RATE = 0.004
"""Daily probability that a lapsed person comes back by themselves."""


@dataclass
class State:
    """The mutable state of a world; arrays over the population."""

    fatigue: np.ndarray           # decayed count of contacts (latent)
    engagement: np.ndarray        # multiplier of the visit rate and responses (latent)
    consent: np.ndarray           # bool (n, channels)
    last_visit: np.ndarray        # int64 ns, observable: organic visits and the landings of clicks
    last_click: np.ndarray        # int64 ns, observable; NAT when never
    last_contact: np.ndarray      # int64 ns, observable; int64 min when never
    contacts: np.ndarray          # int (7, n): sends per day in the last 7 days (ring buffer)
    welcome_sent: np.ndarray      # int


class Environment:
    """Play policies forward in ``world``; deterministic for a ``seed``.

    ``lifecycle`` defines the stage of the decision contexts (what the world's rules target and its
    eligibility checks); by default the world's own, ``SimConfig.lifecycle``.
    """

    def __init__(self, world: World, seed: int = 0, lifecycle: LifecycleConfig | None = None) -> None:
        self.world = world
        self.config = world.config
        self.lifecycle = lifecycle or world.config.lifecycle
        self.activity = world_activity(self.lifecycle)
        self.rng = np.random.default_rng(seed)
        pop = world.population
        self.state = State(
            fatigue=np.zeros(pop.n), engagement=pop.initial_engagement.copy(), consent=pop.consent.copy(),
            last_visit=pop.initial_last_visit.copy(), last_click=pop.initial_last_click.copy(),
            last_contact=np.full(pop.n, np.iinfo(np.int64).min),
            contacts=np.zeros((7, pop.n), dtype=np.int64), welcome_sent=np.zeros(pop.n, dtype=np.int64),
        )
        self.day = 0
        self.log = EventLog(world)
        self.decisions = 0

    @property
    def now(self) -> int:
        """The start of the current day, int64 ns (UTC)."""
        return self.config.period_start.value + self.day * DAY_NS

    # -- ground truth at the current state ---------------------------------------------------------
    def respond(self, users: np.ndarray, messages: np.ndarray, channels: np.ndarray, send_at: np.ndarray) -> Response:
        """True response probabilities of sends given the world's current state."""
        return self.world.truth.respond(users, messages, channels, send_at, self.state.fatigue, self.state.engagement)

    def send_time(self, users: np.ndarray, slots: np.ndarray | int) -> np.ndarray:
        """UTC instant (int64 ns) of each slot's local hour within the 24 hours after ``now``."""
        local = np.asarray(self.config.slot_hours)[slots]
        offset = self.world.truth.utc_offset_hours(users, np.full(len(users), self.now))
        return self.now + (np.mod(local - offset, 24.0) * HOUR_NS).astype(np.int64)

    def history(self) -> pd.DataFrame:
        """Events logged so far (before ``now``), as an ``events`` table of the data contract."""
        return self.log.to_frame(until=self.now)

    # -- the day loop ------------------------------------------------------------------------------
    def context(self) -> DecisionContext:
        """What a policy sees at the start of the current day."""
        pop, s, now = self.world.population, self.state, self.now
        users = np.flatnonzero(pop.signup_at < now)
        since_signup = (now - pop.signup_at[users]) / DAY_NS
        last = {"visit": s.last_visit, "click": s.last_click}[self.activity][users]
        since_activity = np.where(last == NAT, np.inf, (now - np.where(last == NAT, now, last)) / DAY_NS)
        stage = stage_codes(self.lifecycle, since_signup, since_activity)
        never = s.last_contact[users] == np.iinfo(np.int64).min
        since_contact = np.where(never, np.inf, (now - s.last_contact[users]) / DAY_NS)
        return DecisionContext(
            now=now, weekday=int(pd.Timestamp(now, tz="UTC").weekday()), users=users, stage=stage,
            consent=s.consent[users], days_since_signup=since_signup, days_since_contact=since_contact,
            contacts_7d=s.contacts[:, users].sum(axis=0), welcome_sent=s.welcome_sent[users],
            favourite_topic=self.world.favourite_topic[users], live=self.world.catalog.live(now) & (self.world.catalog.end_at >= now + DAY_NS),
            catalog=self.world.catalog, slot_hours=self.config.slot_hours, environment=self,
        )

    def step(self, policy: Policy, track_regret: bool = False,
             observer: Callable[[DecisionContext], None] | None = None) -> dict[str, float]:
        """Play one day of ``policy``; return that day's metrics.

        ``observer`` sees each day's context after the state has drifted and before the policy acts (to
        judge other policies' choices against the same truth); it must not draw from ``self.rng``.
        """
        rng, s, now = self.rng, self.state, self.now
        self._drift(rng)
        ctx = self.context()
        if observer is not None:
            observer(ctx)
        actions = policy.act(ctx, rng)
        self._check(ctx, actions)
        send_at = self.send_time(actions.users, actions.slots)
        response = self.respond(actions.users, actions.messages, actions.channels, send_at)
        metrics = {
            "day": float(self.day), "live_users": float(ctx.k), "sends": float(len(actions)),
            "expected_opens": float(((1 - response.p_bounce) * response.p_open).sum()),
            "expected_converts": float(response.p_convert.sum()),
            "expected_revenue": float(response.expected_revenue.sum()),
            "expected_unsubscribes": float(response.p_unsubscribe.sum()),
            "true_value": float(response.value.sum()),
        }
        if track_regret:
            metrics["oracle_value"] = self._oracle_value(ctx)
            metrics["regret"] = metrics["oracle_value"] - metrics["true_value"]
        # One decision per live user and day, sends or not; a send carries its user's decision id.
        decided = self.decisions + np.arange(ctx.k)
        self.decisions += ctx.k
        decision_ids = decided[np.searchsorted(ctx.users, actions.users)]      # ctx.users is sorted
        nothing = np.ones(ctx.k) if actions.nothing_propensity is None else actions.nothing_propensity
        propensity = nothing.copy()
        propensity[np.searchsorted(ctx.users, actions.users)] = actions.propensity
        self.log.decide(now, ctx.users, decided, propensity)
        metrics.update(play_sends(self, actions, send_at, response, decision_ids, rng))
        metrics["organic_revenue"] = play_organic(self, ctx, rng)
        ring = self.day % 7
        s.contacts[ring] = 0
        np.add.at(s.contacts[ring], actions.users, 1)
        s.last_contact[actions.users] = np.maximum(s.last_contact[actions.users], send_at)
        s.fatigue *= 0.5 ** (1.0 / self.config.fatigue_half_life_days)
        self.day += 1
        return metrics

    def run(self, policy: Policy, days: int | None = None, track_regret: bool = False) -> pd.DataFrame:
        """Play ``days`` days (default: the rest of the configured period); one row of metrics per day."""
        days = self.config.n_days - self.day if days is None else days
        return pd.DataFrame([self.step(policy, track_regret) for _ in range(days)])

    def _drift(self, rng: np.random.Generator) -> None:
        s = self.state
        hazard = LAPSE_HAZARD + LAPSE_FATIGUE_HAZARD * np.maximum(s.fatigue - 2.0, 0.0)
        lapse = rng.random(len(hazard)) < hazard
        recover = rng.random(len(hazard)) < RECOVERY_RATE
        s.engagement = np.where(lapse, s.engagement * 0.5, s.engagement)
        s.engagement = np.where(recover, np.maximum(s.engagement, 1.0), s.engagement)

    def _check(self, ctx: DecisionContext, actions: Actions) -> None:
        """A policy may not break consent, a message's channels, or its live window."""
        if not len(actions):
            return
        if not np.isin(actions.users, ctx.users).all():
            raise ValueError("policy chose a user who has not signed up yet")
        cat = self.world.catalog
        bad = (~self.state.consent[actions.users, actions.channels] | ~cat.channels[actions.messages, actions.channels]
               | ~ctx.live[actions.messages])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"policy chose an ineligible action: user {self.world.population.user_ids[actions.users[i]]}, "
                f"message {cat.table['message_id'].iloc[actions.messages[i]]}, "
                f"channel {self.config.channels[actions.channels[i]]} ({int(bad.sum())} such actions)"
            )

    def _oracle_value(self, ctx: DecisionContext) -> float:
        total = 0.0
        for rows in np.array_split(np.arange(ctx.k), max(1, ctx.k // USER_CHUNK)):
            _, value = best_actions(ctx, rows)
            total += float(np.maximum(value, 0.0).sum())
        return total


__all__ = ["Environment", "State", "EventType"]
