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
