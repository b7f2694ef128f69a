"""Live users (serving/live.py, features/live.py): features that follow the feedback stream, facts posted to
``/users`` or carried by a request's ``context``, a never-seen user decided from the population.

The reference is offline featurisation: a store built from the data directory *plus* the posted events and
facts (with the snapshot's global tables, as the service keeps them until the next model), featurising the
same candidates. Two engines on one state file play two workers: one takes the posts, the other decides.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.declarations import FEATURE_NAMES

NOW = pd.Timestamp("2026-10-29T00:00:00Z")


def _config(tmp_path, refresh: float, served_world, monkeypatch):
    from nbm.config import load_config

    monkeypatch.setenv("NBM_HOME", str(served_world[1]))
    config = load_config().model_copy(update={"state_url": f"sqlite:///{tmp_path / 'live.db'}"})
    return config.model_copy(update={"service": config.service.model_copy(update={"live_refresh_seconds": refresh})})


def _engine(served_world, config, monkeypatch):
    from serving.engine import Engine, EngineSettings

    data, home = served_world
    monkeypatch.setenv("NBM_HOME", str(home))
    return Engine(config, EngineSettings(data=data, explorer="greedy"))


def _events(user: str, message: str, topic_message: str) -> list[dict]:
    """One of every event type feedback may carry, before NOW (a send, its open, click and conversion; a visit;
    an unsubscribe from push; another message sent and opened)."""
    at = lambda hours: (NOW - pd.Timedelta(hours=hours)).isoformat()      # noqa: E731
    return [
        {"event_id": "L1", "timestamp": at(30), "user_id": user, "event_type": "send", "message_id": message,
         "channel": "email"},
        {"event_id": "L2", "timestamp": at(29), "user_id": user, "event_type": "open", "message_id": message,
         "channel": "email"},
        {"event_id": "L3", "timestamp": at(28.5), "user_id": user, "event_type": "click", "message_id": message,
         "channel": "email"},
        {"event_id": "L4", "timestamp": at(28), "user_id": user, "event_type": "convert", "message_id": message,
         "value": 42.0},
        {"event_id": "L5", "timestamp": at(7), "user_id": user, "event_type": "visit"},
        {"event_id": "L6", "timestamp": at(5), "user_id": user, "event_type": "send", "message_id": topic_message,
         "channel": "sms"},
        {"event_id": "L7", "timestamp": at(4), "user_id": user, "event_type": "open", "message_id": topic_message,
         "channel": "sms"},
        {"event_id": "L8", "timestamp": at(3), "user_id": user, "event_type": "unsubscribe", "channel": "push"},
    ]


def _offline(engine, events: list[dict], facts: dict[str, dict]):
    """A store of the data directory plus ``events`` and ``facts``, with the engine's global tables."""
    from features.live import live_events_frame, live_users_frame
    from features.pipeline import FeatureStore

    dataset = engine.dataset
    extra = pd.DataFrame([{**{c: None for c in ("message_id", "channel", "decision_id")}, "propensity": np.nan,
                           "value": np.nan, **e} for e in events])
    extra["timestamp"] = pd.to_datetime(extra["timestamp"], utc=True)
    users = dataset.users
    changed = live_users_frame(users[users["user_id"].isin(list(facts))], list(facts), facts)
    users = pd.concat([users[~users["user_id"].isin(list(facts))], changed], ignore_index=True)
    return FeatureStore.build(replace(dataset, events=live_events_frame(dataset.events, extra), users=users),
                              engine.config, engine.store.globals)


def _same(a: pd.Series, b: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(a.dtype) and pd.api.types.is_numeric_dtype(b.dtype):
        return np.array_equal(a.to_numpy(float), b.to_numpy(float), equal_nan=True)
    text = lambda s: ["<missing>" if pd.isna(v) else str(v) for v in s.astype(object)]      # noqa: E731
    return text(a) == text(b)


@pytest.fixture(scope="module")
def live_features(served_world, tmp_path_factory):
    """(the deciding worker's feature rows, the offline rows) for one user after a post of every event type
    and of new facts to the other worker."""
    from decision.candidates import expand

    monkeypatch = pytest.MonkeyPatch()
    tmp_path = tmp_path_factory.mktemp("live")
    config = _config(tmp_path, 0.0, served_world, monkeypatch)
    taking, deciding = _engine(served_world, config, monkeypatch), _engine(served_world, config, monkeypatch)
    users = taking.dataset.users
    user = str(users.loc[users["consent"].map(lambda c: {"email", "sms", "push"} <= set(c)), "user_id"].iloc[3])
    messages = taking.dataset.messages
    sms = messages[messages["channels"].map(lambda c: "sms" in c)]["message_id"].astype(str).tolist()
    email = messages[messages["channels"].map(lambda c: "email" in c)]["message_id"].astype(str).tolist()
    events = _events(user, email[0], sms[-1])
    assert taking.feedback(events) == {"accepted": len(events), "duplicates": 0, "rejected": []}
    numeric = [c for c in users.columns if pd.api.types.is_numeric_dtype(users[c].dtype) and c != "signup_at"]
    text = [c for c in users.columns if c not in numeric and c not in ("user_id", "signup_at", "timezone", "consent")]
    facts = {"timezone": "Asia/Tokyo", "consent": ["email", "sms", "push"],
             "attributes": {numeric[0]: 12345.0, text[0]: "something new"}}
    assert taking.upsert_users([{"user_id": user, **facts}]) == {"accepted": 1, "rejected": []}
    before = deciding.feature_rows(user, NOW)
    assert deciding.live_users.refresh() == 1
    served = deciding.feature_rows(user, NOW)
    offline = _offline(deciding, events, {user: facts})
    candidates = expand(offline, user, NOW)
    reference = offline.featurise(candidates)
    yield before, served, reference, candidates
    monkeypatch.undo()


def test_the_live_candidates_are_the_offline_ones(live_features) -> None:
    _, served, _, candidates = live_features
    assert len(served) == len(candidates.message_id) > 0
    assert served["candidate_message_id"].tolist() == candidates.message_id.tolist()
    assert served["candidate_channel"].tolist() == candidates.channel.tolist()
    assert served["candidate_send_at"].tolist() == candidates.send_at.tolist()
    assert "push" not in set(served["candidate_channel"])          # unsubscribed by feedback


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_each_feature_after_feedback_equals_offline_featurisation(live_features, feature) -> None:
    _, served, reference, _ = live_features
    assert _same(served[feature].reset_index(drop=True), reference[feature].reset_index(drop=True)), feature


def test_the_events_changed_the_features(live_features) -> None:
    """The table test above could pass on features nothing changed: the user's own must have moved (the same
    for every candidate of the user, so the first row of each says it)."""
    before, served, _, _ = live_features
    for feature in ("user_days_since_click", "user_days_since_open", "user_days_since_visit",
                    "user_days_since_convert"):
        assert not _same(before[feature].iloc[:1], served[feature].iloc[:1]), feature
    assert served["user_days_since_click"].iloc[0] == pytest.approx(28.5 / 24, abs=1e-3)


def test_the_attributes_posted_are_features(live_features) -> None:
    _, served, reference, _ = live_features
    attributes = [c for c in served.columns if c.startswith("attr_")]
    assert attributes
    for name in attributes:
        assert _same(served[name], reference[name]), name


def test_a_change_reaches_another_worker_within_a_second(served_world, tmp_path, monkeypatch) -> None:
    """Two workers with their refresh threads on: a consent posted to one is what the other decides by
    within 1 s (the contract), and a never-seen user with consent in a request's context is decided at once."""
    config = _config(tmp_path, 0.25, served_world, monkeypatch)
    taking, deciding = _engine(served_world, config, monkeypatch), _engine(served_world, config, monkeypatch)
    user = "live-newcomer-1"
    assert deciding.recommend(user, now=NOW)["reason"] == "no_eligible_candidate"
    started = time.monotonic()
    assert taking.upsert_users([{"user_id": user, "consent": ["email"], "timezone": "Europe/Paris"}])["accepted"] == 1
    while deciding.live_users.of(user) is None:
        assert time.monotonic() - started < 1.0, "the other worker did not see the user within 1 s"
        time.sleep(0.01)
    answer = deciding.recommend(user, now=NOW)
    assert answer["items"] and {i["channel"] for i in answer["items"]} == {"email"}
    # A cold start from the request's own context: decided from the population, and the facts stored.
    other = "live-newcomer-2"
    answer = deciding.recommend_many([{"user_id": other, "now": NOW, "context": {"consent": ["sms"]}}])[0]
    assert answer["items"] and {i["channel"] for i in answer["items"]} == {"sms"}
    assert taking.state.user_facts([other]) == {other: {"consent": ["sms"]}}


def test_a_context_that_withdraws_consent_is_obeyed_by_this_decision(served_world, tmp_path, monkeypatch) -> None:
    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    users = engine.dataset.users
    user = str(users.loc[users["consent"].map(lambda c: {"email", "sms"} <= set(c)), "user_id"].iloc[0])
    answer = engine.recommend_many([{"user_id": user, "now": NOW, "k": 3, "context": {"consent": ["sms"]}}])[0]
    assert {i["channel"] for i in answer["items"]} <= {"sms"}
    # The same facts again change nothing: nothing more is stored.
    seq, _ = engine.state.changes_since(0)
    engine.recommend_many([{"user_id": user, "now": NOW, "context": {"consent": ["sms"]}}])
    assert engine.state.changes_since(0)[0] == seq


USER_ROWS = [
    ({"consent": ["email"]}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": "a\u202eb"}, "user_id"),
    ({"user_id": "u", "consent": ["fax"]}, "consent"),
    ({"user_id": "u", "consent": "email"}, "consent"),
    ({"user_id": "u", "timezone": "Mars/Olympus"}, "timezone"),
    ({"user_id": "u", "signup_at": 0}, "signup_at"),
    ({"user_id": "u", "signup_at": "9999-01-01T00:00:00Z"}, "signup_at"),
    ({"user_id": "u", "attributes": {"consent": "x"}}, "attributes"),
    ({"user_id": "u", "attributes": {"x": [1, 2]}}, "attributes"),
    ({"user_id": "u", "attributes": {"x": float("nan")}}, "attributes"),
    ({"user_id": "u", "colour": "red"}, "colour"),
    ({"user_id": "u", "links": "device-1"}, "links"),
    ({"user_id": "u", "links": ["dev\u0000ice"]}, "links"),
    ("not an object", "user"),
]


def test_users_rows_are_checked_one_by_one(served_world, tmp_path, monkeypatch) -> None:
    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    good = {"user_id": "fine-1", "consent": ["email", "sms"], "timezone": "Europe/Paris",
            "signup_at": "2026-10-01T00:00:00Z", "attributes": {"country": "FR", "loyalty_points": 3}}
    answer = engine.upsert_users([good, *(row for row, _ in USER_ROWS)])
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == list(range(1, len(USER_ROWS) + 1))
    for rejected, (_, field) in zip(answer["rejected"], USER_ROWS):
        assert rejected["error"].startswith(f"`{field}"), rejected
    stored = engine.state.user_facts(["fine-1"])["fine-1"]
    assert stored == {"consent": ["email", "sms"], "timezone": "Europe/Paris",
                      "signup_at": pd.Timestamp("2026-10-01T00:00:00Z").value,
                      "attributes": {"country": "FR", "loyalty_points": 3.0}}
    # Attributes merge name by name; other facts are replaced only when given.
    engine.upsert_users([{"user_id": "fine-1", "attributes": {"country": "DE"}}])
    assert engine.state.user_facts(["fine-1"])["fine-1"]["attributes"] == {"country": "DE", "loyalty_points": 3.0}
    assert engine.state.user_facts(["fine-1"])["fine-1"]["consent"] == ["email", "sms"]


def test_the_users_route_and_a_context_over_http(client) -> None:
    r = client.post("/users", json={"users": [{"user_id": "http-user-1", "consent": ["email"]},
                                              {"user_id": "http-user-2", "timezone": "Nowhere/Land"}]})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["index"] == 1
    r = client.post("/recommend", json={"user_id": "http-user-3", "now": "2026-11-01T00:00:00Z",
                                        "context": {"consent": ["push"], "timezone": "Asia/Tokyo"}})
    assert r.status_code == 200, r.text
    assert {i["channel"] for i in r.json()["items"]} == {"push"}
    r = client.post("/recommend", json={"user_id": "u1", "context": {"consent": ["fax"]}})
    assert r.status_code == 400 and r.json()["field"] == "context.consent"
    r = client.post("/recommend_batch", json={"requests": [{"user_id": "u1", "context": {"timezone": "X/Y"}}]})
    assert r.status_code == 400 and "timezone" in r.json()["field"]
    r = client.post("/users", json={"users": []})
    assert r.status_code == 400


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_export_log_writes_the_users_the_next_training_reads(served_world, tmp_path, monkeypatch, file_format) -> None:
    """The facts told to the service go out as a users table: merged into the data directory's (--data), it
    replaces that table and nbm's loader reads every user from it, the told facts included."""
    import shutil

    from nbm.dataset import load_dataset
    from serving.export import export_log

    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    users = engine.dataset.users
    known = str(users["user_id"].iloc[5])
    numeric = next(c for c in users.columns if pd.api.types.is_numeric_dtype(users[c].dtype) and c != "signup_at")
    assert engine.upsert_users([
        {"user_id": known, "timezone": "Asia/Tokyo", "attributes": {numeric: 77.0, "tier": "gold"}},
        {"user_id": "brand-new", "consent": ["sms"], "signup_at": "2026-10-20T08:00:00Z"}])["accepted"] == 2
    told = export_log(engine.state, tmp_path / "told", file_format=file_format)
    assert told["users"] == 2
    data = served_world[0]
    copy = tmp_path / "next"
    shutil.copytree(data, copy)
    counts = export_log(engine.state, tmp_path / "merged", file_format=file_format, users=users)
    assert counts["users"] == 2
    (copy / "users.parquet").unlink()
    shutil.copy(tmp_path / "merged" / f"users.{file_format}", copy / f"users.{file_format}")
    dataset, report = load_dataset(copy, engine.config)
    loaded = dataset.users.set_index("user_id")
    assert len(loaded) == len(users) + 1
    assert loaded.loc[known, "timezone"] == "Asia/Tokyo" and loaded.loc[known, numeric] == 77.0
    assert loaded.loc[known, "tier"] == "gold" and pd.isna(loaded.loc[str(users["user_id"].iloc[6]), "tier"])
    assert list(loaded.loc["brand-new", "consent"]) == ["sms"]
    assert loaded.loc["brand-new", "signup_at"] == pd.Timestamp("2026-10-20T08:00:00Z")
    other = str(users["user_id"].iloc[9])
    assert loaded.loc[other, "timezone"] == users.set_index("user_id").loc[other, "timezone"]


def test_a_posted_link_makes_two_identifiers_one_person_with_both_histories(served_world, tmp_path, monkeypatch) -> None:
    """``links`` on /users: requests and feedback naming the other identifier are the person's, and the person's
    features are offline featurisation of both identifiers' events as one person (what the links table does)."""
    from decision.candidates import expand
    from features.live import live_events_frame
    from features.pipeline import FeatureStore

    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    events = engine.dataset.events
    counts = events["user_id"].value_counts()
    users = engine.dataset.users
    full = set(users.loc[users["consent"].map(lambda c: {"email", "sms", "push"} <= set(c)), "user_id"].astype(str))
    a, b = [u for u in counts.index.astype(str) if u in full][:2]
    assert engine.upsert_users([{"user_id": a, "links": ["device-xyz", b]}])["accepted"] == 1
    engine.live_users.refresh()
    assert engine.canonical("device-xyz") == a and engine.canonical(b) == a
    assert engine.state.user_facts([a])[a]["links"] == sorted(["device-xyz", b])
    served = engine.feature_rows("device-xyz", NOW)
    merged = events.assign(user_id=events["user_id"].astype(object).replace({b: a}).astype(events["user_id"].dtype))
    merged = merged.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)
    offline = FeatureStore.build(replace(engine.dataset, events=live_events_frame(merged, merged.iloc[:0]),
                                         users=users[users["user_id"] != b].reset_index(drop=True)),
                                 engine.config, engine.store.globals)
    reference = offline.featurise(expand(offline, a, NOW))
    assert len(served) == len(reference) > 0
    for feature in FEATURE_NAMES:
        assert _same(served[feature].reset_index(drop=True), reference[feature].reset_index(drop=True)), feature
    # Feedback naming the other identifier is the person's.
    event = {"event_id": "link-1", "timestamp": (NOW - pd.Timedelta(hours=1)).isoformat(), "user_id": "device-xyz",
             "event_type": "visit"}
    assert engine.feedback([event])["accepted"] == 1
    assert engine.state.user_events([a])["event_id"].tolist()[-1] == "link-1"
    # Exported as the data contract's links, after the data directory's own.
    from serving.export import export_log

    export_log(engine.state, tmp_path / "out", links=engine.dataset.links)
    written = pd.read_parquet(tmp_path / "out" / "links.parquet")
    assert len(written) == len(engine.dataset.links) + 2
    assert {("device-xyz", a), (b, a)} <= {(r.identifier_b, r.identifier_a) for r in written.itertuples()}
