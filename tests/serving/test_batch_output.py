"""``nbm recommend``'s outputs (serving/batch_output.py): one JSON-lines file, one Parquet file, a directory of
partitions — the same decisions in each, in the same order."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nbm.errors import UsageError
from serving.batch_output import SCHEMA, SUCCESS, BatchOutput, read_decisions

NOW = pd.Timestamp("2026-10-29T00:00:00Z")

LINES = [
    {"decision_id": "d1", "user_id": "u1", "model_version": "3", "now": "2026-10-29T00:00:00Z",
     "items": [{"message_id": "m1", "channel": "email", "send_at": "2026-10-29T09:00:00Z", "score": 0.25,
                "propensity": 1.0},
               {"message_id": "m2", "channel": "push", "send_at": "2026-10-29T18:00:00Z", "score": 0.125,
                "propensity": 0.5, "propensity_error": 0.01}],
     "suppressed": [{"message_id": "m3", "channel": "sms", "reason": "quiet_hours"}]},
    {"decision_id": "d2", "user_id": "u2", "model_version": "3", "now": "2026-10-29T00:00:00.000000001Z",
     "items": [], "suppressed": [], "reason": "no_consent", "arm": "holdout", "experiment": "spring"},
]


@pytest.mark.parametrize("name, format, partitioned", [
    ("out.jsonl", "jsonl", False), ("out.json", "jsonl", False), ("out.parquet", "parquet", False),
    ("OUT.PARQUET", "parquet", False), ("parts/", "jsonl", True)])
def test_the_format_and_the_layout_follow_the_name(tmp_path, name, format, partitioned) -> None:
    output = BatchOutput(str(tmp_path / name) + ("/" if name.endswith("/") else ""))
    assert (output.format, output.partitioned) == (format, partitioned)


def test_an_existing_directory_takes_partitions_and_format_picks_parquet(tmp_path) -> None:
    output = BatchOutput(tmp_path, "parquet")
    assert output.partitioned and output.format == "parquet"
    with pytest.raises(UsageError, match="--format"):
        BatchOutput(tmp_path / "x.jsonl", "csv")


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_lines_come_back_as_they_were_written_from_a_file_and_from_partitions(tmp_path, format) -> None:
    single = BatchOutput(tmp_path / f"one.{format}")
    single.prepare()
    with single.writer() as writer:
        writer.write(single.encode(LINES[:1]))
        writer.write(single.encode(LINES[1:]))
    assert read_decisions(single.path) == LINES
    parts = BatchOutput(str(tmp_path / "parts") + "/", format)
    parts.prepare()
    assert parts.write_part(7, LINES[1:]) == 1 and parts.write_part(2, LINES[:1]) == 1
    with pytest.raises(UsageError, match=SUCCESS):
        read_decisions(parts.path)                       # not complete yet
    parts.finish(2, 2)
    assert read_decisions(parts.path) == LINES           # in name order, not in the order written
    assert json.loads((parts.path / SUCCESS).read_text()) == {"decisions": 2, "parts": 2, "format": format}
    assert sorted(p.name for p in parts.path.iterdir()) == [SUCCESS, f"part-00002.{format}", f"part-00007.{format}"]


def test_parquet_columns_are_typed(tmp_path) -> None:
    output = BatchOutput(tmp_path / "one.parquet")
    with output.writer() as writer:
        writer.write(output.encode(LINES))
    table = pq.read_table(output.path)
    assert table.schema == SCHEMA
    assert table.column("now").to_pylist()[0] == pd.Timestamp("2026-10-29T00:00:00Z")
    assert table.column("now").to_pylist()[1].value == NOW.value + 1           # to the nanosecond
    assert table.column("reason").to_pylist() == [None, "no_consent"]


def test_no_decisions_still_make_a_readable_table(tmp_path) -> None:
    output = BatchOutput(tmp_path / "none.parquet")
    with output.writer():
        pass
    assert pq.read_table(output.path).schema == SCHEMA and read_decisions(output.path) == []


def test_a_new_run_removes_the_last_runs_partitions_and_nothing_else(tmp_path) -> None:
    directory = tmp_path / "parts"
    directory.mkdir()
    for name in ("part-00000.jsonl", "part-00009.parquet", SUCCESS, "notes.txt", "part-00001.csv"):
        (directory / name).write_text("old")
    BatchOutput(directory).prepare()
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt", "part-00001.csv"]


def test_part_files_that_no_complete_run_wrote_are_refused_not_removed(tmp_path) -> None:
    """`--out DATA/events/` must not delete a data directory's event parts (they have no _SUCCESS)."""
    events = tmp_path / "data" / "events"
    events.mkdir(parents=True)
    (events / "part-00000.parquet").write_text("someone's events")
    with pytest.raises(UsageError, match="no _SUCCESS"):
        BatchOutput(str(events) + "/").prepare()
    assert (events / "part-00000.parquet").read_text() == "someone's events"


def test_a_file_name_and_a_format_that_disagree_are_refused(tmp_path) -> None:
    with pytest.raises(UsageError, match="names a jsonl file but `--format` is parquet"):
        BatchOutput(tmp_path / "x.jsonl", "parquet")
    with pytest.raises(UsageError, match="names a parquet file"):
        BatchOutput(tmp_path / "x.parquet", "jsonl")
    assert BatchOutput(tmp_path / "decisions.out", "parquet").format == "parquet"     # a name that says nothing


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_run_that_fails_leaves_the_earlier_file_and_no_partial_one(tmp_path, format) -> None:
    output = BatchOutput(tmp_path / f"one.{format}")
    with output.writer() as writer:
        writer.write(output.encode(LINES))
    with pytest.raises(ZeroDivisionError):
        with output.writer() as writer:
            writer.write(output.encode(LINES[:1]))
            1 / 0
    assert read_decisions(output.path) == LINES                  # the earlier run's, whole
    assert [p.name for p in tmp_path.iterdir()] == [f"one.{format}"]     # no temporary left


def test_a_worker_that_does_not_see_the_directory_says_so(tmp_path) -> None:
    from nbm.errors import UnusableInputError

    output = BatchOutput(str(tmp_path / "elsewhere") + "/")          # prepared on another machine: absent here
    with pytest.raises(UnusableInputError, match="storage they all share"):
        output.write_part(0, LINES)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        BatchOutput(str(tmp_path / "file") + "/").prepare()


def test_recommend_writes_the_same_decisions_in_every_output(served_world, tmp_path) -> None:
    """In-process: the single JSON-lines file, the Parquet file and the partitions (one per 20,000-user chunk; three
    here, with the chunk made smaller) hold the same decisions in the same order."""
    import serving.batch_scoring as batch
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from serving.registry import load_model

    data, home = served_world
    os.environ["NBM_HOME"] = str(home)
    config = load_config()
    dataset, _ = load_dataset(data, config)
    model = load_model("models:/nbm-ranker@champion", config)
    users = dataset.users["user_id"].to_numpy(dtype=object)[:250]
    run = lambda out: batch.recommend_all(dataset, config, model.artifact, model.version, NOW, out,  # noqa: E731
                                          users=users)
    summary = run(tmp_path / "one.jsonl")
    expected = read_decisions(tmp_path / "one.jsonl")
    assert [line["user_id"] for line in expected] == list(users) and summary.decisions == 250
    assert summary.with_items > 0
    assert run(tmp_path / "one.parquet") == summary
    assert read_decisions(tmp_path / "one.parquet") == expected
    chunk, batch.CHUNK = batch.CHUNK, 100
    try:
        for format in ("jsonl", "parquet"):
            assert run(BatchOutput(str(tmp_path / format) + "/", format)) == summary
            assert sorted(p.name for p in (tmp_path / format).iterdir()) == \
                [SUCCESS] + [f"part-{i:05d}.{format}" for i in range(3)]
            assert read_decisions(tmp_path / format) == expected
    finally:
        batch.CHUNK = chunk
    assert np.isfinite([i["score"] for line in expected for i in line["items"]]).all()
