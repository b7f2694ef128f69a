"""``nbm validate`` on a data directory whose events are parts (``events/*.parquet``): every part validated (here
one at a time, or by a LocalCluster's workers), each part's rows and problems reported under ``events/PART`` with
the row in that part, the good rows kept; a user in two parts, or no valid event at all, is unusable (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nbm.cli import main

NOW = "2026-11-02T00:00:00Z"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("validate-parts") / "world"
    assert main(["simulate", "--out", str(data), "--users", "300", "--days", "14", "--seed", "3"]) == 0
    return data


def _parted(data: Path, parted: Path, corrupt=None) -> tuple[Path, list[pd.DataFrame]]:
    """``data`` with its events in 2 parts by person (``corrupt(parts)`` may edit them before they are written)."""
    from features.pipeline import partition_of
    from nbm.config import load_config
    from nbm.dataset import load_dataset

    dataset, _ = load_dataset(data, load_config(), now=pd.Timestamp(NOW))
    events = pd.read_parquet(data / "events.parquet")
    of = partition_of(dataset.identity.apply(events["user_id"].astype(str)), 2)
    parts = [events[of == i].reset_index(drop=True) for i in range(2)]
    if corrupt is not None:
        parts = corrupt(parts)
    (parted / "events").mkdir(parents=True)
    for i, part in enumerate(parts):
        part.to_parquet(parted / "events" / f"part-{i:05d}.parquet", index=False)
    for name in ("messages", "users", "links", "decisions"):
        if (data / f"{name}.parquet").exists():
            pd.read_parquet(data / f"{name}.parquet").to_parquet(parted / f"{name}.parquet", index=False)
    return parted, parts


def _report(args: list[str], out: Path) -> tuple[int, dict]:
    code = main(["validate", *args, "--now", NOW, "--json", str(out)])
    return code, json.loads(out.read_text()) if out.exists() else {}


def _bad_rows(parts: list[pd.DataFrame]) -> list[pd.DataFrame]:
    second = parts[1].copy()
    second.loc[3, "event_type"] = "teleport"                 # unknown event type: dropped
    second.loc[7, "timestamp"] = pd.Timestamp("2030-01-01", tz="UTC")   # in the future: dropped
    return [parts[0], second]


def test_each_parts_problems_are_named_with_their_part_and_row_and_the_good_rows_are_kept(world, tmp_path,
                                                                                          monkeypatch) -> None:
    parted, parts = _parted(world, tmp_path / "parted", _bad_rows)
    code, report = _report(["--data", str(parted)], tmp_path / "report.json")
    assert code == 1                                             # problems found, the rest usable
    second = "events/part-00001.parquet"
    problems = {(p["table"], p["row"], p["column"]) for p in report["problems"]}
    assert problems == {(second, 3, "event_type"), (second, 7, "timestamp")}
    summary = {row["table"]: row for row in report["summary"]}
    assert "events" not in summary
    assert summary["events/part-00000.parquet"]["rows_read"] == len(parts[0])
    assert summary["events/part-00000.parquet"]["rows_kept"] == len(parts[0])
    assert (summary[second]["rows_read"], summary[second]["rows_kept"]) == (len(parts[1]), len(parts[1]) - 2)
    # The in-memory validation of the same events counts the same (the late rows and the linked ids too).
    _, whole = _report(["--data", str(world)], tmp_path / "whole.json")
    assert sum(r["rows_read"] for t, r in summary.items() if t.startswith("events/")) == \
        {row["table"]: row for row in whole["summary"]}["events"]["rows_read"]
    assert report["info"] == whole["info"]
    # On a LocalCluster's workers: the same report.
    config = tmp_path / "nbm.toml"
    config.write_text('dask_scheduler = "local"\n')
    monkeypatch.setenv("NBM_CONFIG", str(config))
    code, on_cluster = _report(["--data", str(parted)], tmp_path / "cluster.json")
    assert code == 1 and on_cluster == report


def test_a_user_in_two_parts_or_no_valid_event_is_unusable(world, tmp_path, capsys) -> None:
    def split_a_user(parts):
        user = parts[0]["user_id"].iloc[0]
        moved = parts[0][parts[0]["user_id"] == user].iloc[:1]
        return [parts[0].drop(index=moved.index), pd.concat([parts[1], moved], ignore_index=True)]

    parted, _ = _parted(world, tmp_path / "split", split_a_user)
    assert main(["validate", "--data", str(parted), "--now", NOW]) == 2
    err = capsys.readouterr().err
    assert "more than one part" in err and "part-00000.parquet" in err and "part-00001.parquet" in err

    def nothing_valid(parts):
        return [p.assign(event_type="teleport") for p in parts]

    parted, _ = _parted(world, tmp_path / "invalid", nothing_valid)
    code, report = _report(["--data", str(parted)], tmp_path / "invalid.json")
    assert code == 2 and "no valid events" in capsys.readouterr().out
    assert {p["reason"] for p in report["problems"]} == {"unknown_event_type"}
