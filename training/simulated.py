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

from features.compute import Candidates
from features.pipeline import FeatureStore
from nbm.artifact import ScoringArtifact
from nbm.config import NbmConfig
from nbm.dataset import build_dataset
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

