"""A trained model acting in the simulated world, so its *true* value can be compared with baselines.

:class:`ModelPolicy` decides like the service will: every day, for every live user, it featurises the
eligible (message × channel) candidates from the log so far, scores them with the scoring artifact,
weighs the calibrated probability by the message's value, and sends the best one — at the best of the
slot hours — when that expected value clears ``threshold``. It is greedy (propensity 1).

Two stages keep it affordable: all (message, channel) pairs are scored at one slot (the user's most
visited local hour so far), then the winner's slots are compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.compute import HOUR_NS, Candidates
from features.pipeline import FeatureStore
from nbm.artifact import ScoringArtifact
from nbm.config import NbmConfig
from nbm.dataset import build_dataset
from nbm.policy.contact import in_quiet_hours
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.policies import Policy


class ModelPolicy(Policy):
    """Greedy on calibrated probability × message value; nothing when the best value is ≤ ``threshold``."""

    name = "model"

    def __init__(self, artifact: ScoringArtifact, config: NbmConfig, threshold: float = 0.0) -> None:
        self.artifact = artifact
        self.config = config
        self.threshold = threshold

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        env = ctx.environment
        world = env.world
        tables = {"events": env.history(), "messages": world.catalog.table, "users": _users(world),
                  "links": _links(world)}
        dataset, _ = build_dataset(tables, self.config, now=pd.Timestamp(ctx.now, tz="UTC"))
        store = FeatureStore.build(dataset, self.config)

        eligible = ctx.eligible()                                        # (k, m, c)
        rows, m, c = np.nonzero(eligible)
        if not len(rows):
            return Actions.empty()
        users = ctx.users[rows]
        n_slots = len(ctx.slot_hours)
        # Stage 1: every pair at the middle slot; stage 2: the best pair at every slot.
        middle = np.full(len(rows), n_slots // 2)
        value = self._value(store, ctx, users, m, c, env.send_time(users, middle))
        order = np.lexsort((-value, rows))
        first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
        best_rows, best_m, best_c = rows[first], m[first], c[first]
        u = np.repeat(ctx.users[best_rows], n_slots)
        slots = np.tile(np.arange(n_slots), len(best_rows))
        by_slot = self._value(store, ctx, u, np.repeat(best_m, n_slots), np.repeat(best_c, n_slots),
                              env.send_time(u, slots)).reshape(len(best_rows), n_slots)
        slot = by_slot.argmax(axis=1)
        top = by_slot[np.arange(len(best_rows)), slot]
        send = top > self.threshold
        return Actions(ctx.users[best_rows[send]], best_m[send], best_c[send], slot[send], np.ones(int(send.sum())))

    def _value(self, store: FeatureStore, ctx: DecisionContext, users: np.ndarray, messages: np.ndarray,
               channels: np.ndarray, send_at: np.ndarray) -> np.ndarray:
        world = ctx.environment.world
        rows = Candidates(
            user_id=world.population.user_ids[users],
            message_id=world.catalog.table["message_id"].to_numpy(dtype=object)[messages],
            channel=np.asarray(world.config.channels, dtype=object)[channels],
            as_of=np.full(len(users), ctx.now, dtype=np.int64), send_at=send_at.astype(np.int64),
        )
        probability = self.artifact.score(store.featurise(rows))
        return probability * world.catalog.value[messages]


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
    (:func:`features.candidates.out_of_quiet_hours`). This is exactly what the off-policy estimates estimate. Returns the values and the number of
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
