"""Where ``nbm train`` reads the log: a data directory loaded in memory, or one whose events are parts
(``events/*.parquet``, features/parts.py) read by a Dask cluster's workers.

After the training set, training needs the log three more times: the catalog (every fit), the unsubscribe labels
of the risk model (:mod:`training.risk`) and, for the off-policy evaluation, people's whole histories. In memory
all three come from the loaded :class:`~nbm.dataset.Dataset`. From parts:

* the **labels** are columns of the training set, computed by each worker from its part's events
  (:func:`training.risk.risk_columns`: an unsubscribe is attributed to a send of its own person);
* the **evaluation** replays the decisions of the test window's people (:meth:`OnParts.policy_data`): one pass
  over the parts gathers their events, and from every part what the whole log's reward and outcome horizon need
  (:func:`training.reward.outcome_kinds`, :func:`training.policy_eval.outcome_delays`). With more than
  ``max_decisions`` decisions in the window, people are drawn at random (seeded) until their decisions reach
  ``max_decisions`` — the in-memory evaluation draws decisions instead; either is a uniform sample of the
  window's decisions, this one by person. Features use the whole log's globals, and the censoring cut the whole
  log's end, reward and horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.dataset import Dataset

PARTITION_EVENTS = 3_000_000
"""Above this many events, the training set (and the evaluation's stores) are built one user partition at a time
(bounded memory)."""


@dataclass(frozen=True)
class PolicyData:
    """What the off-policy evaluation reads (:func:`training.policy_eval.evaluate_policies`)."""

    dataset: Dataset
    test: pd.DataFrame                     # the test window's sends of ``dataset``'s people
    partitions: int
    shared: object | None = None           # the whole log's Globals, when ``dataset`` holds some of its people
    end: int | None = None                 # the whole log's last instant (int64 ns), idem
    reward: object | None = None           # the whole log's Reward, idem
    horizon_hours: float | str = "auto"    # the whole log's outcome horizon, idem
    people: int | None = None              # people of the window evaluated, when fewer than all of them
    of_people: int | None = None           # people with a decision in the window


class InMemory:
    """The log of a data directory, loaded (:func:`nbm.dataset.load_dataset`)."""

    def __init__(self, dataset: Dataset, partitions: int = 1) -> None:
        self.dataset, self.partitions = dataset, partitions

    @property
    def messages(self) -> pd.DataFrame:
        return self.dataset.messages

    @property
    def risk_dataset(self) -> Dataset:
        return self.dataset

    def policy_data(self, split, max_decisions: int | None, seed: int) -> PolicyData:
        return PolicyData(self.dataset, split.test, self.partitions)


class OnParts:
    """A log in parts on a Dask cluster (``client``): the plan of :func:`features.parts.shared_of_parts`, the small
    tables (read with the decision log when the policy is evaluated), the tables and config on the workers."""

    def __init__(self, client, plan, tables, config, on_workers: tuple) -> None:
        self.client, self.plan, self.tables, self.config, self.on_workers = client, plan, tables, config, on_workers

    @property
    def messages(self) -> pd.DataFrame:
        return self.tables.messages

    @property
    def risk_dataset(self) -> None:
        return None                        # the labels are the training set's columns

    def window_people(self, split) -> pd.Series:
        """Decisions in the test window per person (canonical id): the decision log's, else the sends'."""
        decisions = self.tables.decisions
        if decisions is not None and len(decisions):
            ids = decisions.loc[decisions["timestamp"] >= split.test_start, "user_id"]
        else:
            ids = split.test["user_id"]
        return pd.Series(ids.to_numpy(dtype=object)).value_counts(sort=False)

    def policy_data(self, split, max_decisions: int | None, seed: int) -> PolicyData:
        from features.parts import in_dataset_order
        from training.policy_eval import horizon_of_delays
        from training.reward import reward_of_kinds

        counts = self.window_people(split)
        if max_decisions is None or int(counts.sum()) <= max_decisions:
            chosen = counts.index
        else:                              # people at random until their decisions reach max_decisions
            shuffled = counts.iloc[np.random.default_rng(seed).permutation(len(counts))]
            k = int(np.searchsorted(np.cumsum(shuffled.to_numpy()), max_decisions)) + 1
            chosen = shuffled.index[:k]
        people = frozenset(chosen.tolist())
        tables_, config_ = self.on_workers
        [people_] = self.client.scatter([people], broadcast=True, hash=False)
        pieces = self.client.gather([self.client.submit(_evaluation_part, path, tables_, config_, people_, pure=False)
                                     for path in self.plan.parts])
        events = in_dataset_order([p[0] for p in pieces])
        reward = reward_of_kinds(*(any(p[1][i] for p in pieces) for i in range(3)))
        delays = [p[2][reward.outcome] for p in pieces]
        horizon = horizon_of_delays(sum(d[0] for d in delays), np.concatenate([d[1] for d in delays]),
                                    np.concatenate([d[2] for d in delays]), self.plan.last, self.config.attribution,
                                    reward.outcome)
        decisions = self.tables.decisions
        if decisions is not None:
            decisions = decisions[decisions["user_id"].astype(object).isin(people).to_numpy()].reset_index(drop=True)
        dataset = self.tables.dataset(events, self.tables.rows_of(np.asarray(list(people), dtype=object)), decisions)
        test = split.test[split.test["user_id"].astype(object).isin(people).to_numpy()].reset_index(drop=True)
        partitions = max(1, -(-len(events) // PARTITION_EVENTS))
        return PolicyData(dataset, test, partitions, self.plan.shared, self.plan.last, reward, horizon,
                          len(people) if len(people) < len(counts) else None, len(counts))


def _evaluation_part(path, tables, config, people: frozenset) -> tuple[pd.DataFrame, tuple, dict]:
    """What the evaluation needs of one part (what a worker runs): the events of its ``people``, whether it has
    valued conversions, conversions, clicks, and its attributed outcomes' delays (conversions and clicks)."""
    from features.parts import read_part, release_memory
    from nbm.attribution import attribute
    from training.policy_eval import outcome_delays
    from training.reward import outcome_kinds

    events, _ = read_part(path, tables, config)
    attributed = attribute(events, config.attribution).to_numpy() if len(events) else np.zeros(0, np.int64)
    delays = {outcome: outcome_delays(events, config.attribution, outcome, attributed) for outcome in ("convert", "click")}
    mine = events[events["user_id"].astype(object).isin(people).to_numpy()]
    out = (mine, outcome_kinds(events), delays)
    del events, attributed
    release_memory()
    return out
