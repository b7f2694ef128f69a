"""``nbm recommend``: the decision of every user (or the listed ones) as of one time, without a server.

The same :func:`decision.decide.decide_many` as the service — candidates, contact policy, arms, explorer —
with the contact history taken from the events of the data directory (and, for Thompson sampling, the
explorer's statistics from its sends and their attributed outcomes). One JSON line per decision, in the
shape of the ``/recommend`` answer plus ``now`` (:meth:`decision.answer.Answer.batch_line`), or the same as
Parquet, in one file or a directory of partitions (:mod:`serving.batch_output`). Decision ids
are derived from (user, now, model version), so running the same campaign twice writes the same ids.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from decision.decide import HOLDOUT, decide_many
from decision.histories import SendIndex, lookback_ns
from features.pipeline import FeatureStore, Globals, partition, partition_of, pinned_strengths
from nbm.attribution import attribute
from nbm.config import AttributionConfig, NbmConfig
from nbm.dataset import Dataset
from nbm.errors import UnusableInputError
from nbm.policy.assign import assign
from nbm.policy.contact import SendHistories
from nbm.policy.explore import EXPLORERS, make_explorer
from serving.batch_output import BatchOutput

CHUNK = 20_000
PARTITIONS_PER_WORKER = 2
"""User partitions per worker of a Dask cluster (``nbm recommend`` with ``dask_scheduler``)."""
NAMESPACE = uuid.UUID("6f1c1d1e-8a7b-4e0c-9a55-6e626d2d6e62")


@dataclass(frozen=True)
class BatchSummary:
    decisions: int
    with_items: int
    items: int
    reasons: dict[str, int]


def read_user_list(path: Path) -> np.ndarray:
    """User ids from a file: one per line, or a CSV/Parquet with a ``user_id`` column."""
    path = Path(path)
    if not path.is_file():
        raise UnusableInputError(f"`--users`: {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str)
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return np.asarray(lines, dtype=object)
    if "user_id" not in frame.columns:
        raise UnusableInputError(f"`--users`: {str(path)!r} has no `user_id` column")
    return frame["user_id"].dropna().astype(str).to_numpy(dtype=object)


def history_statistics(events: pd.DataFrame, attribution: AttributionConfig, target: str, now: int
                       ) -> dict[tuple[str, str], tuple[int, int]]:
    """Thompson sampling's statistics from a data directory's events as of ``now`` (int64 ns), as the service
    keeps them from ``/feedback``: per (message, channel), its sends before ``now`` (impressions) and how
    many of them have an outcome of the model's ``target`` before ``now`` attributed to them (successes,
    by decision id or window, ``nbm.attribution``); (successes, impressions − successes)."""
    past = events[events["timestamp"].to_numpy(dtype="int64") < now]
    if not len(past):
        return {}
    position = attribute(past, attribution).to_numpy()
    kind = past["event_type"].to_numpy(dtype=object)
    success = np.zeros(len(past), dtype=bool)
    success[position[(kind == target) & (position >= 0)]] = True
    sends = kind == "send"
    frame = pd.DataFrame({"message": past["message_id"].to_numpy(dtype=object)[sends],
                          "channel": past["channel"].to_numpy(dtype=object)[sends], "success": success[sends]})
    counts = frame.groupby(["message", "channel"], sort=False)["success"].agg(["size", "sum"])
    return {(str(m), str(c)): (int(won), int(n - won)) for (m, c), n, won in
            zip(counts.index, counts["size"], counts["sum"])}


def recommend_all(dataset: Dataset, config: NbmConfig, artifact, model_version: str, now: pd.Timestamp,
                  out: Path | BatchOutput, users: np.ndarray | None = None, k: int = 1, explorer: str = "greedy",
                  threshold: float = 0.0, seed: int = 0, progress=None, client=None) -> BatchSummary:
    """Decide for every user of ``dataset`` (or ``users``, resolved through links) as of ``now``; write them to
    ``out`` (a path: JSON lines, or Parquet by its suffix; or a :class:`serving.batch_output.BatchOutput`).

    ``client``: a :class:`distributed.Client` (``dask_scheduler``, :func:`nbm.cluster.dask_client`): the users'
    partitions are decided by its workers, each sent only its own users' rows (:func:`_on_cluster`); a
    partitioned output's partitions are written by the workers.
    """
    _check_explorer(explorer)
    ids, asked = _people(dataset.users, dataset.identity, users)
    t = pd.Timestamp(now).value
    statistics = history_statistics(dataset.events, config.attribution, artifact.target, t) \
        if explorer == "thompson" else None
    job = _Job(config, artifact, model_version, t, k, explorer, threshold, statistics)
    output = _prepared(out)
    if client is not None:
        pieces = _on_cluster(client, dataset, job, ids, asked, seed, output)
    else:
        store = FeatureStore.build(dataset, config, strengths=artifact.prior_strengths)   # the model's smoothing
        chunks = job.decide(store, SendIndex.of(dataset.events), ids, asked, np.random.default_rng(seed))
        pieces = ((i, done, lines, counts) for i, (done, lines, counts) in enumerate(chunks))
        if not output.partitioned:
            pieces = ((i, done, output.encode(lines), counts) for i, done, lines, counts in pieces)
    return _write(output, pieces, len(ids), progress)


def _check_explorer(explorer: str) -> None:
    if explorer not in EXPLORERS:
        raise UnusableInputError(f"unknown explorer {explorer!r}; expected one of {sorted(EXPLORERS)}")


def _people(users_table: pd.DataFrame, identity, users: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The people decided for (every user of the table, or ``users`` resolved through the links) and the ids they
    were asked for, in order."""
    if users is None:
        ids = users_table["user_id"].to_numpy(dtype=object)
        return ids, ids
    return identity.apply(pd.Series(users, dtype=object)).to_numpy(dtype=object), np.asarray(users, dtype=object)


def _prepared(out: Path | BatchOutput) -> BatchOutput:
    """``out`` as a :class:`BatchOutput`, prepared (before any worker writes a partition)."""
    output = out if isinstance(out, BatchOutput) else BatchOutput(out)
    output.prepare()
    return output


def _write(output: BatchOutput, pieces, total: int, progress) -> BatchSummary:
    """``pieces`` — (partition, users decided so far, the partition's decisions (its lines, or encoded; ``None`` when
    written already), their :class:`_Tally`), in order — written to ``output``; the summary."""
    tally, parts = _Tally(), 0
    with contextlib.ExitStack() as stack:
        writer = None if output.partitioned else stack.enter_context(output.writer())
        for index, done, piece, counts in pieces:
            if writer is not None:
                writer.write(piece)
            elif piece is not None:
                output.write_part(index, piece)
            parts += 1
            tally.merge(counts)
            if progress is not None:
                progress(done, total)
    output.finish(tally.decisions, parts)
    return BatchSummary(tally.decisions, tally.with_items, tally.items, tally.reasons)


@dataclass(frozen=True)
class _Job:
    """What deciding a batch of users takes besides their data (sent once to every worker of a cluster)."""

    config: NbmConfig
    artifact: object
    model_version: str
    t: int
    k: int
    explorer: str
    threshold: float
    statistics: dict | None
    compile: bool = False       # compile the artifact's booster first (on a cluster's worker)

    def for_workers(self) -> _Job:
        """This job as a cluster's workers get it: the compiled forest is machine code in this process, so they get
        the booster and compile their own."""
        return replace(self, artifact=replace(self.artifact, compiled=None), compile=self.artifact.compiled is not None)

    def decide(self, store: FeatureStore, sends: SendIndex, ids: np.ndarray, asked: np.ndarray,
               rng: np.random.Generator):
        """(users decided so far, their lines, their :class:`_Tally`) per :data:`CHUNK` users of ``ids``, in
        order."""
        chooser = make_explorer(self.explorer, self.config.explorer)
        lookback = lookback_ns(self.config.contact_policy)
        experiment, t, version = self.config.experiment, self.t, self.model_version
        for a in range(0, len(ids), CHUNK):
            chunk_ids = ids[a:a + CHUNK]
            lines: list[dict | None] = [None] * len(chunk_ids)
            arms = assign(chunk_ids, experiment)
            for arm in pd.unique(arms):
                members = np.flatnonzero(arms == arm)
                chunk = chunk_ids[members]
                nows = np.full(len(chunk), t, dtype=np.int64)
                histories = SendHistories.empty() if arm == HOLDOUT else sends.histories(chunk, nows, lookback)
                decided = decide_many(store, self.artifact, chunk, nows, histories, rng,
                                      arm=str(arm), explorer=chooser, k=self.k, threshold=self.threshold,
                                      statistics=self.statistics if arm == "model" else None)
                for j, (i, user) in enumerate(zip(members, chunk)):
                    lines[i] = decided.answer(j, str(uuid.uuid5(NAMESPACE, f"{user}|{t}|{version}")),
                                              str(asked[a + i]), version, t, str(arm),
                                              experiment.name or None).batch_line()
            counts = _Tally()
            counts.add(lines)
            yield min(a + CHUNK, len(ids)), lines, counts


class _Tally:
    """The summary's counts of some decisions' lines."""

    def __init__(self) -> None:
        self.decisions = self.with_items = self.items = 0
        self.reasons: dict[str, int] = {}

    def merge(self, other: _Tally) -> None:
        self.decisions += other.decisions
        self.with_items += other.with_items
        self.items += other.items
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    def add(self, lines: list[dict]) -> None:
        for line in lines:
            self.decisions += 1
            if not line["items"]:
                self.reasons[line["reason"]] = self.reasons.get(line["reason"], 0) + 1
            else:
                self.with_items += 1
                self.items += len(line["items"])


def _decide_partition(part: Dataset, shared: Globals, job: _Job, ids: np.ndarray, asked: np.ndarray, seed: int,
                      index: int, output: BatchOutput) -> tuple[object, _Tally]:
    """One partition's decisions, encoded for ``output`` (``None`` for a partitioned output: written here, as
    partition ``index``), and their tally (what a cluster's worker runs): its store on the shared globals, its
    sends."""
    if job.compile:          # (cached on the worker's machine: compiled once, loaded by the next partitions)
        job = replace(job, artifact=job.artifact.compile(Path(tempfile.gettempdir()) / "nbm-forests"), compile=False)
    store = FeatureStore.build(part, job.config, shared)
    rng = np.random.default_rng([seed, index])      # each partition its own stream: reproducible, whatever ran where
    pieces, tally = [], _Tally()
    for _, lines, counts in job.decide(store, SendIndex.of(part.events), ids, asked, rng):
        pieces.append(output.encode(lines))
        tally.merge(counts)
    piece = BatchOutput.join(pieces)
    if output.partitioned:
        output.write_part(index, piece)
        return None, tally
    return piece, tally


def _in_order(futures: dict):
    """(partition, users decided so far, its piece, its tally) of the ``futures`` — ``{future: (partition, users)}``,
    each giving (piece, tally) — in partition order, each as soon as the earlier ones are in."""
    from distributed import as_completed

    ready: dict[int, tuple[tuple[object, _Tally], int]] = {}
    order = sorted(i for i, _ in futures.values())
    done = 0
    for future, result in as_completed(futures, with_results=True):
        i, size = futures.pop(future)               # (its result no longer held on the worker)
        ready[i] = (result, size)
        while order and order[0] in ready:
            index = order.pop(0)
            (piece, counts), size = ready.pop(index)
            done += size
            yield index, done, piece, counts


def _on_cluster(client, dataset: Dataset, job: _Job, ids: np.ndarray, asked: np.ndarray, seed: int,
                output: BatchOutput):
    """(partition, users decided so far, its decisions, their tally) per partition of the users, decided by
    ``client``'s workers, in partition order (a user's features depend on the user's events and the shared globals
    only: each partition decides exactly as one pass would, :func:`features.pipeline.partition`)."""
    n = max(len(client.scheduler_info().get("workers", {})) * PARTITIONS_PER_WORKER, 1)
    shared = Globals.build(dataset, job.config, pinned_strengths(job.artifact.prior_strengths))   # the model's smoothing
    shared_, job_ = client.scatter([shared, job.for_workers()], broadcast=True)
    of = partition_of(pd.Series(ids, dtype=object), n)
    futures = {}
    for i in range(n):
        members = np.flatnonzero(of == i)
        if not len(members):
            continue
        part = client.scatter(partition(dataset, n, i))
        futures[client.submit(_decide_partition, part, shared_, job_, ids[members], asked[members], seed, i,
                              output, pure=False)] = (i, len(members))
    return _in_order(futures)


def _decide_part(path, tables, shared: Globals, job: _Job, rows: pd.DataFrame, ids: np.ndarray, asked: np.ndarray,
                 seed: int, index: int, output: BatchOutput) -> tuple[object, _Tally]:
    """One event part's users decided (what a cluster's worker runs): its events read and validated, its store on
    the shared globals (:func:`_decide_partition`)."""
    from features.parts import read_part, release_memory

    events, _ = read_part(path, tables, job.config)
    out = _decide_partition(tables.dataset(events, rows), shared, job, ids, asked, seed, index, output)
    del events
    release_memory()
    return out


def _part_statistics(path, tables, config: NbmConfig, target: str, now: int) -> dict:
    from features.parts import read_part

    events, _ = read_part(path, tables, config)
    return history_statistics(events, config.attribution, target, now)


def recommend_parts(client, directory: Path, tables, config: NbmConfig, artifact, model_version: str,
                    now: pd.Timestamp, out: Path | BatchOutput, users: np.ndarray | None = None, k: int = 1,
                    explorer: str = "greedy", threshold: float = 0.0, seed: int = 0, progress=None,
                    on_plan=None) -> BatchSummary:
    """:func:`recommend_all` of a data directory whose events are parts (features/parts.py: out of core): each part's
    users decided by ``client``'s workers, each reading its own part; the users without events spread over the
    parts by a hash of their id. Decisions are written in part order (a partitioned output: one partition per part,
    written by the worker that decided it). ``on_plan``: called with the log's last instant (int64 ns) once the
    parts are summarised, before any decision."""
    from features.parts import scattered, shared_of_parts, users_by_part

    _check_explorer(explorer)
    on_workers = scattered(client, tables, config)
    plan = shared_of_parts(client, directory, tables, config, strengths=artifact.prior_strengths, on_workers=on_workers)
    if on_plan is not None:
        on_plan(plan.last)
    ids, asked = _people(tables.users, tables.identity, users)
    t = pd.Timestamp(now).value
    tables_, config_ = on_workers
    statistics = None
    if explorer == "thompson":            # counts per (message, channel): summed over the parts
        statistics = {}
        for part in client.gather([client.submit(_part_statistics, p, tables_, config_, artifact.target, t, pure=False)
                                   for p in plan.parts]):
            for key, (won, lost) in part.items():
                a, b = statistics.get(key, (0, 0))
                statistics[key] = (a + won, b + lost)
    job = _Job(config, artifact, model_version, t, k, explorer, threshold, statistics)
    shared_, job_ = client.scatter([plan.shared, job.for_workers()], broadcast=True, hash=False)
    part_of = users_by_part(plan, ids)
    output = _prepared(out)
    futures = {}
    for i, path in enumerate(plan.parts):
        members = np.flatnonzero(part_of == i)
        if not len(members):
            continue
        rows = tables.rows_of(ids[members])
        futures[client.submit(_decide_part, path, tables_, shared_, job_, rows, ids[members], asked[members], seed, i,
                              output, pure=False)] = (i, len(members))
    return _write(output, _in_order(futures), len(ids), progress)
