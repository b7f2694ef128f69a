"""The live catalog (``POST /messages``): a message ended, changed or added without a restart is what every
worker decides by within a second — in place, on the indexes there are (a new message, topic or tag takes a
spare code), the features those of a store built anew with the new catalog — a known message's new topic once
a new snapshot store is built; and ``nbm export-log`` writes the catalog the next training reads."""

from __future__ import annotations

import time

import pandas as pd
import pytest

NOW = pd.Timestamp("2026-10-29T09:00:00Z")


def _engines(served_world, tmp_path, monkeypatch, refresh: float = 0.25):
    from nbm.config import load_config
    from serving.engine import Engine, EngineSettings

    data, home = served_world
    monkeypatch.setenv("NBM_HOME", str(home))
    config = load_config().model_copy(update={"state_url": f"sqlite:///{tmp_path / 'catalog.db'}"})
    config = config.model_copy(update={"service": config.service.model_copy(update={"live_refresh_seconds": refresh})})
    return (Engine(config, EngineSettings(data=data, explorer="greedy")),
            Engine(config, EngineSettings(data=data, explorer="greedy")))


def _users(engine, lo: int, hi: int) -> list[str]:
    users = engine.dataset.users
    return users.loc[users["consent"].map(lambda c: "email" in c), "user_id"].astype(str).iloc[lo:hi].tolist()


def _offered(engine, users: list[str], message: str) -> int:
    answers = engine.recommend_many([{"user_id": u, "now": NOW, "candidates": [message], "explore": False}
                                     for u in users])
    return sum(bool(a["items"]) for a in answers)


def _wait(condition, seconds: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_ending_and_changing_a_message_reach_another_worker_within_a_second(served_world, tmp_path, monkeypatch) -> None:
    taking, deciding = _engines(served_world, tmp_path, monkeypatch)
    messages = deciding.dataset.messages
    email = messages[messages["channels"].map(lambda c: "email" in c) & messages["end_at"].isna()
                     & messages["lifecycle_stages"].map(len).eq(0)]
    message = str(email["message_id"].iloc[0])
    assert _offered(deciding, _users(deciding, 0, 40), message) > 0
    ended = (NOW - pd.Timedelta(hours=1)).isoformat()
    assert taking.upsert_messages([{"message_id": message, "end_at": ended}]) == {"accepted": 1, "rejected": []}
    _wait(lambda: deciding._catalog_version == taking.state.catalog_version(), 1.0)
    assert _offered(deciding, _users(deciding, 40, 80), message) == 0              # ended: never sent again
    # A change of channels: only push now.
    other = str(email["message_id"].iloc[1])
    assert taking.upsert_messages([{"message_id": other, "channels": ["push"]}])["accepted"] == 1
    _wait(lambda: deciding._catalog_version == taking.state.catalog_version(), 1.0)
    answers = deciding.recommend_many([{"user_id": u, "now": NOW, "candidates": [other]} for u in _users(deciding, 80, 160)])
    assert {i["channel"] for a in answers for i in a["items"]} == {"push"}


def test_a_new_message_reaches_another_worker_within_a_second(served_world, tmp_path, monkeypatch) -> None:
    taking, deciding = _engines(served_world, tmp_path, monkeypatch)
    indexes = deciding.store.history.user_message
    topic = str(deciding.dataset.messages["topic"].iloc[0])
    # Worth its risk to anyone (a value of 4 fell below the cost of a send for every one of 40 people once the
    # model knew their topic tastes): what is tested is that the new message is decided at all.
    new = {"message_id": "m-new-autumn", "topic": topic, "channels": ["email"], "value": 400.0, "tags": ["autumn"]}
    assert taking.upsert_messages([new]) == {"accepted": 1, "rejected": []}
    seconds = _wait(lambda: "m-new-autumn" in deciding.messages, 1.0)
    print(f"a new message reached the other worker in {seconds:.2f} s")
    assert deciding.store.history.user_message is indexes and deciding._rebuilding is None    # in place
    assert _offered(deciding, _users(deciding, 0, 40), "m-new-autumn") > 0
    # Feedback naming it is accepted now (it is in the catalog).
    user = _users(deciding, 0, 1)[0]
    event = {"event_id": "new-1", "timestamp": NOW.isoformat(), "user_id": user, "event_type": "send",
             "message_id": "m-new-autumn", "channel": "email"}
    assert deciding.feedback([event])["accepted"] == 1


MESSAGE_ROWS = [
    ({"topic": "x", "channels": ["email"]}, "message_id"),
    ({"message_id": "brand-new", "channels": ["email"]}, "topic"),
    ({"message_id": "brand-new", "topic": "x"}, "channels"),
    ({"message_id": "brand-new", "topic": "x", "channels": ["fax"]}, "channels"),
    ({"message_id": "brand-new", "topic": "x", "channels": []}, "channels"),
    ({"message_id": "brand-new", "topic": "x", "channels": ["email"], "lifecycle_stages": ["sleepy"]}, "lifecycle_stages"),
    ({"message_id": "brand-new", "topic": "x", "channels": ["email"], "value": -1}, "value"),
    ({"message_id": "brand-new", "topic": "x", "channels": ["email"], "start_at": "2026-12-02T00:00:00Z",
      "end_at": "2026-12-01T00:00:00Z"}, "end_at"),
    ({"message_id": "brand-new", "topic": "x", "channels": ["email"], "end_at": 5}, "end_at"),
    ({"message_id": "brand-new", "topic": "x", "channels": ["email"], "colour": "red"}, "colour"),
    ([1, 2], "message"),
]


def test_catalog_rows_are_checked_one_by_one(served_world, tmp_path, monkeypatch) -> None:
    engine, _ = _engines(served_world, tmp_path, monkeypatch, refresh=0.0)
    known = str(engine.dataset.messages["message_id"].iloc[0])
    good = {"message_id": known, "value": 2.5}
    answer = engine.upsert_messages([good, *(row for row, _ in MESSAGE_ROWS)])
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == list(range(1, len(MESSAGE_ROWS) + 1))
    for rejected, (_, field) in zip(answer["rejected"], MESSAGE_ROWS):
        assert rejected["error"].startswith(f"`{field}"), rejected
    version, stored = engine.state.messages_table()
    assert version == 1 and stored == {known: {"value": 2.5}}


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_export_log_writes_the_catalog_the_next_training_reads(served_world, tmp_path, monkeypatch, file_format) -> None:
    import shutil

    from nbm.dataset import load_dataset
    from serving.export import export_log

    engine, _ = _engines(served_world, tmp_path, monkeypatch, refresh=0.0)
    messages = engine.dataset.messages
    known = str(messages["message_id"].iloc[2])
    engine.upsert_messages([{"message_id": known, "end_at": "2026-11-01T00:00:00Z", "value": 9.0},
                            {"message_id": "m-extra", "topic": "extra", "channels": ["sms"], "tags": ["a", "b"]}])
    export_log(engine.state, tmp_path / "out", file_format=file_format, messages=messages)
    copy = tmp_path / "next"
    shutil.copytree(served_world[0], copy)
    (copy / "messages.parquet").unlink()
    shutil.copy(tmp_path / "out" / f"messages.{file_format}", copy / f"messages.{file_format}")
    dataset, _ = load_dataset(copy, engine.config)
    loaded = dataset.messages.set_index("message_id")
    assert len(loaded) == len(messages) + 1
    assert loaded.loc[known, "value"] == 9.0 and loaded.loc[known, "end_at"] == pd.Timestamp("2026-11-01T00:00:00Z")
    assert list(loaded.loc["m-extra", "channels"]) == ["sms"] and list(loaded.loc["m-extra", "tags"]) == ["a", "b"]
    other = str(messages["message_id"].iloc[3])
    assert loaded.loc[other, "topic"] == messages.set_index("message_id").loc[other, "topic"]


def test_a_message_added_a_moment_ago_may_be_changed_at_once_on_any_worker(served_world, tmp_path, monkeypatch) -> None:
    """Rows are checked against the catalog as stored, not the one a worker has applied so far; the catalog
    exported without --data holds the posted fields alone (the others missing, not defaults)."""
    from serving.export import messages_table

    taking, other = _engines(served_world, tmp_path, monkeypatch, refresh=0.0)
    topic = str(taking.dataset.messages["topic"].iloc[0])
    assert taking.upsert_messages([{"message_id": "m-flash", "topic": topic, "channels": ["email"]}])["accepted"] == 1
    assert "m-flash" not in other.messages                        # not applied there yet
    assert other.upsert_messages([{"message_id": "m-flash", "end_at": "2026-12-01T00:00:00Z"}]) == \
        {"accepted": 1, "rejected": []}
    known = str(taking.dataset.messages["message_id"].iloc[0])
    taking.upsert_messages([{"message_id": known, "end_at": "2026-12-01T00:00:00Z"}])
    table = messages_table(taking.state.messages_table()[1]).set_index("message_id")
    assert table.loc[known, "end_at"] == pd.Timestamp("2026-12-01T00:00:00Z")
    assert table.loc[known, "channels"] is None and pd.isna(table.loc[known, "value"])
    assert list(table.loc["m-flash", "channels"]) == ["email"]


def _reference(engine, catalog: pd.DataFrame, events: list[dict] | None = None):
    """A store built anew from the data directory with ``catalog`` (and ``events`` appended), with the global tables
    of the data directory under that catalog, smoothing with the model's strengths: what a restart would decide by."""
    from dataclasses import replace

    import numpy as np

    from features.live import live_events_frame
    from features.pipeline import FeatureStore

    dataset = replace(engine.dataset, messages=catalog)
    strengths = engine.model.artifact.prior_strengths
    fresh = FeatureStore.build(dataset, engine.config, strengths=strengths)
    if not events:
        return fresh
    extra = pd.DataFrame([{**{c: None for c in ("message_id", "channel", "decision_id")}, "propensity": np.nan,
                           "value": np.nan, **e} for e in events])
    extra["timestamp"] = pd.to_datetime(extra["timestamp"], utc=True)
    return FeatureStore.build(replace(dataset, events=live_events_frame(dataset.events, extra)), engine.config,
                              fresh.globals)


def test_new_messages_topics_and_tags_are_featurised_as_a_store_built_anew(served_world, tmp_path, monkeypatch) -> None:
    """Three messages added in place — of a known topic with a new tag, of a new topic with a known tag, of a known
    topic without tags — then feedback naming one of them: every feature of every candidate, the new ones and the
    old, of snapshot users and of the live user, equals a store built anew with the new catalog (and the feedback)."""
    import numpy as np

    from decision.candidates import expand
    from features.declarations import FEATURE_NAMES

    engine, _ = _engines(served_world, tmp_path, monkeypatch, refresh=0.0)
    messages = engine.dataset.messages
    topic = str(messages["topic"].iloc[0])
    tag = str(messages["tags"].explode().dropna().iloc[0])
    added = [{"message_id": "m-add-1", "topic": topic, "channels": ["email", "push"], "tags": ["brand-new-tag"],
              "value": 5.0},
             {"message_id": "m-add-2", "topic": "brand-new-topic", "channels": ["email", "sms"], "tags": [tag]},
             {"message_id": "m-add-3", "topic": topic, "channels": ["email"]}]
    before = engine.store
    assert engine.upsert_messages(added)["accepted"] == 3
    engine.check_catalog()
    assert engine._rebuilding is None and engine.store.history.user_topic is before.history.user_topic
    catalog = engine.dataset.messages
    assert catalog["message_id"].tolist()[-3:] == ["m-add-1", "m-add-2", "m-add-3"]
    users = engine.dataset.users
    full = users.loc[users["consent"].map(lambda c: {"email", "sms", "push"} <= set(c)), "user_id"].astype(str).tolist()
    live_user = full[5]
    at = lambda hours: (NOW - pd.Timedelta(hours=hours)).isoformat()      # noqa: E731
    events = [{"event_id": "cat-1", "timestamp": at(20), "user_id": live_user, "event_type": "send",
               "message_id": "m-add-2", "channel": "email"},
              {"event_id": "cat-2", "timestamp": at(19), "user_id": live_user, "event_type": "open",
               "message_id": "m-add-2", "channel": "email"},
              {"event_id": "cat-3", "timestamp": at(18), "user_id": live_user, "event_type": "click",
               "message_id": "m-add-2", "channel": "email"}]
    assert engine.feedback(events)["accepted"] == 3
    engine.live_users.refresh()
    assert engine.live_users.of(live_user) is not None
    for user, reference in ((full[0], _reference(engine, catalog)), (full[1], _reference(engine, catalog)),
                            (live_user, _reference(engine, catalog, events))):
        served = engine.feature_rows(user, NOW)
        rows = reference.featurise(expand(reference, user, NOW))
        assert set(served["candidate_message_id"]) >= {"m-add-1", "m-add-2", "m-add-3"}
        assert len(served) == len(rows)
        for feature in FEATURE_NAMES:
            a, b = served[feature].reset_index(drop=True), rows[feature].reset_index(drop=True)
            if feature == "message_topic":          # codes of each store's vocabulary: compared by name
                a = pd.Series(np.asarray(engine.store.globals.vocabulary.topics, dtype=object)[a.to_numpy()])
                b = pd.Series(np.asarray(reference.globals.vocabulary.topics, dtype=object)[b.to_numpy()])
            if pd.api.types.is_numeric_dtype(a.dtype) and pd.api.types.is_numeric_dtype(b.dtype):
                assert np.array_equal(a.to_numpy(float), b.to_numpy(float), equal_nan=True), (user, feature)
            else:
                assert a.astype(str).tolist() == b.astype(str).tolist(), (user, feature)
    # The feedback on the new message moved the live user's features of it (the table above is not vacuous).
    served = engine.feature_rows(live_user, NOW)
    new = served[served["candidate_message_id"] == "m-add-2"]
    assert (new["um_received"] == 1).all() and (new["um_engaged"] >= 1).all()
    # A decision may pick them (worth its risk: a high value, the rest of the catalog shut out).
    answer = engine.recommend_many([{"user_id": full[0], "now": NOW, "candidates": ["m-add-1", "m-add-2", "m-add-3"],
                                     "explore": False}])[0]
    assert answer["items"] and answer["items"][0]["message_id"] in {"m-add-1", "m-add-2", "m-add-3"}


def test_a_known_messages_new_topic_builds_a_new_store(served_world, tmp_path, monkeypatch) -> None:
    """A known message's topic changed: its past events count under the new topic, which no in-place change can
    give; a new snapshot store is built (on a thread), and then its features are a store built anew's."""
    import numpy as np

    from decision.candidates import expand

    engine, _ = _engines(served_world, tmp_path, monkeypatch, refresh=0.0)
    message = str(engine.dataset.messages["message_id"].iloc[1])
    before = engine.store
    assert engine.upsert_messages([{"message_id": message, "topic": "renamed-topic"}])["accepted"] == 1
    engine.check_catalog()
    _wait(lambda: engine.store is not before and (engine._rebuilding is None or not engine._rebuilding.is_alive()), 60)
    assert engine.store.history.user_topic is not before.history.user_topic
    reference = _reference(engine, engine.dataset.messages)
    user = str(engine.dataset.users["user_id"].iloc[3])
    served, rows = engine.feature_rows(user, NOW), reference.featurise(expand(reference, user, NOW))
    for feature in ("ut_click_affinity", "ut_open_affinity", "ut_open_lift", "ut_click_lift"):
        if feature in served:
            assert np.array_equal(served[feature].to_numpy(float), rows[feature].to_numpy(float), equal_nan=True), feature


def test_a_catalog_whose_topics_sort_differently_is_scored_by_the_models_topic_codes(served_world, tmp_path,
                                                                                    monkeypatch) -> None:
    """A store of a catalog with a topic the model never saw, sorting before every other (each known topic's code
    moves up one): the model's scores of the known messages are those of the training catalog's store, because
    the codes are mapped to the model's by name (``artifact.topics``); taken as they are, they would differ."""
    import numpy as np
    from dataclasses import replace

    from decision.candidates import expand
    from decision.scoring import score
    from features.pipeline import FeatureStore

    engine, _ = _engines(served_world, tmp_path, monkeypatch, refresh=0.0)
    artifact = engine.model.artifact
    assert artifact.topics == tuple(engine.store.globals.vocabulary.topics)
    messages = engine.dataset.messages
    extra = messages.iloc[:1].assign(message_id="m-first-topic", topic="000-first")
    other = FeatureStore.build(replace(engine.dataset, messages=pd.concat([messages, extra], ignore_index=True)),
                               engine.config, strengths=artifact.prior_strengths)
    assert list(other.globals.vocabulary.topics)[0] == "000-first"
    for user in engine.dataset.users["user_id"].astype(str).iloc[:3]:
        rows = expand(engine.store, user, NOW)
        known = expand(other, user, NOW)
        keep = np.asarray(known.message_id, dtype=object) != "m-first-topic"
        assert keep.sum() == len(rows.message_id)
        expected = score(engine.store, artifact, rows)
        assert np.allclose(score(other, artifact, known)[keep], expected, rtol=0, atol=1e-12)
        unmapped = score(other, replace(artifact, topics=None), known)[keep]
        assert not np.allclose(unmapped, expected, rtol=0, atol=1e-6)     # the test can fail


def test_messages_added_in_any_order_and_feedback_another_worker_took_first(served_world, tmp_path,
                                                                           monkeypatch) -> None:
    """A message whose id sorts before one added earlier is still added in place (its code after the earlier
    one's); and feedback on a new message taken by a worker that had it, before this worker had it (coded as no
    message in this worker's live store), counts once this worker has the message: that store is built again."""
    taking, deciding = _engines(served_world, tmp_path, monkeypatch, refresh=0.0)
    topic = str(deciding.dataset.messages["topic"].iloc[0])
    before = deciding.store
    assert taking.upsert_messages([{"message_id": "m-zz-late", "topic": topic, "channels": ["email"]}])["accepted"] == 1
    deciding.check_catalog()
    assert taking.upsert_messages([{"message_id": "m-aa-early", "topic": topic, "channels": ["email"],
                                    "value": 300.0}])["accepted"] == 1
    taking.check_catalog()
    user = _users(deciding, 3, 4)[0]
    at = lambda hours: (NOW - pd.Timedelta(hours=hours)).isoformat()      # noqa: E731
    events = [{"event_id": f"early-{i}", "timestamp": at(10 - i), "user_id": user, "event_type": kind,
               "message_id": "m-aa-early", "channel": "email"} for i, kind in enumerate(("send", "open", "click"))]
    assert taking.feedback(events)["accepted"] == 3
    deciding.live_users.refresh()          # this worker does not have m-aa-early yet
    assert "m-aa-early" not in deciding.messages
    deciding.check_catalog()
    assert deciding._rebuilding is None and deciding.store.history.user_message is before.history.user_message
    assert list(deciding.store.globals.vocabulary.messages[-2:]) == ["m-zz-late", "m-aa-early"]
    served = deciding.feature_rows(user, NOW)
    rows = served[served["candidate_message_id"] == "m-aa-early"]
    assert len(rows) and (rows["um_received"] == 1).all() and (rows["um_engaged"] == 1).all()
