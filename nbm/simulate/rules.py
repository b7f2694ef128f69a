"""The rule-based CRM of the simulated world: the classic lifecycle campaigns a CRM team runs.

Per user and day, the first rule that fires wins (at most one message a day):

1. **welcome** — stage ``new``: up to three welcome messages, on days 0, 3 and 6 after signup;
2. **win-back** — ``at_risk`` without a contact for 7 days, or ``dormant`` without one for 14 days, a
   win-back message that targets the user's stage;
3. **weekly promotion** — on Tuesdays, the newest live promotion, to everybody;
4. **newsletter** — on Fridays, to ``new`` and ``active`` users, the newest live newsletter of the
   favourite category of their profile (the newest of any topic when the profile says nothing).

A message is never sent to a stage it does not target; the stage is the world's own
(``SimConfig.lifecycle``). Channel: the first of email, push, sms, in_app, wechat that the user consents
to and the message allows. Send time: 10:00 local (newsletters 18:00). The rules never look at time
zones' best hours, channel responsiveness, fatigue or message quality: that is what a learned policy can
add.
"""

from __future__ import annotations

import numpy as np

from nbm.config import LIFECYCLE_STAGES
from nbm.simulate.catalog import KINDS_INDEX
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.policies import Policy

CHANNEL_PREFERENCE = ("email", "push", "sms", "in_app", "wechat")
NEW, ACTIVE, AT_RISK, DORMANT = (LIFECYCLE_STAGES.index(s) for s in ("new", "active", "at_risk", "dormant"))
PROMO_WEEKDAY, NEWSLETTER_WEEKDAY = 1, 4
WINBACK_AFTER_DAYS = {AT_RISK: 7, DORMANT: 14}
"""Win-back: days without a contact after which a user of each stage gets one."""


class RuleBasedPolicy(Policy):
    """Lifecycle campaigns and weekly promotions; deterministic (propensity 1)."""

    name = "rules"

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        cat, k = ctx.catalog, ctx.k
        newest = np.argsort(-cat.start_at, kind="stable")  # newest first
        message = np.full(k, -1)
        slot_hour = np.full(k, 10)

        welcome = self._pool(ctx, "welcome", newest)
        welcome = welcome[cat.stages[welcome, NEW]]
        fires = (ctx.stage == NEW) & (ctx.welcome_sent < 3) & (ctx.days_since_signup >= 3 * ctx.welcome_sent)
        if len(welcome):
            message = np.where(fires, welcome[ctx.welcome_sent % len(welcome)], message)

        winback = self._pool(ctx, "winback", newest)
        for stage, days in WINBACK_AFTER_DAYS.items():
            pool = winback[cat.stages[winback, stage]]  # the win-back messages that target this stage
            lapsed = (ctx.stage == stage) & (ctx.days_since_contact >= days)
            if len(pool):
                message = np.where((message < 0) & lapsed, pool[ctx.users % len(pool)], message)

        promo = self._pool(ctx, "promo", newest)
        if ctx.weekday == PROMO_WEEKDAY and len(promo):
            message = np.where(message < 0, promo[0], message)

        if ctx.weekday == NEWSLETTER_WEEKDAY:
            letters = self._pool(ctx, "newsletter", newest)
            if len(letters):
                by_topic = np.full(int(cat.topic.max()) + 1, letters[0])
                for m in letters[::-1]:  # newest last, so it wins; the catalog has tens of messages
                    by_topic[cat.topic[m]] = m
                wanted = np.where(ctx.favourite_topic >= 0, by_topic[np.maximum(ctx.favourite_topic, 0)], letters[0])
                reader = (message < 0) & np.isin(ctx.stage, [NEW, ACTIVE])
                slot_hour = np.where(reader, 18, slot_hour)
                message = np.where(reader, wanted, message)

        # A message that does not target the user's stage is never sent (a world may target any kind).
        targeted = message >= 0
        targeted[targeted] = cat.stages[message[targeted], ctx.stage[targeted]]
        rows = np.flatnonzero(targeted)
        channel = self._channel(ctx, rows, message[rows])
        ok = channel >= 0
        rows, channel = rows[ok], channel[ok]
        slots = np.argmin(np.abs(np.asarray(ctx.slot_hours)[None, :] - slot_hour[rows, None]), axis=1)
        return Actions(ctx.users[rows], message[rows], channel, slots, np.ones(len(rows)))

    @staticmethod
    def _pool(ctx: DecisionContext, kind: str, newest: np.ndarray) -> np.ndarray:
        """Live messages of one kind, newest first."""
        return newest[(ctx.catalog.kind[newest] == KINDS_INDEX[kind]) & ctx.live[newest]]

    @staticmethod
    def _channel(ctx: DecisionContext, rows: np.ndarray, messages: np.ndarray) -> np.ndarray:
        """First preferred channel the user consents to and the message allows; -1 when none."""
        channels = ctx.catalog.channels.shape[1]
        names = list(ctx.environment.config.channels)
        order = np.array([names.index(c) for c in CHANNEL_PREFERENCE if c in names]
                         + [j for j, c in enumerate(names) if c not in CHANNEL_PREFERENCE])
        ok = (ctx.consent[rows] & ctx.catalog.channels[messages])[:, order]
        first = np.argmax(ok, axis=1)
        return np.where(ok.any(axis=1), order[first], -1) if channels else np.full(len(rows), -1)
