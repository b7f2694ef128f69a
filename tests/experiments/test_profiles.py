"""``nbm profiles`` on a small seeded simulated world: one row per user, the lifecycle stage of
``nbm.lifecycle``, and the smoothed rates against a hand computation of the shrinkage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.profiles import COLUMNS, build_profiles, default_now
from features.compute import Candidates
from features.pipeline import FeatureStore
from nbm.cli import main
from nbm.config import LIFECYCLE_STAGES, FeatureConfig, NbmConfig
from nbm.dataset import build_dataset
from nbm.lifecycle import stages_at
from nbm.simulate import SimConfig, simulate
from nbm.simulate.manifest import write_world

STRENGTH = 4.0
"""Pinned pseudo-sends of every family of smoothed rates: the hand computation uses the same."""
GLOBAL_PRIOR = {"opens": 0.1, "clicks": 0.02}
"""The fixed priors of the overall rates (features.priors.GLOBAL_PRIOR), restated as the reference's input."""
DAY = pd.Timedelta(days=1).value


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return simulate(SimConfig(n_users=300, n_days=21, seed=9)).tables


@pytest.fixture(scope="module")
def world(tables):
    config = NbmConfig(features=FeatureConfig(prior_strength=STRENGTH))
    dataset, _ = build_dataset(tables, config, now=pd.Timestamp("2027-01-01T00:00:00Z"))
    store = FeatureStore.build(dataset, config)
    now = default_now(dataset)
    profiles = build_profiles(dataset, config, now, lambda *columns: store.featurise(Candidates(*columns)))
    return dataset, config, now, profiles


def test_one_row_per_user_with_the_documented_columns(world) -> None:
    dataset, _, now, profiles = world
    assert tuple(profiles.columns) == COLUMNS
    assert now == dataset.events["timestamp"].max() + pd.Timedelta(1, "ns")     # the data's end, not the clock
    assert profiles["user_id"].is_unique
    assert set(profiles["user_id"]) == set(dataset.users["user_id"])           # all signed up before the end
    assert (profiles["as_of"] == now).all()
    for column in ("engagement_score", "engagement_explicit", "engagement_implicit", "preferred_channel_click_rate",
                   "top_topic_1_click_rate"):
        values = profiles[column].dropna()
        assert len(values) and values.between(0, 1).all(), column
    # the score is the features' mix of its parts
    np.testing.assert_allclose(profiles["engagement_score"],
                               0.3 * profiles["engagement_explicit"] + 0.7 * profiles["engagement_implicit"], atol=1e-6)


def test_stage_is_the_lifecycle_definition(world) -> None:
    dataset, config, now, profiles = world
    ids = profiles["user_id"].to_numpy(dtype=object)
    codes = stages_at(dataset.events, dataset.users, ids, np.full(len(ids), now.value, dtype=np.int64), config.lifecycle)
    expected = np.asarray(LIFECYCLE_STAGES, dtype=object)[codes]
    assert (profiles["lifecycle_stage"].to_numpy(dtype=object) == expected).all()
    assert len(set(expected)) >= 3                                  # the world has several stages to compare


def _shrunk(successes: float, trials: float, prior: float) -> float:
    return (successes + STRENGTH * prior) / (trials + STRENGTH)


def _counts(events: pd.DataFrame, outcome: str) -> tuple[int, int]:
    kinds = events["event_type"]
    return int((kinds == outcome).sum()), int((kinds == "send").sum())


def test_smoothed_rates_of_one_user_match_a_hand_computation(world) -> None:
    dataset, _, now, profiles = world
    events, t = dataset.events, now.value
    stamps = events["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")
    # Population rates count the days before the day of `now`; the user's own counts the 90 days before it.
    before_day = events[stamps < t // DAY * DAY]
    overall = _shrunk(*_counts(before_day, "click"), GLOBAL_PRIOR["clicks"])
    # A user with clicks of their own, so that the shrinkage has something to shrink.
    clicked = events[(events["event_type"] == "click") & (stamps >= t - 90 * DAY)]["user_id"].value_counts()
    user = clicked.index[0]
    row = profiles.set_index("user_id").loc[user]
    mine = events[(events["user_id"] == user) & (stamps >= t - 90 * DAY) & (stamps < t)]

    consent = dataset.users.set_index("user_id").loc[user, "consent"]
    lost = set(events[(events["user_id"] == user) & events["event_type"].isin(["unsubscribe", "bounce"])]["channel"])
    by_channel = {c: _shrunk(*_counts(mine[mine["channel"] == c], "click"),
                             _shrunk(*_counts(before_day[before_day["channel"] == c], "click"), overall))
                  for c in consent if c not in lost}
    best = max(by_channel, key=by_channel.get)
    assert row["preferred_channel"] == best
    assert row["preferred_channel_click_rate"] == pytest.approx(by_channel[best], rel=1e-5)

    topic_of = dataset.messages.set_index("message_id")["topic"]
    pop_topic, my_topic = before_day["message_id"].map(topic_of), mine["message_id"].map(topic_of)
    by_topic = {topic: _shrunk(*_counts(mine[my_topic == topic], "click"),
                               _shrunk(*_counts(before_day[pop_topic == topic], "click"), overall))
                for topic in topic_of.unique()}
    ranked = sorted(by_topic, key=by_topic.get, reverse=True)
    assert by_topic[ranked[0]] > by_topic[ranked[-1]]               # the user's own clicks moved the order
    for k in range(3):
        assert row[f"top_topic_{k + 1}_click_rate"] == pytest.approx(by_topic[ranked[k]], rel=1e-5)
        assert by_topic[row[f"top_topic_{k + 1}"]] == pytest.approx(by_topic[ranked[k]], rel=1e-5)

    last_send = mine[mine["event_type"] == "send"].iloc[-1]
    assert row["last_contact_at"] == last_send["timestamp"] and row["last_contact_channel"] == last_send["channel"]


@pytest.fixture(scope="module")
def data_dir(tables, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profiles-world")
    write_world(tables, out, "parquet")
    return out


def test_the_command_writes_csv_or_parquet_and_refuses_bad_input(data_dir, tmp_path, capsys) -> None:
    csv = tmp_path / "profiles.csv"
    assert main(["profiles", "--data", str(data_dir), "--now", "2026-10-20", "--out", str(csv)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(csv) and "profiles as of 2026-10-20" in err
    written = pd.read_csv(csv)
    assert tuple(written.columns) == COLUMNS and written["user_id"].is_unique
    assert (written["as_of"] == "2026-10-20T00:00:00.000000Z").all()
    parquet = tmp_path / "profiles.parquet"
    assert main(["profiles", "--data", str(data_dir), "--out", str(parquet)]) == 0
    assert tuple(pd.read_parquet(parquet).columns) == COLUMNS
    capsys.readouterr()
    for argv, reason in ((["--out", str(tmp_path / "p.xlsx")], "suffix"),
                         (["--out", str(tmp_path)], "is a directory"),
                         (["--out", str(parquet), "--now", "soon"], "not an ISO-8601 time")):
        assert main(["profiles", "--data", str(data_dir), *argv]) == 2
        err = capsys.readouterr().err
        assert reason in err and "Traceback" not in err
