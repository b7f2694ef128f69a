"""The feature pipeline: training set, online snapshot and candidate featurisation over one dataset.

``FeatureStore.build(dataset, config)`` indexes the history once. The training set has one row per
logged send; the snapshot one row per user as of a time; candidates expand the eligible (message,
channel, slot) actions of a user. All three go through :func:`features.compute.featurise`.

Scale-out: :func:`partition` splits a dataset by a hash of the canonical ``user_id``; each partition is
featurised with its own history and the shared global tables (:class:`Globals`), and concatenating the
partitions' results equals featurising the whole (a test checks it).

The strengths of the smoothed rates (:class:`features.priors.PriorStrengths`) are among the shared globals:
learned once per build from the whole dataset under ``[features] prior_strength = "auto"``, so the training
set and the online store of the same data smooth alike, and no request recomputes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from nbm.attribution import send_outcomes
from features.compute import (Candidates, channel_loss_features, consented_channels, featurise, featurise_columns,
                              lost_channels, reslot_columns, TOPIC_MATCH_SUFFIX)
from features.declarations import FEATURES
from features.history import DAY_NS, History, PopulationRates, Vocabulary
from features.priors import PriorStrengths, prior_strengths
from nbm.config import NbmConfig
from nbm.dataset import Dataset

log = logging.getLogger(__name__)

TRAINING_CHUNK = 1_000_000
"""Sends featurised at once when building a training set."""
USER_FEATURES = tuple(f.name for f in FEATURES if f.entity == "user")


@dataclass(frozen=True)
class Globals:
    """What every partition shares: codes, population (and segment) rates, the time origin and the prior
    strengths of the smoothed rates."""

    vocabulary: Vocabulary
    rates: PopulationRates
    base: int
    strengths: PriorStrengths

    @classmethod
    def build(cls, dataset: Dataset, config: NbmConfig, strengths: PriorStrengths | None = None) -> Globals:
        """The globals of ``dataset``; ``strengths`` given (learned on another log, say) are used as they are,
        else they are ``[features] prior_strength``'s: configured, or learned from ``dataset``."""
        vocabulary = Vocabulary.build(dataset.messages, config, dataset.users)
        first = int(dataset.events["timestamp"].min().value) if len(dataset.events) else 0
        base = first - 400 * DAY_NS  # windows reach back at most 90 days; clamping below base is harmless
        rates = PopulationRates(dataset.events, vocabulary, base, dataset.users)
        if strengths is None:
            strengths = prior_strengths(dataset, vocabulary, rates, config)
        return cls(vocabulary, rates, base, strengths)


@dataclass(frozen=True)
class FeatureStore:
    """Indexed history of one dataset (or partition) plus the shared globals."""

    dataset: Dataset
    config: NbmConfig
    globals: Globals
    history: History

    @classmethod
    def build(cls, dataset: Dataset, config: NbmConfig, shared: Globals | None = None,
              strengths: dict[str, float] | None = None, catalog_from: History | None = None) -> FeatureStore:
        """The store of ``dataset``. ``strengths``: a model's smoothing strengths (``artifact.prior_strengths``,
        what it was trained with) used as they are instead of being learned again on ``dataset``. ``catalog_from``:
        a history of the same catalog whose catalog arrays the new one shares (see :class:`History`)."""
        shared = shared or Globals.build(dataset, config, pinned_strengths(strengths))
        policy = config.contact_policy
        if policy.needs_topics() and policy.topic_of is None:        # topic caps, suppression, mandatory topics
            topic_of = dict(zip(dataset.messages["message_id"].astype(str), dataset.messages["topic"].astype(str)))
            config = config.model_copy(update={"contact_policy": policy.with_topics(topic_of)})
        return cls(dataset, config, shared, History(dataset, shared.vocabulary, config, shared.base, catalog_from))

    def freeze(self) -> FeatureStore:
        """Precompute every index's per-key positions for queries past the history (the service's ``now``),
        so that the first requests do not pay for it (:meth:`features.asof.AsOfIndex.freeze`)."""
        for index, days in (*self.history.windows(), *((r, ()) for r in self.globals.rates.indexes())):
            index.freeze(tuple(d * DAY_NS for d in days))     # any other window is frozen at its first query
        return self

    def with_strengths(self, strengths: dict[str, float] | None) -> FeatureStore:
        """This store featurising with ``strengths`` (a model's: what it was trained with, ``{family: pseudo-sends}``)
        instead of its own; itself when ``None`` or equal. The history and its indexes are shared, not rebuilt."""
        if not strengths or strengths == self.globals.strengths.as_dict():
            return self
        return replace(self, globals=replace(self.globals, strengths=pinned_strengths(strengths)))

    def prior_strengths(self) -> PriorStrengths:
        """The smoothing strengths this store's features use (``.as_dict()`` to log them; ``.learned``: the
        families learned from the data)."""
        return self.globals.strengths

    def featurise(self, rows: Candidates) -> pd.DataFrame:
        return featurise(self.history, self.globals.rates, self.globals.strengths, rows)

    def featurise_columns(self, rows: Candidates, spread: bool = False) -> dict:
        return featurise_columns(self.history, self.globals.rates, self.globals.strengths, rows, spread)

    def reslot_columns(self, base: dict[str, np.ndarray], base_index: np.ndarray, rows: Candidates) -> dict[str, np.ndarray]:
        return reslot_columns(self.history, self.globals.rates, self.globals.strengths, base, base_index, rows)

    def channel_losses(self, user_code: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(users × channels of the vocabulary) bool twice: each user's consent, and the channels the user
        unsubscribed from or bounced on before ``t`` by the history."""
        return consented_channels(self.history, user_code), lost_channels(self.history, user_code, t)

    loss_features = staticmethod(channel_loss_features)

    def training_set(self) -> pd.DataFrame:
        """One row per logged send: ids, graded label, revenue, propensity, ranking group, features."""
        events = self.dataset.events
        outcomes = send_outcomes(events, self.history.attributed)
        sends = events.iloc[outcomes.index.to_numpy()]
        stamps = sends["timestamp"].to_numpy(dtype="int64")
        rows = Candidates(sends["user_id"].to_numpy(dtype=object), sends["message_id"].to_numpy(dtype=object),
                          sends["channel"].to_numpy(dtype=object), stamps, stamps)
        group_by = self.config.features.group_by
        if group_by == "decision":
            group = sends["decision_id"].fillna(sends["event_id"]).to_numpy(dtype=object)
        elif group_by == "user":
            group = sends["user_id"].to_numpy(dtype=object)
        elif group_by == "day":
            group = (stamps // DAY_NS).astype(str).astype(object)
        else:
            group = (sends["user_id"].astype(str) + "@" + (stamps // DAY_NS).astype(str)).to_numpy(dtype=object)
        ids = pd.DataFrame({
            "event_id": sends["event_id"].to_numpy(dtype=object),
            "decision_id": sends["decision_id"].to_numpy(dtype=object),
            "user_id": sends["user_id"].to_numpy(dtype=object),
            "message_id": sends["message_id"].to_numpy(dtype=object),
            "channel_name": sends["channel"].to_numpy(dtype=object),
            "timestamp": sends["timestamp"].reset_index(drop=True),
            "propensity": sends["propensity"].to_numpy(dtype=float),
            "label": outcomes["label"].to_numpy(),
            "revenue": outcomes["revenue"].to_numpy(),
            "group": group,
        })
        # In chunks of sends: the intermediate arrays of featurisation stay bounded whatever the log's size.
        chunks = [slice(i, i + TRAINING_CHUNK) for i in range(0, max(len(stamps), 1), TRAINING_CHUNK)]
        features = pd.concat([self.featurise(Candidates(*(getattr(rows, f)[c] for f in
                                                           ("user_id", "message_id", "channel", "as_of", "send_at"))))
                              for c in chunks], ignore_index=True) if len(chunks) > 1 else self.featurise(rows)
        for position, column in enumerate(ids.columns):  # insert in place: no copy of the feature block
            features.insert(position, column, ids[column].to_numpy() if column != "timestamp" else ids[column])
        return features

    def snapshot(self, now: pd.Timestamp, user_ids: np.ndarray | None = None) -> pd.DataFrame:
        """User features of every user (or ``user_ids``) as of ``now``: the online feature snapshot."""
        users = self.dataset.users["user_id"].to_numpy(dtype=object) if user_ids is None else np.asarray(user_ids, dtype=object)
        at = np.full(len(users), pd.Timestamp(now).value, dtype=np.int64)
        none = np.full(len(users), None, dtype=object)
        frame = self.featurise(Candidates(users, none, none, at, at))
        keep = [*USER_FEATURES, *(c for c in frame.columns if c.startswith("attr_") and not c.endswith(TOPIC_MATCH_SUFFIX))]
        return frame[keep].set_index(pd.Index(users, name="user_id"))


def partition(dataset: Dataset, n_partitions: int, index: int) -> Dataset:
    """The users (and their events) whose canonical ``user_id`` hashes to partition ``index`` (:func:`partition_of`)."""
    keep_events = partition_of(dataset.events["user_id"], n_partitions) == index
    keep_users = partition_of(dataset.users["user_id"], n_partitions) == index
    decisions = dataset.decisions
    if decisions is not None:
        decisions = decisions[partition_of(decisions["user_id"], n_partitions) == index].reset_index(drop=True)
    return replace(dataset, events=dataset.events[keep_events].reset_index(drop=True),
                   users=dataset.users[keep_users].reset_index(drop=True), decisions=decisions)


def partition_of(user_ids: pd.Series, n_partitions: int) -> np.ndarray:
    """The partition of each user id (as :func:`partition` assigns them)."""
    hashed = pd.util.hash_pandas_object(pd.Series(user_ids).astype(str), index=False,
                                        hash_key="nbm-partitions16").to_numpy()
    return (hashed % np.uint64(n_partitions)).astype(np.int64)



def _partition_training_set(part: Dataset, config: NbmConfig, shared: Globals) -> pd.DataFrame:
    """One partition's training set (what a cluster's worker runs)."""
    return FeatureStore.build(part, config, shared).training_set()


def _on_cluster(client, dataset: Dataset, config: NbmConfig, shared: Globals, partitions: int) -> list[pd.DataFrame]:
    """The partitions' training sets built by ``client``'s workers, in partition order."""
    from distributed import as_completed

    n = max(partitions, len(client.scheduler_info().get("workers", {})), 1)
    globals_, config_ = client.scatter([shared, config], broadcast=True)
    futures = {}
    for i in range(n):      # one partition's rows at a time leave this process
        part = client.scatter(partition(dataset, n, i))
        futures[client.submit(_partition_training_set, part, config_, globals_, pure=False)] = i
    parts: list[pd.DataFrame | None] = [None] * n
    for done, frame in as_completed(futures, with_results=True):
        parts[futures[done]] = frame
        log.info("training set: partition %d of %d built on the cluster (%d rows)", futures[done] + 1, n, len(frame))
    return parts  # type: ignore[return-value]


def _partition_snapshot(part: Dataset, config: NbmConfig, shared: Globals, now: pd.Timestamp,
                        user_ids: np.ndarray) -> pd.DataFrame:
    """One partition's users' snapshot (what a cluster's worker runs)."""
    return FeatureStore.build(part, config, shared).snapshot(now, user_ids)


def build_snapshot(dataset: Dataset, config: NbmConfig, now: pd.Timestamp, user_ids: np.ndarray | None = None,
                   shared: Globals | None = None, client=None) -> pd.DataFrame:
    """The online feature snapshot (:meth:`FeatureStore.snapshot`) of every user of ``dataset`` (or ``user_ids``)
    as of ``now``. ``client``: a :class:`distributed.Client`: each user partition's snapshot is built by a worker,
    sent only its own users' rows and the shared globals (two partitions a worker); the rows are those of the
    in-process snapshot, in its order (the partition property)."""
    shared = shared or Globals.build(dataset, config)
    ids = dataset.users["user_id"].to_numpy(dtype=object) if user_ids is None else np.asarray(user_ids, dtype=object)
    if client is None:
        return FeatureStore.build(dataset, config, shared).snapshot(now, ids)
    from distributed import as_completed

    n = max(2 * len(client.scheduler_info().get("workers", {})), 1)
    of = partition_of(pd.Series(ids, dtype=object), n)
    shared_, config_ = client.scatter([shared, config], broadcast=True, hash=False)
    futures = {}
    for i in range(n):
        members = ids[of == i]
        if len(members):
            part = client.scatter(partition(dataset, n, i))
            futures[client.submit(_partition_snapshot, part, config_, shared_, now, members, pure=False)] = i
    parts = []
    for done, frame in as_completed(futures, with_results=True):
        parts.append(frame)
        log.info("snapshot: partition %d of %d built on the cluster (%d users)", futures.pop(done) + 1, n, len(frame))
    joined = pd.concat(parts)
    return joined.loc[pd.Index(ids, name="user_id")] if len(joined) else joined


def pinned_strengths(strengths: dict[str, float] | None) -> PriorStrengths | None:
    """``{family: pseudo-sends}`` (an artifact's) as :class:`PriorStrengths`; ``None`` stays ``None``."""
    if not strengths:
        return None
    return PriorStrengths(**{k: float(v) for k, v in strengths.items() if k in PriorStrengths.families()})


def build_training_set(dataset: Dataset, config: NbmConfig, partitions: int = 1,
                       shared: Globals | None = None, client=None) -> pd.DataFrame:
    """The training set of ``dataset``, built one user partition at a time.

    With ``partitions > 1`` only one partition's indexes are in memory at once; the result equals the
    single-pass one (same rows, same order: by send time, then event id). ``shared``: the dataset's
    :class:`Globals` when the caller built them already (to log ``shared.strengths.as_dict()``, say).
    ``client``: a :class:`distributed.Client` (:func:`nbm.cluster.dask_client`): the partitions are built by
    its workers, at least one per worker, each sent only its own users' rows and the shared globals.
    """
    shared = shared or Globals.build(dataset, config)
    if client is not None:
        parts = _on_cluster(client, dataset, config, shared, partitions)
    elif partitions <= 1:
        return FeatureStore.build(dataset, config, shared).training_set()
    else:
        parts = [_partition_training_set(partition(dataset, partitions, i), config, shared)
                 for i in range(partitions)]
    joined = pd.concat(parts, ignore_index=True)
    del parts
    return joined.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)
