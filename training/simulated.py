"""A trained model acting in the simulated world, so its *true* value can be compared with baselines.

:class:`ModelPolicy` decides as the service does — :func:`decision.decide.decide_many`, the one decision
path: every day, for every live user, the eligible candidates as of that morning (features from the log
so far), the contact policy on the user's past sends, two-stage scoring by the scoring artifact, the
greedy choice of calibrated probability × message value × weight, and nothing when the best is below
``threshold`` (the old policy of its own sent only above it, and ignored the contact policy). Its items are played at the world's slot of their local hour
(:meth:`nbm.simulate.context.DecisionContext.actions_at`); greedy, so propensity 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from decision.decide import decide_many
from decision.histories import SendIndex, lookback_ns
from features.compute import HOUR_NS
from features.pipeline import FeatureStore
from nbm.artifact import ScoringArtifact
from nbm.config import NbmConfig
from nbm.dataset import build_dataset
from nbm.policy.contact import in_quiet_hours
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.policies import Policy


class ModelPolicy(Policy):
    """nbm's greedy decision (:func:`decision.decide.decide_many`); nothing when the best value is below
    ``threshold``."""

    name = "model"

    def __init__(self, artifact: ScoringArtifact, config: NbmConfig, threshold: float = 0.0, seed: int = 0) -> None:
        self.artifact = artifact
        self.config = config
        self.threshold = threshold
        # Its own draws (greedy draws between ties): the world's generator plays the same days with any policy.
        self.rng = np.random.default_rng(seed)

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        env = ctx.environment
        world = env.world
        tables = {"events": env.history(), "messages": world.catalog.table, "users": _users(world),
                  "links": _links(world)}
        dataset, _ = build_dataset(tables, self.config, now=pd.Timestamp(ctx.now, tz="UTC"))
        store = FeatureStore.build(dataset, self.config, strengths=self.artifact.prior_strengths)
        users = world.population.user_ids[ctx.users]
        now = np.full(ctx.k, ctx.now, dtype=np.int64)
        histories = SendIndex.of(dataset.events).histories(users, now, lookback_ns(self.config.contact_policy))
        decided = decide_many(store, self.artifact, users, now, histories, self.rng, threshold=self.threshold)
        slate, rows = decided.model.slate, decided.model.scored.rows
        if not len(slate.row):
            return Actions.empty()
        actions, _, _ = ctx.actions_at(slate.decision, np.asarray(rows.message_id[slate.row], dtype=object),
                                       np.asarray(rows.channel[slate.row], dtype=object), slate.send_at,
                                       np.ones(len(slate.row)))
        return actions


def _users(world) -> pd.DataFrame:
    from nbm.simulate.generate import users_table

    return users_table(world)


def _links(world) -> pd.DataFrame:
    from nbm.simulate.generate import links_table

    return links_table(world)



def true_values(config, decisions: pd.DataFrame, actions: dict[str, pd.DataFrame],
                uniform: bool = True, quiet_hours: tuple[int, int] | None = None) -> tuple[dict[str, float], int]:
    """The *true* expected revenue per decision of policies' choices at the logged decisions of a simulated world.

    The world of ``config`` (``world.json`` of ``nbm simulate``) is rebuilt and its logging policy played
    again — the same seeds give the same log — and on each day of ``decisions`` (columns ``user_id``,
    ``now``) the ground truth judges, in the state of that morning, each policy's actions
    (``actions[name]``: ``decision`` (row of ``decisions``), ``message_id``, ``channel``, ``send_at``,
    ``probability``) and, with ``uniform``, the mean over every eligible (message, channel, slot).
    ``quiet_hours`` (``(start, end)`` local hours, nbm's ``contact_policy.quiet_hours_*``) gives the
    uniform policy nbm's slots: each slot in quiet hours moved to their end, slots landing on the same
    instant counted once, a message a candidate only at the moved times inside its live window
    (:func:`decision.candidates.out_of_quiet_hours`). This is exactly what the off-policy estimates estimate. Returns the values and the number of
    decisions the world recognised (a mismatch means the data is not this world's log).
    """
    from nbm.simulate.generate import environment_for, logging_policy
    from nbm.simulate.policies import USER_CHUNK

    env = environment_for(config)
    policy = logging_policy(config)
    world = env.world
    user_index = pd.Index(world.population.user_ids)
    message_index = pd.Index(world.catalog.table["message_id"].astype(str))
    channel_index = pd.Index(list(world.config.channels))
    now = decisions["now"].to_numpy(dtype="int64")
    users = user_index.get_indexer(decisions["user_id"].to_numpy(dtype=object))
    totals = {name: 0.0 for name in actions} | ({"uniform": 0.0} if uniform else {})
    seen = [0]
    prepared = {}
    for name, acts in actions.items():
        d = acts["decision"].to_numpy(dtype=np.int64)
        prepared[name] = (now[d], users[d], message_index.get_indexer(acts["message_id"].astype(str)),
                          channel_index.get_indexer(acts["channel"].astype(str)),
                          acts["send_at"].to_numpy(dtype="int64"), acts["probability"].to_numpy(dtype=float))

    def observe(ctx: DecisionContext) -> None:
        today = (now == ctx.now) & (users >= 0)
        if not today.any():
            return
        seen[0] += int(np.isin(users[today], ctx.users).sum())
        for name, (t, u, m, c, at, p) in prepared.items():
            ok = (t == ctx.now) & (u >= 0) & (m >= 0) & (c >= 0)
            if ok.any():
                totals[name] += float((env.respond(u[ok], m[ok], c[ok], at[ok]).expected_revenue * p[ok]).sum())
        if uniform:
            positions = np.searchsorted(ctx.users, users[today])
            positions = positions[(positions < ctx.k) & (ctx.users[np.minimum(positions, ctx.k - 1)] == users[today])]
            for rows in np.array_split(positions, max(1, len(positions) // USER_CHUNK)):
                totals["uniform"] += _uniform_truth(ctx, rows, quiet_hours)

    last = int(now.max()) if len(now) else env.now - 1
    while env.now <= last:
        env.step(policy, observer=observe)
    n = max(len(decisions), 1)
    return {name: total / n for name, total in totals.items()}, seen[0]


def _uniform_truth(ctx: DecisionContext, rows: np.ndarray, quiet_hours: tuple[int, int] | None = None) -> float:
    """Sum over users ``rows`` of the mean true expected revenue of their eligible (message, channel, slot)
    (:func:`uniform_actions`)."""
    r, m, c, at = uniform_actions(ctx, rows, quiet_hours)
    if not len(r):
        return 0.0
    revenue = ctx.environment.respond(ctx.users[rows][r], m, c, at).expected_revenue
    count = np.bincount(r, minlength=len(rows))
    total = np.bincount(r, weights=revenue, minlength=len(rows))
    return float((total[count > 0] / count[count > 0]).sum())


def uniform_actions(ctx: DecisionContext, rows: np.ndarray, quiet_hours: tuple[int, int] | None = None):
    """The uniform policy's actions for users ``rows`` of ``ctx``: (row position, message, channel, send time)
    arrays, one entry per eligible (message, channel) and slot.

    With ``quiet_hours`` a slot whose local hour is in them is sent at their end (the world's fixed
    offset of the day, as :meth:`Environment.send_time`); a user's slots that land on the same instant
    are one slot, and a (message, slot) counts where the message is live at the send time (a message that
    starts tomorrow morning is a candidate at a slot moved there, as it is in nbm)."""
    env, cat = ctx.environment, ctx.catalog
    # ctx.eligible less its `live` (all day today): a moved slot may be past a message's end or after a start.
    targeted = cat.stages[:, ctx.stage[rows]].T
    r, m, c = np.nonzero(targeted[:, :, None] & cat.channels[None, :, :] & ctx.consent[rows][:, None, :])
    users = ctx.users[rows]
    hours = np.asarray(ctx.slot_hours, dtype=np.int64)
    send = np.stack([env.send_time(users, slot) for slot in range(len(hours))], axis=1)        # (rows, slots)
    distinct = np.ones(send.shape, dtype=bool)
    if quiet_hours is not None and quiet_hours[0] != quiet_hours[1]:
        start, end = quiet_hours
        moved = np.where(in_quiet_hours(hours, start, end), np.mod(end - hours, 24) * HOUR_NS, 0)
        send = np.sort(send + moved[None, :], axis=1)
        distinct[:, 1:] = send[:, 1:] != send[:, :-1]
    parts = []
    for slot in range(len(hours)):
        at = send[r, slot]
        ok = distinct[r, slot] & (cat.start_at[m] <= at) & (at < cat.end_at[m])
        parts.append((r[ok], m[ok], c[ok], at[ok]))
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(4))     # slot_hours is never empty
