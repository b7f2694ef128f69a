"""Live users, continued: a person's linked identifiers count toward the person's caps, a person without a users
row of its own takes its linked identifier's, and a request's ``context`` is never queued behind the refresher.

Two identifiers linked by ``POST /users`` are one person. Offline (the links table) that person's sends are both
identifiers' sends, and so are the caps they fill; the service must count them too: the snapshot's sends of the
other identifier and what the service planned or was told under it before the link.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.declarations import FEATURE_NAMES
from tests.serving.test_live import NOW, _config, _engine, _same
from tests.serving.test_serve_e2e import _check_caps

FULL = {"email", "sms", "push"}


def _full_consent(engine) -> list[str]:
    users = engine.dataset.users
    return users.loc[users["consent"].map(lambda c: FULL <= set(c)), "user_id"].astype(str).tolist()


def test_what_was_planned_for_a_linked_identifier_counts_toward_the_persons_caps(served_world, tmp_path,
                                                                                monkeypatch) -> None:
    """Items planned for a device id, then the device linked to a customer: the customer's next items must keep
    the caps with the device's (12 h apart, a channel a day, 5 a week), which the customer's own alone break."""
    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    person = _full_consent(engine)[7]
    device = engine.recommend_many([{"user_id": "device-caps", "now": NOW, "k": 3,
                                     "context": {"consent": sorted(FULL)}}])[0]["items"]
    assert len(device) >= 2
    # Alone (a state of its own), the customer's items break the caps beside the device's.
    alone = _engine(served_world, _config(tmp_path / "alone", 0.0, served_world, monkeypatch), monkeypatch)
    (tmp_path / "alone").mkdir(exist_ok=True)
    by_itself = alone.recommend(person, k=3, now=NOW)["items"]
    with pytest.raises(AssertionError):
        _check_caps(device + by_itself)
    assert engine.upsert_users([{"user_id": person, "links": ["device-caps"]}])["accepted"] == 1
    engine.live_users.refresh()
    answer = engine.recommend(person, k=3, now=NOW)
    linked = answer["items"]
    _check_caps(device + linked)
    assert linked != by_itself
    if not linked:              # every slot of the horizon is within 12 h of the device's plans, or its channel's day
        assert {s["reason"] for s in answer["suppressed"]} <= {"min_gap", "frequency_cap_daily"}
    # Asked under the device id, it is the person: the same caps hold.
    more = engine.recommend("device-caps", k=3, now=NOW)["items"]
    _check_caps(device + linked + more)


def test_the_linked_identifiers_snapshot_sends_count_toward_the_persons_caps(served_world, tmp_path,
                                                                            monkeypatch) -> None:
    """A snapshot customer's last send, an hour before ``now``: linked to another customer, that send is in the
    other's caps (its contacts' history) and no item of the other comes within 12 h of it."""
    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    events = engine.dataset.events
    sends = events[events["event_type"] == "send"]
    full = set(_full_consent(engine))
    last = sends[sends["user_id"].astype(str).isin(full)].groupby("user_id", observed=True)["timestamp"].max()
    b = str(last.sort_values().index[-1])
    at = last[b] + pd.Timedelta(hours=1)
    quiet = sends[sends["timestamp"] >= at - pd.Timedelta(days=7)]["user_id"].astype(str)
    a = next(u for u in _full_consent(engine) if u not in set(quiet) and u != b)
    t = int(at.value)
    before = engine._contacts([a], [t], None)[1][0][0]
    assert not (before >= t - 12 * 3_600 * 10**9).any()
    assert engine.upsert_users([{"user_id": a, "links": [b]}])["accepted"] == 1
    engine.live_users.refresh()
    live = engine.live_users.of(a)
    assert live is not None and live.aliases[a] == (b,)
    extra = engine._contacts([a], [t], live)[1][0]
    assert int(last[b].value) in set(extra[0].tolist())
    items = engine.recommend(a, k=2, now=at)["items"]
    assert items
    for item in items:
        assert pd.Timestamp(item["send_at"]) >= last[b] + pd.Timedelta(hours=12), item


def test_a_person_without_a_users_row_takes_the_linked_identifiers(served_world, tmp_path, monkeypatch) -> None:
    """A new id linked to a snapshot customer: offline the customer's id (the one with a users row) would be the
    person's, with its row; live, the new id's features and eligibility are those of that row and history."""
    from decision.candidates import expand
    from features.pipeline import FeatureStore

    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    b = _full_consent(engine)[11]
    assert engine.upsert_users([{"user_id": "crm-42", "links": [b]}])["accepted"] == 1
    engine.live_users.refresh()
    served = engine.feature_rows("crm-42", NOW)
    dataset = engine.dataset
    rename = lambda frame: frame.assign(user_id=frame["user_id"].astype(object).replace({b: "crm-42"}).astype(  # noqa: E731
        frame["user_id"].dtype))
    offline = FeatureStore.build(replace(dataset, events=rename(dataset.events), users=rename(dataset.users)),
                                 engine.config, engine.store.globals)
    reference = offline.featurise(expand(offline, "crm-42", NOW))
    assert len(served) == len(reference) > 0
    consent = set(engine.dataset.users.set_index("user_id").loc[b, "consent"])
    assert FULL <= set(served["candidate_channel"]) <= consent          # b's consent (crm-42 alone has none)
    for feature in FEATURE_NAMES:
        assert _same(served[feature].reset_index(drop=True), reference[feature].reset_index(drop=True)), feature


def test_a_context_is_not_queued_behind_the_refresher(served_world, tmp_path, monkeypatch) -> None:
    """While a refresh holds the refresher's lock (a long build), a request whose context changes its user's
    consent is decided at once, by that consent."""
    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    user = _full_consent(engine)[2]
    answers: list[dict] = []
    with engine.live_users._lock:                # a refresh (or a rebuild after a new catalog) in progress
        worker = threading.Thread(target=lambda: answers.extend(engine.recommend_many(
            [{"user_id": user, "now": NOW, "k": 2, "context": {"consent": ["sms"]}}])))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the context's decision waited for the refresher"
    assert answers[0]["items"] and {i["channel"] for i in answers[0]["items"]} == {"sms"}


def test_an_older_build_that_ends_later_does_not_undo_a_newer_one(served_world, tmp_path, monkeypatch) -> None:
    """A refresh reads a user's facts (consent: email), then is slow; meanwhile a request's context changes the
    consent to sms and is decided on a build of its own. When the refresh ends, the user keeps the newer store."""
    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    user = _full_consent(engine)[4]
    assert engine.upsert_users([{"user_id": user, "consent": ["email"]}])["accepted"] == 1
    read, go = threading.Event(), threading.Event()
    real = engine.state.user_facts

    def slow(users):
        facts = real(users)
        if threading.current_thread().name == "slow-refresh":
            read.set()
            assert go.wait(30)
        return facts

    monkeypatch.setattr(engine.state, "user_facts", slow)
    refresher = threading.Thread(target=engine.live_users.refresh, name="slow-refresh")
    refresher.start()
    assert read.wait(30)
    answer = engine.recommend_many([{"user_id": user, "now": NOW, "k": 2, "context": {"consent": ["sms"]}}])[0]
    assert answer["items"] and {i["channel"] for i in answer["items"]} == {"sms"}
    go.set()
    refresher.join(timeout=30)
    assert engine.live_users.facts(user)["consent"] == ["sms"]
    assert {i["channel"] for i in engine.recommend(user, k=2, now=NOW + pd.Timedelta(days=8))["items"]} == {"sms"}
    # The next refresh sees the context's change and keeps sms.
    engine.live_users.refresh()
    assert engine.live_users.facts(user)["consent"] == ["sms"]
    assert np.array_equal(engine.live_users.of(user).store.history.consent_matrix.any(axis=0),
                          np.isin(np.asarray(engine.store.globals.vocabulary.channels), ["sms"]))


def test_a_linked_identifier_built_beside_its_person_is_the_persons(served_world, tmp_path, monkeypatch) -> None:
    """An identifier that had a live store of its own (feedback), then linked to a person: built together (a
    rebase or a compaction builds every live user at once), the person's store holds the identifier's events, and
    the identifier keeps no store of its own — as when the person is built alone."""
    engine = _engine(served_world, _config(tmp_path, 0.0, served_world, monkeypatch), monkeypatch)
    a, b = _full_consent(engine)[20], _full_consent(engine)[21]
    sent = {"event_id": "lb-1", "timestamp": (NOW - pd.Timedelta(hours=3)).isoformat(), "user_id": b,
            "event_type": "send", "message_id": str(engine.dataset.messages["message_id"].iloc[0]), "channel": "email"}
    assert engine.feedback([sent])["accepted"] == 1
    engine.live_users.refresh()
    assert engine.live_users.of(b) is not None
    assert engine.upsert_users([{"user_id": a, "links": [b]}])["accepted"] == 1
    engine.live_users.refresh()
    alone = engine.feature_rows(a, NOW)
    assert engine.live_users.of(b) is None
    engine.live_users._build([a, b])
    together = engine.live_users.of(a)
    assert engine.live_users.of(b) is None and together.aliases[a] == (b,)
    assert "lb-1" in set(together.store.dataset.events["event_id"])
    served = engine.feature_rows(a, NOW)
    for feature in FEATURE_NAMES:
        assert _same(served[feature].reset_index(drop=True), alone[feature].reset_index(drop=True)), feature
