"""Validation: one table of invalid inputs and the problem each gets; valid rows are never lost."""

from __future__ import annotations

import pandas as pd
import pytest

from nbm.config import NbmConfig
from nbm.dataset import build_dataset
from nbm.errors import UnusableInputError
from tests.nbm.conftest import NOW

# (table, row, column, bad value, reason, key reported)
INVALID = [
    ("events", 0, "event_id", "", "missing_value", None),
    ("events", 0, "timestamp", "", "missing_value", "e1"),
    ("events", 0, "user_id", "  ", "missing_value", "e1"),
    ("events", 1, "event_type", "purchase", "unknown_event_type", "e2"),
    ("events", 1, "timestamp", "yesterday at 5", "unparseable_timestamp", "e2"),
    ("events", 1, "timestamp", "2026-13-01T00:00:00Z", "unparseable_timestamp", "e2"),
    ("events", 1, "timestamp", "2099-01-01T00:00:00Z", "future_timestamp", "e2"),
    ("events", 0, "message_id", "", "missing_value", "e1"),
    ("events", 2, "channel", "", "missing_value", "e3"),
    ("events", 0, "channel", "fax", "unknown_channel", "e1"),
    ("events", 0, "propensity", "0", "bad_propensity", "e1"),
    ("events", 0, "propensity", "1.5", "bad_propensity", "e1"),
    ("events", 0, "propensity", "-0.2", "bad_propensity", "e1"),
    ("events", 0, "propensity", "high", "not_a_number", "e1"),
    ("events", 3, "value", "-5", "negative_value", "e4"),
    ("events", 3, "value", "lots", "not_a_number", "e4"),
    ("events", 0, "message_id", "m404", "unknown_message", "e1"),
    ("messages", 1, "message_id", "", "missing_value", None),
    ("messages", 1, "topic", "", "missing_value", "m2"),
    ("messages", 1, "channels", "", "empty_channels", "m2"),
    ("messages", 1, "channels", "sms;fax", "unknown_channel", "m2"),  # reported value: the bad item
    ("messages", 1, "channels", " ; ", "empty_channels", "m2"),
    ("messages", 1, "lifecycle_stages", "lost", "unknown_lifecycle_stage", "m2"),
    ("messages", 1, "value", "-1", "negative_value", "m2"),
    ("messages", 0, "end_at", "2026-08-01T00:00:00Z", "end_before_start", "m1"),
    ("messages", 1, "start_at", "soon", "unparseable_timestamp", "m2"),
    ("messages", 1, "message_id", "m1", "duplicate_key", "m1"),
    ("users", 1, "user_id", "", "missing_value", None),
    ("users", 1, "timezone", "Mars/Olympus", "bad_timezone", "u2"),
    ("users", 1, "consent", "sms;pigeon", "unknown_channel", "u2"),
    ("users", 1, "signup_at", "last year", "unparseable_timestamp", "u2"),
    ("users", 1, "user_id", "u1", "duplicate_key", "u1"),
    ("links", 0, "identifier_b", "", "missing_value", None),
]


@pytest.mark.parametrize(("table", "row", "column", "value", "reason", "key"), INVALID,
                         ids=[f"{t}.{c}={v!r}" for t, _, c, v, *_ in INVALID])
def test_invalid_input_is_reported_and_only_that_row_is_dropped(tables, config, table, row, column, value, reason, key):
    if table == "messages" and column == "start_at":
        tables["messages"].loc[1, "end_at"] = ""
    tables[table].loc[row, column] = value
    dataset, report = build_dataset(tables, config, now=NOW)
    problems = report.problems[report.problems["table"] == table]  # a dropped message also orphans its events
    assert len(problems) == 1, problems.to_dict(orient="records")
    problem = problems.iloc[0]
    assert (problem["table"], problem["row"], problem["column"], problem["reason"]) == (table, row, column, reason)
    item_reasons = {"unknown_channel", "unknown_lifecycle_stage"}
    expected = value.split(";")[-1] if reason in item_reasons and column != "channel" else value
    assert problem["value"] == expected
    assert problem["key"] == key
    assert problem["message"]
    # Every other row of the table is kept.
    kept = report.rows_kept[table]
    assert kept == len(tables[table]) - 1
    assert report.exit_code == 1


def test_clean_tables_have_no_problems_and_typed_columns(tables, config) -> None:
    dataset, report = build_dataset(tables, config, now=NOW)
    assert report.exit_code == 0 and report.problems.empty
    events = dataset.events
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert events["propensity"].dtype == "float64" and events["value"].dtype == "float64"
    assert dataset.messages.loc[0, "channels"] == ["email", "push"]
    assert dataset.messages.loc[0, "tags"] == ["fashion:new-in", "promo"]
    assert dataset.messages.loc[1, "lifecycle_stages"] == ["at_risk", "dormant"]
    assert dataset.messages.loc[1, "value"] == 1.0  # the default
    assert pd.isna(dataset.messages.loc[0, "end_at"])
    users = dataset.users.set_index("user_id")
    assert users.loc["u2", "timezone"] == "UTC"  # the default
    assert users["loyalty_points"].dtype == "float64" and users.loc["u2", "loyalty_points"] == 7.5
    assert users.loc["u1", "country"] == "DE"


def test_naive_timestamps_are_utc_and_offsets_are_converted(tables, config) -> None:
    tables["events"].loc[0, "timestamp"] = "2026-10-01T09:00:00"
    tables["events"].loc[1, "timestamp"] = "2026-10-01T12:00:00+02:00"
    dataset, report = build_dataset(tables, config, now=NOW)
    stamps = dataset.events.set_index("event_id")["timestamp"]
    assert stamps["e1"] == pd.Timestamp("2026-10-01T09:00:00Z")
    assert stamps["e2"] == pd.Timestamp("2026-10-01T10:00:00Z")


def test_future_tolerance_is_configurable(tables) -> None:
    tables["events"].loc[1, "timestamp"] = "2026-11-01T00:30:00Z"
    strict = NbmConfig.model_validate({"validation": {"future_tolerance_minutes": 10}})
    lenient = NbmConfig.model_validate({"validation": {"future_tolerance_minutes": 60}})
    assert build_dataset(tables, strict, now=NOW)[1].counts()["reason"].tolist() == ["future_timestamp"]
    assert build_dataset(tables, lenient, now=NOW)[1].exit_code == 0


def test_unknown_messages_can_be_kept_but_are_still_reported(tables) -> None:
    tables["events"].loc[0, "message_id"] = "m404"
    keep = NbmConfig.model_validate({"validation": {"keep_unknown_messages": True}})
    dataset, report = build_dataset(tables, keep, now=NOW)
    assert report.counts()["reason"].tolist() == ["unknown_message"]
    assert not report.problems["dropped"].any()
    assert "e1" in set(dataset.events["event_id"])


def test_duplicate_event_ids_are_dropped_and_counted_not_problems(tables, config) -> None:
    events = tables["events"]
    tables["events"] = pd.concat([events, events.iloc[[0, 0, 2]]], ignore_index=True)
    dataset, report = build_dataset(tables, config, now=NOW)
    assert report.duplicates["events"] == 3
    assert report.exit_code == 0
    assert dataset.events["event_id"].is_unique and len(dataset.events) == len(events)


def test_late_rows_are_counted_kept_and_sorted(tables, config) -> None:
    events = tables["events"]
    tables["events"] = pd.concat([events.iloc[[1, 2, 3, 4, 5]], events.iloc[[0]]], ignore_index=True)
    dataset, report = build_dataset(tables, config, now=NOW)
    assert report.late_rows == 1 and report.exit_code == 0
    assert dataset.events["event_id"].tolist() == ["e1", "e2", "e3", "e4", "e5", "e6"]


def test_several_problems_in_one_row_are_all_reported_and_the_row_dropped_once(tables, config) -> None:
    tables["events"].loc[0, ["channel", "propensity"]] = ["fax", "7"]
    _, report = build_dataset(tables, config, now=NOW)
    assert sorted(report.problems["reason"]) == ["bad_propensity", "unknown_channel"]
    assert report.rows_kept["events"] == len(tables["events"]) - 1


@pytest.mark.parametrize(("table", "column"), [("events", "event_type"), ("messages", "channels"),
                                                ("users", "user_id"), ("links", "identifier_a")])
def test_missing_required_column_is_fatal_and_named(tables, config, table, column) -> None:
    tables[table] = tables[table].drop(columns=column)
    with pytest.raises(UnusableInputError, match=f"`{table}`.*`{column}`"):
        build_dataset(tables, config, now=NOW)


def test_every_missing_table_is_named_at_once(tables, config) -> None:
    with pytest.raises(UnusableInputError, match="`events`.*`users`"):
        build_dataset({"messages": tables["messages"]}, config, now=NOW)
    del tables["links"]
    assert build_dataset(tables, config, now=NOW)[1].exit_code == 0  # links are optional


def test_unknown_extra_columns_are_noted_outside_users(tables, config) -> None:
    tables["events"]["campaign"] = "x"
    _, report = build_dataset(tables, config, now=NOW)
    assert any("`campaign`" in note for note in report.notes)
    assert report.exit_code == 0


def test_report_renders_and_serialises(tables, config) -> None:
    import json

    from rich.console import Console

    tables["events"].loc[0, "channel"] = "fax"
    _, report = build_dataset(tables, config, now=NOW)
    console = Console(record=True, width=120)
    report.render(console, max_rows=5)
    text = console.export_text()
    assert "unknown_channel" in text and "'fax'" in text
    data = json.loads(report.to_json())
    assert data["exit_code"] == 1 and data["problems"][0]["key"] == "e1"
    summary = report.summary().set_index("table")
    assert summary.loc["events", "rows_with_problems"] == 1


def test_duplicate_keys_name_the_first_row_and_skip_missing_keys() -> None:
    """Against a naive scan: every later row of a key is a duplicate naming the key's first row."""
    from nbm.validate import validate_decisions

    keys = ["a", "b", "a", "c", "b", "a", None, None, "c"]
    raw = pd.DataFrame({"decision_id": keys, "timestamp": ["2026-10-01T00:00:00Z"] * len(keys),
                        "user_id": ["u"] * len(keys)})
    clean, frames = validate_decisions(raw)
    problems = pd.concat(frames, ignore_index=True)
    dup = problems[problems["reason"] == "duplicate_key"].sort_values("row")
    seen, expected = {}, []
    for row, key in enumerate(keys):
        if key is None:
            continue
        if key in seen:
            expected.append((row, f"second row with this `decision_id`; the first (row {seen[key]}) is kept"))
        else:
            seen[key] = row
    assert list(zip(dup["row"], dup["message"])) == expected
    assert sorted(clean["decision_id"]) == ["a", "b", "c"]
