"""Loading a data directory: read, validate, resolve identities — the one entry point to the data.

``load_dataset`` returns the clean tables and the report of what was wrong. Events carry the canonical
``user_id``; the identifier they were logged under stays in ``source_user_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nbm.config import NbmConfig
from nbm.errors import UnusableInputError
from nbm.identity import IdentityResolution, resolve_identities
from nbm.io import find_table, read_raw_table, undecodable_rows
from nbm.validation_report import ValidationReport, problems_frame
from nbm.schema import TABLES
from nbm.validate import (check_columns, validate_decisions, validate_events, validate_links, validate_messages,
                          validate_users)


@dataclass(frozen=True)
class Dataset:
    """The clean tables of a data directory.

    ``events`` is sorted by (timestamp, event_id), with canonical ``user_id`` and ``source_user_id``;
    ``messages`` and ``users`` have one row per id; list columns hold Python lists.
    """

    events: pd.DataFrame
    messages: pd.DataFrame
    users: pd.DataFrame
    links: pd.DataFrame
    identity: IdentityResolution
    decisions: pd.DataFrame | None = None
    """The decision log with canonical ``user_id`` (and ``source_user_id``); ``None`` when the data has none."""


def unusable(dataset: Dataset, report: ValidationReport, directory: Path | str) -> str | None:
    """Why nothing can be learned or decided from ``dataset`` (``None``: something can), naming the table and
    the commonest reason its rows were refused. ``nbm validate`` and every command that loads data exit 2 on
    it, with the same words."""
    def refused(table: str) -> str:
        counts = report.counts()
        mine = counts[counts["table"] == table].sort_values("rows", ascending=False)
        if not len(mine):
            return ""
        top = mine.iloc[0]
        return f" ({int(mine['rows'].sum()):,} row problem(s), most: `{top['column']}` {top['reason']}, {int(top['rows']):,})"
    if not len(dataset.messages):
        return f"the messages table of {str(directory)!r} has no valid message: nothing to recommend{refused('messages')}"
    if not len(dataset.events):
        return f"no valid events in {str(directory)!r}: nothing to learn from{refused('events')}"
    return None


def unusable_parts(messages: int, events: int, report: ValidationReport, directory: Path | str) -> str | None:
    """:func:`unusable` of a data directory whose events are parts (``events/*.parquet``): ``messages`` and
    ``events`` are the valid rows counted; the parts' problems are in ``report`` under ``events/PART``."""
    from types import SimpleNamespace

    merged = ValidationReport(problems=report.problems.assign(
        table=report.problems["table"].astype(str).str.replace(r"^events/.*", "events", regex=True)))
    return unusable(SimpleNamespace(messages=range(messages), events=range(events)), merged, directory)


def read_tables(directory: Path) -> dict[str, pd.DataFrame | None]:
    """The raw tables of ``directory`` (``None`` for an absent one)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UnusableInputError(f"data directory {str(directory)!r} does not exist")
    raw = {}
    for name in TABLES:
        path = find_table(directory, name)
        raw[name] = read_raw_table(path) if path is not None else None
    return raw


def load_dataset(directory: Path, config: NbmConfig, now: pd.Timestamp | None = None) -> tuple[Dataset, ValidationReport]:
    """Read, validate and resolve a data directory.

    Raises
    ------
    UnusableInputError
        When the directory, a required table or a required column is missing, or a file cannot be read.
    """
    return build_dataset(read_tables(directory), config, now)


def build_dataset(raw: dict[str, pd.DataFrame | None], config: NbmConfig,
                  now: pd.Timestamp | None = None) -> tuple[Dataset, ValidationReport]:
    """Validate raw tables (as read from files, or built in memory) into a :class:`Dataset`."""
    check_columns(raw)
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    report = ValidationReport()
    raw = dict(raw)
    for name, table in TABLES.items():
        frame = raw.get(name)
        if frame is not None:
            report.rows_read[name] = len(frame)
            if frame.attrs.get("undecodable"):
                raw[name] = _drop_undecodable(name, frame, report)
            extra = [c for c in frame.columns if c not in table.column_names]
            if extra and table.extra_columns == "ignore":
                report.notes.append(f"table `{name}`: ignored unknown column(s) " + ", ".join(f"`{c}`" for c in extra))

    messages, problems = validate_messages(raw["messages"], config)
    report.add(problems)
    users, problems = validate_users(raw["users"], config)
    report.add(problems)
    links_raw = raw.get("links")
    if links_raw is not None:
        links, problems = validate_links(links_raw)
        report.add(problems)
    else:
        links = pd.DataFrame({"identifier_a": pd.Series(dtype="str"), "identifier_b": pd.Series(dtype="str")})
    events, problems = validate_events(raw["events"], config, messages["message_id"], now, report)
    report.add(problems)

    decisions = None
    if raw.get("decisions") is not None:
        decisions, problems = validate_decisions(raw["decisions"])
        report.add(problems)

    identity = resolve_identities(links, users["user_id"])
    users = _merge_users(users, identity, raw["users"], report)
    events.insert(events.columns.get_loc("user_id") + 1, "source_user_id", events["user_id"])
    events["user_id"] = identity.apply(events["user_id"])
    if decisions is not None:
        decisions.insert(decisions.columns.get_loc("user_id") + 1, "source_user_id", decisions["user_id"])
        decisions["user_id"] = identity.apply(decisions["user_id"])
    report.info["events_of_unknown_users"] = int((~events["user_id"].isin(users["user_id"])).sum())
    report.info["events_under_linked_identifiers"] = int((events["user_id"] != events["source_user_id"]).sum())
    for name, frame in (("events", events), ("messages", messages), ("users", users), ("links", links),
                        ("decisions", decisions)):
        if name in report.rows_read:
            report.rows_kept[name] = len(frame)
    order = {name: i for i, name in enumerate(TABLES)}
    report.problems = (report.problems.assign(_t=report.problems["table"].map(order))
                       .sort_values(["_t", "row"], kind="stable").drop(columns="_t").reset_index(drop=True))
    return Dataset(events, messages, users, links, identity, decisions), report


def _drop_undecodable(name: str, frame: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    """``frame`` less its rows with bytes that are not UTF-8, each reported with its line in the file (the
    header is line 1; a quoted value spanning lines shifts the count)."""
    bad = undecodable_rows(frame)
    if not bad:
        return frame
    by_column: dict[str, list[int]] = {}
    for row, (column, _) in bad.items():
        by_column.setdefault(column, []).append(row)
    for column, rows in by_column.items():
        index = pd.Index(rows)
        shown = pd.Series([bad[r][1] for r in rows], index=index)
        lines = pd.Series([f"line {r + 2} of {name}.csv holds bytes that are not UTF-8" for r in rows], index=index)
        report.add([problems_frame(name, index, None, column, shown, "undecodable_bytes", lines)])
    return frame.drop(index=list(bad))       # the other rows keep their numbers


def _merge_users(users: pd.DataFrame, identity: IdentityResolution, raw: pd.DataFrame,
                 report: ValidationReport) -> pd.DataFrame:
    """Drop ``users`` rows that links merge into another person, reporting each."""
    merged = users["user_id"].isin(identity.merged_users.index)
    if not merged.any():
        return users
    ids = users.loc[merged, "user_id"]
    raw_ids = raw["user_id"].astype("str").str.strip()
    rows = raw_ids.index[raw_ids.isin(ids) & ~raw_ids.duplicated(keep="first")]
    into = raw_ids[rows].map(identity.merged_users)
    report.add([problems_frame(
        "users", rows, raw_ids, "user_id", raw_ids, "same_person",
        "linked to user " + into.astype(str) + "; merged into it (its events count for that user)", True,
    )])
    return users[~merged].reset_index(drop=True)
