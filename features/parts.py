"""Out of core: the shared tables and the training set of a log larger than one process's memory, built part by
part on a Dask cluster, every worker reading its own part of the events from Parquet.

The layout (docs/deploy.md, "Out of core"): a data directory whose ``events`` is a *directory* of Parquet files
(``events/*.parquet``), each holding every event of its users — the log partitioned by user, as a warehouse
export by a hash of the user id writes it; ``messages``, ``users`` and ``links`` are single files, as usual (they
are small: they are read and validated here, in the driver). No process holds more than one part's events and
features at a time, and the driver only small tables:

1. **Summaries** (a task per part): the part's events read and validated (the data contract's checks, row by
   row; the canonical ids of the links table), then what the shared tables need of them — daily counts per
   (message, channel) (:meth:`~features.history.PopulationRates.daily_counts`), the first and last instants, the
   part's users, and the users with the smallest hashes (the sample the smoothing strengths are learned on,
   :func:`features.priors._sample`).
2. **Globals**, in the driver: the vocabulary, the population rates from the summed counts, the time origin and
   the smoothing strengths — learned on the sample's events, gathered from the parts — equal to what
   :meth:`features.pipeline.Globals.build` computes from the whole log in memory (a test).
3. **Training set** (a task per part): the part's store on the shared globals, its training set written to
   ``out/part-NNNNN.parquet``. Concatenated and sorted by (timestamp, event_id), the parts are the in-memory
   build's training set, row for row (the partition property, :func:`features.pipeline.partition`).

A user's events must all be in one part (a user found in two parts is an error naming both): a user's features
are a function of that user's events alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.history import PopulationRates, Vocabulary
from features.pipeline import FeatureStore, Globals, pinned_strengths
from features.priors import MAX_FIT_USERS, prior_strengths, user_hashes
from nbm.config import NbmConfig
from nbm.dataset import Dataset, build_dataset
from nbm.errors import UnusableInputError
from nbm.identity import IdentityResolution
from nbm.io import find_table, read_raw_table
from nbm.validate import ValidationReport, validate_events

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Hand the memory freed by a stage back to the system (the collector, glibc's free lists, Arrow's pool): a
    process that read and validated millions of rows otherwise keeps their pages, and the next stage's peak
    stacks on them."""
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):        # not glibc: nothing to trim
        pass
    pa.default_memory_pool().release_unused()


def event_parts(directory: Path | str) -> list[Path]:
    """The event part files of a data directory (``events/*.parquet``, sorted); empty when its events are one file."""
    folder = Path(directory) / "events"
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


@dataclass(frozen=True)
class Tables:
    """The small tables of a data directory with event parts, validated: catalog, users, links, identity."""

    messages: pd.DataFrame
    users: pd.DataFrame
    links: pd.DataFrame
    identity: IdentityResolution
    now: pd.Timestamp
    report: ValidationReport
    decisions: pd.DataFrame | None = None       # the decision log, when read with ``decisions=True`` and present

    @classmethod
    def read(cls, directory: Path | str, config: NbmConfig, now: pd.Timestamp | None = None,
             decisions: bool = False) -> Tables:
        """Read and validate ``messages``, ``users`` and ``links`` of ``directory`` (events are the parts'); with
        ``decisions``, the decision log too (the off-policy evaluation's; one file, read in this process)."""
        import pyarrow.parquet as pq

        directory = Path(directory)
        parts = event_parts(directory)
        if not parts:
            raise UnusableInputError(f"{str(directory / 'events')!r} holds no Parquet part (events/*.parquet)")
        raw = {name: (read_raw_table(path) if (path := find_table(directory, name)) is not None else None)
               for name in ("messages", "users", "links", "decisions")}
        raw["events"] = pq.ParquetFile(parts[0]).schema_arrow.empty_table().to_pandas()
        now = pd.Timestamp.now(tz="UTC") if now is None else now
        dataset, report = build_dataset(raw, config, now)
        del raw
        out = cls(dataset.messages, dataset.users, dataset.links, dataset.identity, now, report,
                  dataset.decisions if decisions else None)
        del dataset
        release_memory()
        return out

    def rows_of(self, user_ids: np.ndarray) -> pd.DataFrame:
        """The users rows of ``user_ids`` (a part's users: what its task is sent of the users table)."""
        return self.users[self.users["user_id"].astype(object).isin(set(np.asarray(user_ids).tolist())).to_numpy()]

    def dataset(self, events: pd.DataFrame, users: pd.DataFrame | None = None,
                decisions: pd.DataFrame | None = None) -> Dataset:
        """A :class:`Dataset` of some events (a part's) with these tables (``users``: the part's rows)."""
        return Dataset(events, self.messages, self.users if users is None else users, self.links, self.identity,
                       decisions)


def read_part(path: Path, tables: Tables, config: NbmConfig) -> tuple[pd.DataFrame, ValidationReport]:
    """One part's events, validated as ``nbm.dataset.build_dataset`` validates a whole events table (rows refused
    are in the report, with their row in the part), with canonical user ids (the links table's)."""
    report = ValidationReport()
    raw = read_raw_table(path)
    report.rows_read["events"] = len(raw)
    events, problems = validate_events(raw, config, tables.messages["message_id"], tables.now, report)
    report.add(problems)
    events.insert(events.columns.get_loc("user_id") + 1, "source_user_id", events["user_id"])
    events["user_id"] = tables.identity.apply(events["user_id"])
    report.rows_kept["events"] = len(events)
    return events, report


@dataclass(frozen=True)
class Summary:
    """What the shared tables need of one part (:func:`_summarise`)."""

    daily: pd.DataFrame
    segments: dict[str, pd.DataFrame]
    first: int | None
    last: int | None
    users: np.ndarray               # the part's canonical user ids (those with events)
    smallest: pd.Series             # hash → user id of its users with the smallest hashes (at most MAX_FIT_USERS)
    rows_read: int
    rows_kept: int
    problems: pd.DataFrame


def _summarise(path: Path, tables: Tables, config: NbmConfig, vocabulary: Vocabulary) -> Summary:
    """One part's :class:`Summary` (what a worker runs)."""
    events, report = read_part(path, tables, config)
    times = events["timestamp"].to_numpy(dtype="int64")
    users = pd.unique(events["user_id"].to_numpy(dtype=object))
    hashed = pd.Series(users, index=user_hashes(users))
    smallest = hashed.sort_index(kind="stable").iloc[:MAX_FIT_USERS]
    daily, segments = PopulationRates.daily_counts(events, vocabulary, tables.users)
    del events
    release_memory()
    return Summary(daily, segments, int(times.min()) if len(times) else None,
                   int(times.max()) if len(times) else None, users, smallest, report.rows_read.get("events", 0),
                   report.rows_kept.get("events", 0), report.problems.assign(part=path.name))


def _sample_events(path: Path, tables: Tables, config: NbmConfig, sample: frozenset) -> pd.DataFrame:
    """The events of one part's users that are in ``sample`` (what a worker runs)."""
    events, _ = read_part(path, tables, config)
    return events[events["user_id"].astype(object).isin(sample)]


def in_dataset_order(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows gathered from parts (events, or training sets: a row each send) as one frame, in the order of a
    :class:`Dataset`'s events and of the in-memory training set (timestamp, then event id)."""
    rows = pd.concat(pieces, ignore_index=True).sort_values(["timestamp", "event_id"], kind="stable")
    return rows.reset_index(drop=True)


def _part_training_set(path: Path, tables: Tables, config: NbmConfig, shared: Globals, users: pd.DataFrame,
                       out: Path, columns=None) -> int:
    """One part's training set, written to ``out`` (what a worker runs); its rows. ``columns``: as for
    :func:`training_set_of_parts`."""
    frame = _part_training_rows(path, tables, config, shared, users, columns)
    frame.to_parquet(out, index=False)
    rows = len(frame)
    del frame
    release_memory()
    return rows


@dataclass(frozen=True)
class PartsPlan:
    """The globals of a parted log and where each part's users are (:func:`shared_of_parts`)."""

    shared: Globals
    parts: list[Path]
    users: list[np.ndarray]         # per part, its users (canonical ids with events)
    rows_read: int
    rows_kept: int
    problems: pd.DataFrame
    last: int                       # the log's last instant (int64 ns)


def scattered(client, tables: Tables, config: NbmConfig) -> tuple:
    """``tables`` and ``config`` on every worker of ``client`` (futures), once for the stages that read parts. The
    users table goes only where the summaries need it (segments: each event's segment); the other stages send each
    part's own users rows with its task."""

    sent = replace(tables, decisions=None)      # (the decision log: the command's process only)
    if not config.features.segment_by:
        sent = replace(sent, users=tables.users.iloc[:0])
    return tuple(client.scatter([sent, config], broadcast=True, hash=False))


def shared_of_parts(client, directory: Path | str, tables: Tables, config: NbmConfig,
                    strengths: dict[str, float] | None = None, on_workers: tuple | None = None) -> PartsPlan:
    """The :class:`Globals` of the log of ``directory``'s event parts, computed by ``client``'s workers from the
    parts (steps 1–2 of the module docstring): equal to ``Globals.build`` of the whole log. ``strengths``: a
    model's smoothing strengths, used as they are (no sample is gathered). ``on_workers``: :func:`scattered`'s
    futures of ``tables`` and ``config`` (scattered here when not given)."""
    from distributed import as_completed

    parts = event_parts(directory)
    vocabulary = Vocabulary.build(tables.messages, config, tables.users)
    tables_, config_ = on_workers or scattered(client, tables, config)
    [vocabulary_] = client.scatter([vocabulary], broadcast=True, hash=False)
    futures = {client.submit(_summarise, path, tables_, config_, vocabulary_, pure=False): i
               for i, path in enumerate(parts)}
    summaries: list[Summary | None] = [None] * len(parts)
    for future, summary in as_completed(futures, with_results=True):
        summaries[futures[future]] = summary
        log.info("out of core: part %d of %d summarised (%s events)", futures[future] + 1, len(parts),
                 f"{summary.rows_kept:,}")
    done: list[Summary] = summaries  # type: ignore[assignment]
    _check_disjoint(parts, [s.users for s in done])
    firsts = [s.first for s in done if s.first is not None]
    if not firsts:
        raise UnusableInputError(f"no valid events in the parts of {str(directory)!r}: nothing to learn from")
    base = min(firsts) - 400 * 86_400 * 10**9          # as Globals.build
    last = max(s.last for s in done if s.last is not None)
    daily = pd.concat([s.daily for s in done], ignore_index=True)
    segments = {name: pd.concat([s.segments[name] for s in done], ignore_index=True) for name in done[0].segments}
    rates = PopulationRates.from_daily(daily, segments, vocabulary, base)
    pinned = pinned_strengths(strengths)
    if pinned is None:
        smallest = pd.concat([s.smallest for s in done]).sort_index(kind="stable").iloc[:MAX_FIT_USERS]
        sample = frozenset(smallest.to_numpy(dtype=object).tolist())
        holding = [path for path, s in zip(parts, done)          # the parts whose users are in the sample
                   if not sample.isdisjoint(s.smallest.to_numpy(dtype=object).tolist())]
        [sample_] = client.scatter([sample], broadcast=True, hash=False)     # (a set alone would be scattered element by element)
        events = in_dataset_order(client.gather([client.submit(_sample_events, path, tables_, config_, sample_,
                                                               pure=False) for path in holding]))
        users = tables.users[tables.users["user_id"].astype(object).isin(sample)]
        pinned = prior_strengths(tables.dataset(events, users), vocabulary, rates, config, end=last + 1)
    problems = pd.concat([s.problems for s in done], ignore_index=True)
    release_memory()
    return PartsPlan(Globals(vocabulary, rates, base, pinned), parts, [s.users for s in done],
                     sum(s.rows_read for s in done), sum(s.rows_kept for s in done), problems, last)


def _check_disjoint(parts: list[Path], users: list[np.ndarray]) -> None:
    """Every user's events in one part (``users``: each part's; else an error naming a user and two of its parts)."""
    owner = np.concatenate([np.full(len(u), i) for i, u in enumerate(users)]) if users else np.zeros(0)
    ids = pd.Series(np.concatenate(users) if users else np.zeros(0, dtype=object))
    twice = ids.duplicated(keep=False)
    if twice.any():
        user = ids[twice].iloc[0]
        where = sorted({parts[int(i)].name for i in owner[(ids == user).to_numpy()]})
        raise UnusableInputError(f"user {user!r} has events in more than one part ({', '.join(where)}): each part "
                                 "must hold every event of its users (partition the log by user)")


UNKNOWN_AND_LINKED = ("events_of_unknown_users", "events_under_linked_identifiers")
"""The validation report's counts of events that :func:`nbm.dataset.build_dataset` notes, summed over the parts."""


def _validate_part(path: Path, tables: Tables, config: NbmConfig) -> tuple[ValidationReport, np.ndarray]:
    """One part's validation report and its users (what ``nbm validate`` runs per part)."""
    events, report = read_part(path, tables, config)
    users = pd.unique(events["user_id"].to_numpy(dtype=object))
    unknown, linked = UNKNOWN_AND_LINKED
    report.info[unknown] = int((~events["user_id"].isin(tables.users["user_id"])).sum())
    report.info[linked] = int((events["user_id"] != events["source_user_id"]).sum())
    del events
    release_memory()
    return report, users


def validate_parts(directory: Path | str, config: NbmConfig, now: pd.Timestamp | None = None,
                   client=None) -> tuple[Tables, ValidationReport]:
    """``nbm validate`` of a data directory whose events are parts: the small tables, then every part read and
    validated — by ``client``'s workers, or here one part at a time (memory: one part) — in one report. A part's
    rows are counted and its problems listed under ``events/PART`` (``row``: the row in that part); late rows are
    summed. A user found in two parts is an error naming both (:class:`~nbm.errors.UnusableInputError`)."""
    tables = Tables.read(directory, config, now=now)
    parts = event_parts(directory)
    if client is not None:          # (the whole users table: a part's events of unknown users are counted)
        tables_, config_ = client.scatter([replace(tables, decisions=None), config], broadcast=True, hash=False)
        results = client.gather([client.submit(_validate_part, path, tables_, config_, pure=False) for path in parts])
    else:
        results = [_validate_part(path, tables, config) for path in parts]
    report = tables.report
    for counts in (report.rows_read, report.rows_kept, report.duplicates):
        counts.pop("events", None)          # (the small tables' read had no events: the parts' are below)
    report.info.update(dict.fromkeys(UNKNOWN_AND_LINKED, 0))
    for path, (part, _) in zip(parts, results):
        name = f"events/{path.name}"
        report.rows_read[name] = part.rows_read.get("events", 0)
        report.rows_kept[name] = part.rows_kept.get("events", 0)
        report.duplicates[name] = part.duplicates.get("events", 0)
        report.late_rows += part.late_rows
        for key in UNKNOWN_AND_LINKED:
            report.info[key] += part.info[key]
        report.add([part.problems.assign(table=name)])
    _check_disjoint(parts, [users for _, users in results])
    return tables, report


def training_set_of_parts(client, plan: PartsPlan, tables: Tables, config: NbmConfig, out: Path | str,
                          on_workers: tuple | None = None, columns=None) -> list[Path]:
    """The training set of every part, built by ``client``'s workers on the plan's globals and written to
    ``out/part-NNNNN.parquet`` (step 3 of the module docstring); the files, in part order. ``on_workers``: as for
    :func:`shared_of_parts`. ``columns``: a function (picklable) of a part's :class:`Dataset` and its training set
    giving more columns (name → values, a value a row) that need the part's events — labels training computes from
    them (``training.risk.risk_columns``) — added to the part's rows."""
    from distributed import as_completed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables_, config_ = on_workers or scattered(client, tables, config)
    [shared_] = client.scatter([plan.shared], broadcast=True, hash=False)
    futures = {}
    for i, (path, users) in enumerate(zip(plan.parts, plan.users)):
        rows = tables.rows_of(users)
        target = out / f"part-{i:05d}.parquet"
        futures[client.submit(_part_training_set, path, tables_, config_, shared_, rows, target, columns,
                              pure=False)] = i
    for future, n in as_completed(futures, with_results=True):
        log.info("out of core: training set of part %d of %d written (%s rows)", futures[future] + 1,
                 len(plan.parts), f"{n:,}")
    return [out / f"part-{i:05d}.parquet" for i in range(len(plan.parts))]


def _part_training_rows(path: Path, tables: Tables, config: NbmConfig, shared: Globals, users: pd.DataFrame,
                        columns=None) -> pd.DataFrame:
    """One part's training set (what a worker runs), returned."""
    events, _ = read_part(path, tables, config)
    dataset = tables.dataset(events, users)
    frame = FeatureStore.build(dataset, config, shared).training_set()
    if columns is not None:
        for name, values in columns(dataset, frame).items():
            frame[name] = values
    del events, dataset
    release_memory()
    return frame


def training_rows_of_parts(client, plan: PartsPlan, tables: Tables, config: NbmConfig, on_workers: tuple | None = None,
                           columns=None) -> pd.DataFrame:
    """The training set of every part, built by ``client``'s workers (as :func:`training_set_of_parts`) and gathered
    here, in the in-memory build's order — for ``nbm train``, which fits on it in this process or from it with
    ``lightgbm.dask``: the events need not fit in memory, the training set must."""
    from distributed import as_completed

    tables_, config_ = on_workers or scattered(client, tables, config)
    [shared_] = client.scatter([plan.shared], broadcast=True, hash=False)
    futures = {client.submit(_part_training_rows, path, tables_, config_, shared_, tables.rows_of(users), columns,
                             pure=False): i for i, (path, users) in enumerate(zip(plan.parts, plan.users))}
    frames: list[pd.DataFrame | None] = [None] * len(futures)
    for future, frame in as_completed(futures, with_results=True):
        i = futures.pop(future)
        frames[i] = frame
        log.info("out of core: training set of part %d of %d gathered (%s rows)", i + 1, len(plan.parts),
                 f"{len(frame):,}")
    return in_dataset_order(frames)


def users_by_part(plan: PartsPlan, ids: np.ndarray) -> np.ndarray:
    """The part that decides (or featurises) each user of ``ids``: the one holding its events; a user without
    events, by a hash of its id."""
    from features.pipeline import partition_of

    owner = pd.Index(np.concatenate(plan.users), dtype=object).get_indexer(pd.Index(ids, dtype=object))
    part = np.searchsorted(np.cumsum([len(u) for u in plan.users]), owner, side="right")
    unowned = owner < 0
    part[unowned] = partition_of(pd.Series(ids[unowned], dtype=object), len(plan.parts))
    return part


def _part_snapshot(path: Path, tables: Tables, config: NbmConfig, shared: Globals, users: pd.DataFrame,
                   ids: np.ndarray, now: pd.Timestamp, out: Path) -> int:
    """One part's users' snapshot, written to ``out`` (what a worker runs); its rows."""
    events, _ = read_part(path, tables, config)
    frame = FeatureStore.build(tables.dataset(events, users), config, shared).snapshot(now, ids)
    frame.reset_index().to_parquet(out, index=False)
    rows = len(frame)
    del events, frame
    release_memory()
    return rows


def snapshot_of_parts(client, plan: PartsPlan, tables: Tables, config: NbmConfig, now: pd.Timestamp,
                      out: Path | str, user_ids: np.ndarray | None = None, on_workers: tuple | None = None
                      ) -> list[Path]:
    """The online feature snapshot (:meth:`FeatureStore.snapshot`) of every user of the users table (or ``user_ids``)
    as of ``now``, each part's users by a worker on the plan's globals, written to ``out/part-NNNNN.parquet`` (a
    ``user_id`` column, then the features); the files, in part order (parts without users write none)."""
    from distributed import as_completed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables_, config_ = on_workers or scattered(client, tables, config)
    [shared_] = client.scatter([plan.shared], broadcast=True, hash=False)
    ids = tables.users["user_id"].to_numpy(dtype=object) if user_ids is None else \
        tables.identity.apply(pd.Series(user_ids, dtype=object)).to_numpy(dtype=object)
    part = users_by_part(plan, ids)
    futures = {}
    for i, path in enumerate(plan.parts):
        members = ids[part == i]
        if not len(members):
            continue
        rows = tables.rows_of(members)
        target = out / f"part-{i:05d}.parquet"
        futures[client.submit(_part_snapshot, path, tables_, config_, shared_, rows, members, now, target,
                              pure=False)] = target
    for future, n in as_completed(futures, with_results=True):
        log.info("out of core: snapshot of %s written (%s users)", futures.pop(future).name, f"{n:,}")
    return sorted(out.glob("part-*.parquet"))


def read_training_set(files: list[Path]) -> pd.DataFrame:
    """The parts' training sets as one frame, in the in-memory build's order (by send time, then event id)."""
    return in_dataset_order([pd.read_parquet(f) for f in files])
