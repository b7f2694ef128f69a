"""``nbm recommend`` on a Dask cluster (issue 42, ``dask_scheduler``): the users' partitions decided by a
LocalCluster of 2 worker processes give the decisions of the one in-process pass, user for user."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from nbm.cluster import dask_client
from serving.batch_output import BatchOutput, read_decisions

pytestmark = pytest.mark.slow

NOW = pd.Timestamp("2026-10-29T00:00:00Z")


@pytest.fixture(scope="module")
def cluster():
    with dask_client("local", workers=2, dashboard=False) as c:
        yield c


def _lines(path) -> dict[str, dict]:
    return {r["user_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_recommend_on_a_local_cluster_decides_as_one_pass(served_world, cluster, tmp_path) -> None:
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from serving.batch_scoring import recommend_all
    from serving.registry import load_model

    data, home = served_world
    os.environ["NBM_HOME"] = str(home)
    config = load_config()
    dataset, _ = load_dataset(data, config)
    model = load_model("models:/nbm-ranker@champion", config)
    one, split = tmp_path / "one.jsonl", tmp_path / "cluster.jsonl"
    a = recommend_all(dataset, config, model.artifact, model.version, NOW, one)
    b = recommend_all(dataset, config, model.artifact, model.version, NOW, split, client=cluster)
    left, right = _lines(one), _lines(split)
    assert len(right) == len(split.read_text().splitlines()) == len(dataset.users)
    assert left.keys() == right.keys()
    same = ties = 0
    for user, line in left.items():
        other = right[user]
        if any(i["propensity"] < 1 for i in line["items"] + other["items"]):
            ties += 1       # an exact tie: greedy draws between the tied pairs, each partition its own stream
            continue
        assert line == other, user
        same += 1
    assert same >= 0.95 * len(left) and ties <= 0.05 * len(left)
    assert (a.decisions, a.with_items) == (b.decisions, b.with_items)
    assert sum(a.reasons.values()) == sum(b.reasons.values())
    # The same run with a directory of Parquet partitions: each written by its worker, the same lines in order.
    c = recommend_all(dataset, config, model.artifact, model.version, NOW, BatchOutput(tmp_path / "parts", "parquet", partitioned=True),
                      client=cluster)
    assert c == b
    assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == 4      # 2 per worker
    assert read_decisions(tmp_path / "parts") == read_decisions(split)


def test_recommend_on_event_parts_decides_as_one_pass(served_world, cluster, tmp_path) -> None:
    """Out of core (features/parts.py): the data directory's events as 3 Parquet parts (by user), each read by the
    worker deciding its users; the decisions are the in-process pass's, user for user (exact ties aside)."""
    from features.parts import Tables
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from serving.batch_scoring import recommend_all, recommend_parts
    from serving.registry import load_model

    data, home = served_world
    os.environ["NBM_HOME"] = str(home)
    config = load_config()
    dataset, _ = load_dataset(data, config, now=NOW + pd.Timedelta(days=30))
    model = load_model("models:/nbm-ranker@champion", config)
    parted = _parted(data, dataset, tmp_path / "parted")
    one, split = tmp_path / "one.jsonl", tmp_path / "parts.jsonl"
    a = recommend_all(dataset, config, model.artifact, model.version, NOW, one)
    tables = Tables.read(parted, config, now=NOW + pd.Timedelta(days=30))
    b = recommend_parts(cluster, parted, tables, config, model.artifact, model.version, NOW, split)
    left, right = _lines(one), _lines(split)
    assert left.keys() == right.keys() and len(right) == len(dataset.users)
    same = ties = 0
    for user, line in left.items():
        other = right[user]
        if any(i["propensity"] < 1 for i in line["items"] + other["items"]):
            ties += 1
            continue
        assert line == other, user
        same += 1
    assert same >= 0.95 * len(left) and ties <= 0.05 * len(left)
    assert (a.decisions, a.with_items, a.items) == (b.decisions, b.with_items, b.items)
    # One JSON-lines partition per part, written by the worker that read it: the one file's lines, in order.
    c = recommend_parts(cluster, parted, tables, config, model.artifact, model.version, NOW,
                        BatchOutput(str(tmp_path / "by-part") + "/"))
    assert c == b
    assert sorted(p.name for p in (tmp_path / "by-part").iterdir()) == \
        ["_SUCCESS", "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    assert "".join(p.read_text() for p in sorted((tmp_path / "by-part").glob("part-*"))) == split.read_text()


def _parted(data, dataset, parted):
    """The data directory ``data`` with its events as 3 Parquet parts, by a hash of the canonical user."""
    from features.pipeline import partition_of

    (parted / "events").mkdir(parents=True)
    events = pd.read_parquet(data / "events.parquet")
    of = partition_of(dataset.identity.apply(events["user_id"].astype(str)), 3)
    for i in range(3):
        events[of == i].to_parquet(parted / "events" / f"part-{i:05d}.parquet", index=False)
    for name in ("messages", "users", "links"):
        if (data / f"{name}.parquet").exists():
            pd.read_parquet(data / f"{name}.parquet").to_parquet(parted / f"{name}.parquet", index=False)
    return parted


def test_nbm_recommend_on_event_parts_needs_a_cluster_and_runs_on_one(served_world, tmp_path, monkeypatch,
                                                                     capsys) -> None:
    from nbm.cli import main
    from nbm.config import load_config
    from nbm.dataset import load_dataset

    data, home = served_world
    monkeypatch.setenv("NBM_HOME", str(home))
    dataset, _ = load_dataset(data, load_config(), now=NOW + pd.Timedelta(days=30))
    parted = _parted(data, dataset, tmp_path / "parted")
    out = tmp_path / "decisions.jsonl"
    args = ["recommend", "--data", str(parted), "--now", NOW.isoformat(), "--out", str(out)]
    assert main(args) == 2
    assert "dask_scheduler" in capsys.readouterr().err
    config = tmp_path / "nbm.toml"
    config.write_text('dask_scheduler = "local"\n')
    monkeypatch.setenv("NBM_CONFIG", str(config))
    assert main(args) == 0
    assert len(_lines(out)) == len(dataset.users)
    parquet = tmp_path / "decisions"
    assert main(args[:-1] + [f"{parquet}/", "--format", "parquet"]) == 0
    printed = capsys.readouterr()
    assert f"Written to {parquet}/ (parquet partitions)" in printed.out.replace("\n", "")
    assert "Dask: 2 worker(s) at tcp://127.0.0.1:" in printed.err and "dashboard" in printed.err    # progress: Dask's
    assert read_decisions(parquet) == read_decisions(out)
    late = ["recommend", "--data", str(parted), "--now", "2026-12-20T00:00:00Z", "--out", str(tmp_path / "late.jsonl")]
    assert main(late) == 0
    assert "days after the data's last event" in capsys.readouterr().err       # as for one events file
