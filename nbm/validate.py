"""Validation of the data contract's tables: typed clean rows, and a report of every bad one.

Vectorised throughout: each rule is a boolean mask over a whole column. A row with any problem is
dropped (except ``unknown_message`` when the configuration keeps those); every other row is kept. Reason
codes are stable and documented in ``docs/data-contract.md``.
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

import numpy as np
import pandas as pd

from nbm.config import LIFECYCLE_STAGES, NbmConfig
from nbm.errors import UnusableInputError
from nbm.parse import numeric_or_text, parse_floats, parse_lists, parse_strings, parse_timestamps
from nbm.validation_report import ValidationReport, problems_frame
from nbm.schema import CHANNEL_EVENT_TYPES, EVENT_TYPES, MESSAGE_EVENT_TYPES, TABLES, Table


class _Checker:
    """Collects the problems of one table; ``bad`` marks the rows to drop."""

    def __init__(self, table: Table, raw: pd.DataFrame) -> None:
        self.table, self.raw = table, raw
        self.key = parse_strings(raw[table.key]) if table.key else None
        self.frames: list[pd.DataFrame] = []
        self.bad = pd.Series(False, index=raw.index)

    def flag(self, mask: pd.Series, column: str, reason: str, message: str | pd.Series,
             value: pd.Series | None = None, drop: bool = True) -> None:
        rows = mask.index[mask.to_numpy(dtype=bool)]
        if not len(rows):
            return
        shown = self.raw[column] if value is None and column in self.raw else value
        self.frames.append(problems_frame(self.table.name, rows, self.key, column,
                                          shown if shown is not None else "", reason, message, drop))
        if drop:
            self.bad |= mask

    def required(self, parsed: dict[str, pd.Series]) -> None:
        for column in self.table.required_columns:
            self.flag(parsed[column].isna() & ~self._unparseable(column), column, "missing_value",
                      f"`{column}` is required")

    def _unparseable(self, column: str) -> pd.Series:
        return getattr(self, "_failed", {}).get(column, pd.Series(False, index=self.raw.index))

    def parse(self) -> dict[str, pd.Series]:
        """Every declared column parsed; unparseable timestamps and numbers flagged."""
        parsed: dict[str, pd.Series] = {}
        self._failed: dict[str, pd.Series] = {}
        n = len(self.raw)
        for col in self.table.columns:
            raw = self.raw[col.name] if col.name in self.raw else pd.Series([None] * n, index=self.raw.index, dtype=object)
            if col.kind == "timestamp":
                parsed[col.name], failed = parse_timestamps(raw)
                self.flag(failed, col.name, "unparseable_timestamp", f"`{col.name}` is not an ISO-8601 time", raw)
            elif col.kind == "float":
                parsed[col.name], failed = parse_floats(raw)
                self.flag(failed, col.name, "not_a_number", f"`{col.name}` is not a number", raw)
            elif col.kind == "string_list":
                parsed[col.name] = parse_lists(raw)
                failed = pd.Series(False, index=self.raw.index)
            else:
                parsed[col.name] = parse_strings(raw)
                failed = pd.Series(False, index=self.raw.index)
            self._failed[col.name] = failed
        return parsed

    def list_items(self, values: pd.Series, column: str, allowed: set[str], reason: str, what: str) -> None:
        """Flag rows whose list holds an item outside ``allowed`` (one problem per bad item)."""
        items = values.explode().dropna()
        wrong = items[~items.isin(allowed)]
        if len(wrong):
            mask = pd.Series(False, index=self.raw.index)
            mask[wrong.index.unique()] = True
            first = wrong.groupby(level=0).first()
            self.flag(mask, column, reason, "unknown " + what + " " + first.map(repr) + f" in `{column}`", first)

    def duplicate_keys(self) -> None:
        """Rows whose key an earlier row has (the first is kept). Codes number the keys in order of first
        appearance, so the first row of code c is the c-th first occurrence; the message is built for the
        duplicates only (for every row it costs seconds on a table of millions)."""
        codes = pd.factorize(self.key)[0]
        repeat = pd.Series(codes).duplicated().to_numpy() & (codes >= 0)
        if not repeat.any():
            return
        first_rows = np.flatnonzero(~repeat & (codes >= 0))
        rows = np.flatnonzero(repeat)
        duplicated = pd.Series(repeat, index=self.key.index) & ~self.bad
        first_label = pd.Series(self.key.index[first_rows[codes[rows]]].astype(str), index=self.key.index[rows])
        self.flag(duplicated, self.table.key, "duplicate_key",
                  f"second row with this `{self.table.key}`; the first (row " + first_label + ") is kept")

    def finish(self, parsed: dict[str, pd.Series]) -> pd.DataFrame:
        keep = ~self.bad
        return pd.DataFrame({c: s[keep] for c, s in parsed.items()}).reset_index(drop=True)


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_columns(raw: dict[str, pd.DataFrame | None]) -> None:
    """Raise with every missing required table and column at once."""
    fatal = []
    for name, table in TABLES.items():
        frame = raw.get(name)
        if frame is None:
            if table.required:
                fatal.append(f"table `{name}` is missing (expected {name}.parquet or {name}.csv)")
            continue
        missing = [c for c in table.required_columns if c not in frame.columns]
        if missing:
            fatal.append(f"table `{name}` lacks required column(s) " + ", ".join(f"`{c}`" for c in missing))
    if fatal:
        raise UnusableInputError("; ".join(fatal))


def validate_messages(raw: pd.DataFrame, config: NbmConfig) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    check = _Checker(TABLES["messages"], raw)
    p = check.parse()
    check.required(p)
    check.flag((p["channels"].map(len) == 0) & p["message_id"].notna() & ~check.bad, "channels", "empty_channels",
               "`channels` is empty: the message could never be sent")
    check.list_items(p["channels"], "channels", set(config.channels), "unknown_channel", "channel")
    check.list_items(p["lifecycle_stages"], "lifecycle_stages", set(LIFECYCLE_STAGES), "unknown_lifecycle_stage",
                     "lifecycle stage")
    check.flag(p["value"] < 0, "value", "negative_value", "`value` is negative")
    p["value"] = p["value"].fillna(1.0)
    check.flag(p["end_at"] < p["start_at"], "end_at", "end_before_start", "`end_at` is before `start_at`")
    check.duplicate_keys()
    return check.finish(p), check.frames


def validate_users(raw: pd.DataFrame, config: NbmConfig) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    check = _Checker(TABLES["users"], raw)
    p = check.parse()
    check.required(p)
    p["timezone"] = p["timezone"].fillna("UTC")
    check.flag(~p["timezone"].isin(_timezones()), "timezone", "bad_timezone",
               "`timezone` is not an IANA time-zone name")
    check.list_items(p["consent"], "consent", set(config.channels), "unknown_channel", "channel")
    check.duplicate_keys()
    for column in raw.columns:
        if column not in TABLES["users"].column_names:
            p[column] = numeric_or_text(raw[column])
    return check.finish(p), check.frames


def validate_links(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    check = _Checker(TABLES["links"], raw)
    p = check.parse()
    check.required(p)
    return check.finish(p), check.frames


def validate_decisions(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    check = _Checker(TABLES["decisions"], raw)
    p = check.parse()
    check.required(p)
    check.flag((p["propensity"] <= 0) | (p["propensity"] > 1), "propensity", "bad_propensity",
               "`propensity` must lie in (0, 1]")
    check.duplicate_keys()
    clean = check.finish(p)
    return clean.sort_values(["timestamp", "decision_id"], kind="stable").reset_index(drop=True), check.frames


def validate_events(raw: pd.DataFrame, config: NbmConfig, message_ids: pd.Series, now: pd.Timestamp,
                    report: ValidationReport) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Validate events against the clean catalog; count duplicates and late rows into ``report``."""
    check = _Checker(TABLES["events"], raw)
    p = check.parse()
    check.required(p)
    kind = p["event_type"]
    check.flag(kind.notna() & ~kind.isin(EVENT_TYPES), "event_type", "unknown_event_type",
               "unknown `event_type` (expected one of " + ", ".join(EVENT_TYPES) + ")")
    limit = now + pd.Timedelta(minutes=config.validation.future_tolerance_minutes)
    check.flag(p["timestamp"] > limit, "timestamp", "future_timestamp", f"`timestamp` is later than {limit.isoformat()}")
    for column, kinds in (("message_id", MESSAGE_EVENT_TYPES), ("channel", CHANNEL_EVENT_TYPES)):
        check.flag(p[column].isna() & kind.isin(kinds), column, "missing_value",
                   f"`{column}` is required for event_type " + kind.astype(str))
    check.flag(p["channel"].notna() & ~p["channel"].isin(config.channels), "channel", "unknown_channel",
               "unknown channel (configured: " + ", ".join(config.channels) + ")")
    check.flag((p["propensity"] <= 0) | (p["propensity"] > 1), "propensity", "bad_propensity",
               "`propensity` must lie in (0, 1]")
    check.flag(p["value"] < 0, "value", "negative_value", "`value` is negative")
    check.flag(p["message_id"].notna() & ~p["message_id"].isin(message_ids) & ~check.bad, "message_id",
               "unknown_message", "`message_id` is not in the messages table",
               drop=not config.validation.keep_unknown_messages)

    clean = check.finish(p)
    duplicated = clean["event_id"].duplicated(keep="first")
    report.duplicates["events"] = int(duplicated.sum())
    clean = clean[~duplicated.to_numpy()]
    stamps = clean["timestamp"].to_numpy(dtype="int64")
    report.late_rows = int((stamps[1:] < np.maximum.accumulate(stamps)[:-1]).sum()) if len(stamps) > 1 else 0
    clean = clean.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)
    return clean, check.frames
