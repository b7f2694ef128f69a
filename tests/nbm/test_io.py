"""CSV and Parquet give the same dataset; the writer round-trips lists and timestamps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nbm.dataset import load_dataset
from nbm.errors import UnusableInputError
from nbm.io import find_table, read_raw_table, write_table
from nbm.simulate import SimConfig, simulate
from tests.nbm.conftest import NOW


@pytest.fixture(scope="module")
def world_tables() -> dict[str, pd.DataFrame]:
    return simulate(SimConfig(n_users=300, n_days=10, seed=13)).tables


def _write(tables: dict[str, pd.DataFrame], directory: Path, file_format: str) -> Path:
    for name, frame in tables.items():
        write_table(frame, directory, name, file_format)
    return directory


def test_csv_and_parquet_give_the_same_dataset(world_tables, tmp_path: Path, config) -> None:
    from_csv, report_csv = load_dataset(_write(world_tables, tmp_path / "csv", "csv"), config, now=NOW)
    from_parquet, report_parquet = load_dataset(_write(world_tables, tmp_path / "pq", "parquet"), config, now=NOW)
    assert report_csv.exit_code == report_parquet.exit_code == 0
    for name in ("events", "messages", "users", "links"):
        pd.testing.assert_frame_equal(getattr(from_csv, name), getattr(from_parquet, name), check_dtype=True)


def test_the_dataset_equals_the_simulated_tables(world_tables, tmp_path: Path, config) -> None:
    dataset, _ = load_dataset(_write(world_tables, tmp_path, "csv"), config, now=NOW)
    original = world_tables["events"]
    assert dataset.events["event_id"].tolist() == original["event_id"].tolist()
    assert (dataset.events["timestamp"].to_numpy() == original["timestamp"].to_numpy()).all()
    assert dataset.events["source_user_id"].tolist() == original["user_id"].tolist()
    assert dataset.messages["channels"].tolist() == world_tables["messages"]["channels"].tolist()
    pd.testing.assert_series_equal(dataset.messages["end_at"], world_tables["messages"]["end_at"], check_names=False)


def test_csv_lists_are_semicolon_separated(tmp_path: Path) -> None:
    frame = pd.DataFrame({"message_id": ["m1", "m2"], "channels": [["email", "sms"], []]})
    path = write_table(frame, tmp_path, "messages", "csv")
    raw = read_raw_table(path)
    assert raw["channels"].tolist()[0] == "email;sms" and pd.isna(raw["channels"].tolist()[1])


def test_both_formats_present_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text("event_id\n")
    (tmp_path / "events.parquet").write_bytes(b"")
    with pytest.raises(UnusableInputError, match="both"):
        find_table(tmp_path, "events")


def test_unreadable_file_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "events.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UnusableInputError, match="cannot read"):
        read_raw_table(tmp_path / "events.parquet")


def test_a_bad_byte_costs_its_row_not_the_table(world_tables, tmp_path: Path, config) -> None:
    """One byte that is not UTF-8 in events.csv: that row is reported with its line and column, the other
    rows load, and a problem after it keeps its own row number."""
    directory = _write(world_tables, tmp_path, "csv")
    path = directory / "events.csv"
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b",", b",\xff\xfe", 1)                  # data row 4, its second column
    header = lines[0].decode().split(",")
    row = lines[12].decode().split(",")
    row[header.index("event_type")] = "teleport"                        # data row 11: an ordinary problem
    lines[12] = ",".join(row).encode()
    path.write_bytes(b"\n".join(lines))
    dataset, report = load_dataset(directory, config, now=NOW)
    bad = report.problems[report.problems["reason"] == "undecodable_bytes"]
    assert len(bad) == 1
    first = bad.iloc[0]
    assert (first["table"], first["row"], first["column"]) == ("events", 4, header[1])
    assert "line 6 of events.csv" in first["message"] and "\\xff\\xfe" in first["value"]
    teleport = report.problems[(report.problems["table"] == "events") & (report.problems["column"] == "event_type")]
    assert teleport["row"].tolist() == [11]
    assert len(dataset.events) >= len(world_tables["events"]) - 2 - 40       # the rest loads (less attributions)
    assert not dataset.events["event_id"].str.contains("\U000f00ff").any()


def test_an_empty_catalog_or_all_future_events_is_unusable_with_the_reason(world_tables, tmp_path: Path, config,
                                                                          capsys) -> None:
    """`nbm validate` and `nbm train` refuse such data alike (exit 2), naming the table and the reason."""
    from nbm.cli import main

    empty = {**world_tables, "messages": world_tables["messages"].iloc[0:0]}
    directory = _write(empty, tmp_path / "empty", "parquet")
    for command in (["validate", "--data", str(directory)], ["train", "--data", str(directory), "--no-compare"]):
        assert main(command) == 2
        out = capsys.readouterr()
        assert "the messages table" in " ".join((out.out + out.err).split()), command
    future = {**world_tables, "events": world_tables["events"].assign(
        timestamp=world_tables["events"]["timestamp"] + pd.Timedelta(days=4000))}
    directory = _write(future, tmp_path / "future", "parquet")
    assert main(["validate", "--data", str(directory)]) == 2
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "no valid events" in text and "future_timestamp" in text
