"""Out of core (issue 42, features/parts.py): a log whose events are Parquet parts, each holding every event of its
users, read part by part on a LocalCluster of 2 worker processes. The shared tables equal those built from the
whole log in memory (rates, time origin, smoothing strengths — learned on the same sample of users), and the
parts' training sets, concatenated, are the in-memory build's row for row; a user in two parts is refused."""

from __future__ import annotations

import pandas as pd
import pytest

from features.parts import Tables, read_training_set, shared_of_parts, training_set_of_parts
from features.pipeline import Globals, build_training_set, partition_of
from nbm.cluster import dask_client
from nbm.config import load_config
from nbm.dataset import build_dataset
from nbm.errors import UnusableInputError
from nbm.simulate import SimConfig, simulate

pytestmark = pytest.mark.slow

NOW = pd.Timestamp("2026-11-01T00:00:00Z")
PARTS = 3


@pytest.fixture(scope="module")
def client():
    with dask_client("local", workers=2, dashboard=False) as c:
        yield c


def write_parts(tables: dict[str, pd.DataFrame], root, dataset, parts: int = PARTS):
    """``tables`` as a data directory whose events are ``parts`` Parquet files, by a hash of the canonical user."""
    (root / "events").mkdir(parents=True)
    events = tables["events"]
    of = partition_of(dataset.identity.apply(events["user_id"].astype(str)), parts)
    for i in range(parts):
        events[of == i].to_parquet(root / "events" / f"part-{i:05d}.parquet", index=False)
    for name in ("messages", "users", "links", "decisions"):
        if tables.get(name) is not None:
            tables[name].to_parquet(root / f"{name}.parquet", index=False)
    return root


@pytest.fixture(scope="module", params=[(), ("country",)], ids=["no-segments", "segments"])
def world(request, tmp_path_factory):
    config = load_config(environ={})
    config = config.model_copy(update={"features": config.features.model_copy(update={"segment_by": request.param})})
    tables = simulate(SimConfig(n_users=700, n_days=21, seed=37)).tables
    dataset, report = build_dataset(tables, config, now=NOW)
    assert report.exit_code == 0
    root = write_parts(tables, tmp_path_factory.mktemp("parts"), dataset)
    return root, dataset, config


def _same_rates(a, b) -> None:
    order = ["day", "message", "channel"]
    pd.testing.assert_frame_equal(a.daily.sort_values(order).reset_index(drop=True),
                                  b.daily.sort_values(order).reset_index(drop=True))
    for name in ("segment_channel", "segment_topic"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert (x.packed == y.packed).all() and all((x.cumulative[k] == y.cumulative[k]).all() for k in x.cumulative)


def test_the_shared_tables_of_the_parts_are_those_of_the_whole_log(world, client) -> None:
    root, dataset, config = world
    tables = Tables.read(root, config, now=NOW)
    plan = shared_of_parts(client, root, tables, config)
    whole = Globals.build(dataset, config)
    assert plan.shared.base == whole.base
    assert plan.shared.strengths.as_dict() == whole.strengths.as_dict()
    assert plan.shared.strengths.learned == whole.strengths.learned and whole.strengths.learned
    assert list(plan.shared.vocabulary.messages) == list(whole.vocabulary.messages)
    _same_rates(plan.shared.rates, whole.rates)
    assert plan.rows_kept == len(dataset.events) and sum(len(u) for u in plan.users) == dataset.events["user_id"].nunique()
    if config.features.segment_by:
        assert plan.shared.rates.segment_topic is not None


def test_the_strengths_are_learned_on_the_same_sample_of_users(world, client, monkeypatch) -> None:
    """Past ``MAX_FIT_USERS`` users the strengths are learned on those with the smallest hashes: gathered from the
    parts, the same users as in memory (here 150 of ~700)."""
    import features.priors

    root, dataset, config = world
    monkeypatch.setattr(features.priors, "MAX_FIT_USERS", 150)
    monkeypatch.setattr("features.parts.MAX_FIT_USERS", 150)
    tables = Tables.read(root, config, now=NOW)
    plan = shared_of_parts(client, root, tables, config)
    whole = Globals.build(dataset, config)
    assert plan.shared.strengths.as_dict() == whole.strengths.as_dict()
    monkeypatch.setattr(features.priors, "MAX_FIT_USERS", 20_000)
    assert Globals.build(dataset, config).strengths.as_dict() != whole.strengths.as_dict()     # the sample mattered


def test_the_parts_training_sets_are_the_whole_logs(world, client, tmp_path) -> None:
    root, dataset, config = world
    tables = Tables.read(root, config, now=NOW)
    plan = shared_of_parts(client, root, tables, config)
    files = training_set_of_parts(client, plan, tables, config, tmp_path / "training-set")
    assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(PARTS)]
    pd.testing.assert_frame_equal(read_training_set(files), build_training_set(dataset, config), check_dtype=False,
                                  check_categorical=False)


def test_a_user_in_two_parts_is_refused_naming_both(world, client, tmp_path) -> None:
    root, dataset, config = world
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    first = pd.read_parquet(copy / "events" / "part-00000.parquet")
    user = first["user_id"].iloc[0]
    second = pd.read_parquet(copy / "events" / "part-00001.parquet")
    pd.concat([second, first[first["user_id"] == user].assign(event_id=lambda f: f["event_id"] + "-x")]).to_parquet(
        copy / "events" / "part-00001.parquet", index=False)
    with pytest.raises(UnusableInputError, match=f"{user}.*part-00000.parquet, part-00001.parquet"):
        shared_of_parts(client, copy, Tables.read(copy, config, now=NOW), config)


def test_the_parts_snapshot_is_the_whole_logs(world, client, tmp_path) -> None:
    """The online snapshot (every user's features as of one instant), each part's users by a worker: the
    in-memory snapshot's rows; and the in-memory dataset's snapshot built partition by partition on the cluster
    too (features.pipeline.build_snapshot)."""
    from features.parts import snapshot_of_parts
    from features.pipeline import FeatureStore, build_snapshot

    root, dataset, config = world
    tables = Tables.read(root, config, now=NOW)
    plan = shared_of_parts(client, root, tables, config)
    at = NOW - pd.Timedelta(days=2)
    whole = FeatureStore.build(dataset, config).snapshot(at)
    files = snapshot_of_parts(client, plan, tables, config, at, tmp_path / "snapshot")
    parted = pd.concat([pd.read_parquet(f) for f in files]).set_index("user_id").loc[whole.index]
    pd.testing.assert_frame_equal(parted, whole, check_dtype=False, check_categorical=False, check_names=False)
    pd.testing.assert_frame_equal(build_snapshot(dataset, config, at, client=client), whole)
