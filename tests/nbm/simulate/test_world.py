"""The simulated world: deterministic, in the data contract, and with the features it documents."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.schema import EVENT_TYPES, TABLES
from nbm.simulate import Environment, NothingPolicy, SimConfig, World, simulate


def test_same_seed_same_world_other_seed_other_world() -> None:
    config = SimConfig(n_users=400, n_days=10, seed=5)
    first, second = simulate(config), simulate(config)
    for name in ("events", "messages", "users", "links"):
        pd.testing.assert_frame_equal(first.tables[name], second.tables[name])
    other = simulate(SimConfig(n_users=400, n_days=10, seed=6))
    assert not first.tables["events"].equals(other.tables["events"])


def test_tables_follow_the_data_contract(small_world) -> None:
    for name, table in TABLES.items():
        frame = small_world.tables[name]
        assert set(table.required_columns) <= set(frame.columns), name
        for column in table.required_columns:
            assert frame[column].notna().all(), (name, column)
    events = small_world.tables["events"]
    assert set(events["event_type"]) == set(EVENT_TYPES)
    assert events["event_id"].is_unique
    assert events["timestamp"].is_monotonic_increasing
    config = small_world.world.config
    assert events["timestamp"].min() >= config.period_start - pd.Timedelta(days=1)
    assert events["timestamp"].max() < config.period_end
    sends = events[events["event_type"] == "send"]
    assert sends["decision_id"].notna().all() and sends["decision_id"].is_unique
    assert ((sends["propensity"] > 0) & (sends["propensity"] <= 1)).all()
    converts = events[events["event_type"] == "convert"]
    assert (converts["value"] > 0).all()


def test_sends_respect_consent_and_catalog(small_world) -> None:
    events, users = small_world.tables["events"], small_world.tables["users"]
    messages = small_world.tables["messages"].set_index("message_id")
    sends = events[events["event_type"] == "send"]
    consent = users.set_index("user_id")["consent"]
    assert all(ch in consent[u] for u, ch in zip(sends["user_id"].head(2000), sends["channel"].head(2000)))
    allowed = messages["channels"]
    assert all(ch in allowed[m] for m, ch in zip(sends["message_id"], sends["channel"]))
    start, end = messages.loc[sends["message_id"], "start_at"].to_numpy(), messages.loc[sends["message_id"], "end_at"]
    assert (sends["timestamp"].to_numpy() >= start).all()
    assert ((sends["timestamp"].to_numpy() < end.to_numpy()) | end.isna().to_numpy()).all()


def test_second_identifiers_are_linked_and_used(small_world) -> None:
    events, links = small_world.tables["events"], small_world.tables["links"]
    known = set(small_world.tables["users"]["user_id"])
    aliases = events.loc[~events["user_id"].isin(known), "user_id"]
    assert len(aliases) > 0, "some people act under a second identifier"
    linked = set(links["identifier_a"]) | set(links["identifier_b"])
    assert set(aliases) <= linked
    # Chains: some device ids link on to a cookie id.
    assert links["identifier_a"].str.startswith("dev-").any()
    assert events.loc[events["event_type"] == "send", "user_id"].isin(known).all()


def test_new_messages_appear_during_the_period_and_get_sent(small_world) -> None:
    config = small_world.world.config
    messages = small_world.tables["messages"]
    fresh = messages.loc[messages["start_at"] > config.period_start, "message_id"]
    assert len(fresh) >= 5
    sent = small_world.tables["events"].query("event_type == 'send'")["message_id"]
    assert sent.isin(fresh).any()


def test_every_lifecycle_stage_is_present_and_people_move_between_them() -> None:
    world = World.build(SimConfig(n_users=3000, n_days=60, seed=2))
    env = Environment(world, seed=1)
    first = env.context()
    env.run(NothingPolicy(), days=45)
    later = env.context()
    assert set(np.unique(first.stage)) == {0, 1, 2, 3}
    common, a, b = np.intersect1d(first.users, later.users, return_indices=True)
    moved = first.stage[a] != later.stage[b]
    assert moved.mean() > 0.1
    # Without messages, people only lapse: active → at_risk happens, at_risk → active is rarer.
    lapsed = ((first.stage[a] == 1) & (later.stage[b] == 2)).sum()
    assert lapsed > 50


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="`n_users`"):
        SimConfig(n_users=0)
    with pytest.raises(ValueError, match="`epsilon`"):
        SimConfig(epsilon=1.5)
    with pytest.raises(ValueError, match="`link_share`"):
        SimConfig(link_share=-0.1)


def test_default_period_ends_in_the_past() -> None:
    assert SimConfig(n_days=60).period_end <= pd.Timestamp("2026-11-01", tz="UTC")
    assert SimConfig(start=pd.Timestamp("2025-01-01")).period_start == pd.Timestamp("2025-01-01", tz="UTC")
