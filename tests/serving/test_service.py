"""The service in-process: every endpoint, every invalid input, caps and feedback."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest

NOW = "2026-11-01T00:00:00Z"


def _users(served_world, n: int) -> list[str]:
    data, _ = served_world
    users = pd.read_parquet(data / "users.parquet")
    return users.loc[users["consent"].map(len) > 0, "user_id"].head(n).tolist()


def test_recommend_answers_in_the_contract_shape(client, served_world) -> None:
    answered = 0
    for user in _users(served_world, 30):
        r = client.post("/recommend", json={"user_id": user, "now": NOW, "k": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) >= {"decision_id", "user_id", "model_version", "items", "suppressed"}
        assert body["user_id"] == user and len(body["items"]) <= 2
        for item in body["items"]:
            assert set(item) == {"message_id", "channel", "send_at", "score", "propensity"}
            assert 0 < item["propensity"] <= 1 and 0 <= item["score"] <= 1
            assert pd.Timestamp(item["send_at"]) >= pd.Timestamp(NOW)
        if not body["items"]:
            assert body["reason"] in {"no_eligible_candidate", "all_suppressed", "below_threshold"}
        answered += bool(body["items"])
    assert answered >= 10


def test_unknown_user_is_a_new_user(client) -> None:
    r = client.post("/recommend", json={"user_id": "somebody-we-never-saw"})
    assert r.status_code == 200 and r.json()["items"] == [] and r.json()["reason"] == "no_eligible_candidate"


INVALID = [
    ("not json", "", None),
    ('{"user_id": 42}', "user_id", None),
    ('{"k": 1}', "user_id", None),
    ('{"user_id": "u1", "k": 0}', "k", None),
    ('{"user_id": "u1", "k": 11}', "k", None),
    ('{"user_id": "u1", "k": "many"}', "k", None),
    ('{"user_id": "u1", "channels": ["fax"]}', "channels", None),
    ('{"user_id": "u1", "channels": "email"}', "channels", None),
    ('{"user_id": "u1", "now": "yesterday"}', "now", None),
    ('{"user_id": "u1", "now": "9999-12-31T00:00:00Z"}', "now", None),    # past what 64-bit nanoseconds hold
    ('{"user_id": "u1", "now": "0001-01-01T00:00:00"}', "now", None),
    ('{"user_id": "u1", "now": "2262-03-01T00:00:00Z"}', "now", None),    # holdable, but its slots are not
    ('{"user_id": "u1", "now": "2261-06-01T00:00:00Z"}', "now", None),    # its send_at /feedback would refuse
    ('{"user_id": "u1", "now": "1678-06-01T00:00:00Z"}', "now", None),
    ('{"user_id": "u1", "now": "2260-01-01T00:00:00Z"}', "now", None),    # the years are 1680-2259
    ('{"user_id": "u1", "now": 0.0}', "now", None),                         # a number is not ISO-8601 text
    ('{"user_id": "u1", "now": "0"}', "now", None),                         # nor a string of digits
    ('{"user_id": "u\\u0000001"}', "user_id", None),                        # NUL
    ('{"user_id": "u\\u0007"}', "user_id", None),                            # a control character
    ('{"user_id": "u\\u202e100"}', "user_id", None),                         # right-to-left override
    ('{"user_id": "u\\u200b1"}', "user_id", None),                           # zero-width space
    ('{"user_id": "u1", "arm": "\\u0000"}', "arm", None),
    ('{"user_id": "u1", "explore": "perhaps"}', "explore", None),
    ('{"user_id": "u1", "k": "3"}', "k", None),                            # strict: no strings for numbers
    ('{"user_id": "u1", "k": true}', "k", None),
    ('{"user_id": "u1", "k": 2.5}', "k", None),
    ('{"user_id": "u1", "explore": 0}', "explore", None),                  # strict: no numbers for booleans
    ('{"user_id": "u1", "k": NaN}', "k", None),
    ('{"user_id": "u1", "colour": "red"}', "colour", None),
    ('{"user_id": "   "}', "user_id", None),
    ('{"user_id": "u1", "candidates": []}', "candidates", None),
    ('{"user_id": "u1", "channels": []}', "channels", None),
    ("[]", "", None),
]


@pytest.mark.parametrize(("body", "field", "_"), INVALID)
def test_invalid_recommend_requests_are_4xx_naming_the_field(client, body, field, _) -> None:
    r = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    assert field in r.text
    answer = r.json()                                       # the one error envelope, naming the field
    assert set(answer) == {"error", "detail", "field", "status"} and answer["error"] == "invalid_request"
    assert answer["field"] == (field or None)


def test_batch_answers_each_request_and_names_a_bad_one(client, served_world) -> None:
    users = _users(served_world, 5)
    r = client.post("/recommend_batch", json={"requests": [{"user_id": u, "now": NOW} for u in users]})
    assert r.status_code == 200 and [x["user_id"] for x in r.json()["results"]] == users
    bad = client.post("/recommend_batch", json={"requests": [{"user_id": "u1"}, {"user_id": "u2", "channels": ["fax"]}]})
    assert bad.status_code == 400 and "requests[1].channels" in bad.text
    assert client.post("/recommend_batch", json={"requests": []}).status_code == 400
    assert client.post("/recommend_batch", json={"requests": [{"user_id": "u1", "k": 0}]}).status_code == 400


def test_a_batch_decided_in_pieces_answers_in_order(client, served_world, monkeypatch) -> None:
    """A batch longer than ``BATCH_CHUNK`` is decided piece by piece (the loop gets turns between them):
    every request answered once, in order; a bad request in a later piece still fails the whole batch
    before anything is decided."""
    import serving.service as service

    monkeypatch.setattr(service, "BATCH_CHUNK", 2)
    users = _users(served_world, 40)[-7:]
    r = client.post("/recommend_batch", json={"requests": [{"user_id": u, "now": NOW} for u in users]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["user_id"] for x in results] == users
    assert len({x["decision_id"] for x in results}) == len(users)
    bad = [{"user_id": u, "now": NOW} for u in users[:4]] + [{"user_id": users[4], "channels": ["fax"]}]
    logged = len(_decision_log(served_world))
    refused = client.post("/recommend_batch", json={"requests": bad})
    assert refused.status_code == 400 and "requests[4].channels" in refused.text
    assert len(_decision_log(served_world)) == logged


def test_health_is_answered_during_a_long_batch(client, served_world, monkeypatch) -> None:
    """Between the pieces of a batch the worker's loop answers other calls: a /readyz sent while a batch
    of 6 one-request pieces (each held 0.1 s longer, blocking the loop as real work does) is running comes
    back before the batch does. In one piece it would wait for the whole batch."""
    import threading
    import time

    import serving.service as service
    from serving.engine import Engine

    monkeypatch.setattr(service, "BATCH_CHUNK", 1)
    started = threading.Event()
    decide = Engine.recommend_many

    def slow(self, requests):
        started.set()
        time.sleep(0.1)
        return decide(self, requests)

    monkeypatch.setattr(Engine, "recommend_many", slow)
    users = _users(served_world, 60)[-6:]
    finished: dict[str, float] = {}

    def batch() -> None:
        r = client.post("/recommend_batch", json={"requests": [{"user_id": u, "now": NOW} for u in users]})
        assert r.status_code == 200 and len(r.json()["results"]) == 6
        finished["batch"] = time.perf_counter()

    thread = threading.Thread(target=batch)
    thread.start()
    assert started.wait(30)
    assert client.get("/readyz").status_code == 200
    finished["readyz"] = time.perf_counter()
    thread.join(60)
    assert finished["readyz"] < finished["batch"]


def _decision_log(served_world) -> pd.DataFrame:
    import os

    from nbm.config import load_config
    from serving.state import SQLiteState

    os.environ["NBM_HOME"] = str(served_world[1])
    return SQLiteState.from_url(load_config().state_url).decision_log()


def test_scoring_routes_are_decided_on_the_event_loop(client) -> None:
    """``/recommend`` and ``/recommend_batch`` are coroutines (BentoML runs them on the loop's thread): a
    worker busy deciding accepts no new connection, so concurrent campaign batches spread over the workers
    (``benchmarks/batches.py``, two batches at a time on 2 workers: median 4,093 decisions/s as a sync
    endpoint on the thread pool, 4,377 this way; docs/serving.md)."""
    from serving.service import NbmService

    assert inspect.iscoroutinefunction(NbmService.apis["recommend_batch"].func)
    assert inspect.iscoroutinefunction(NbmService.apis["recommend"].func)


def test_feedback_is_idempotent_and_rejects_bad_rows_only(client, served_world) -> None:
    user = _users(served_world, 1)[0]
    events = [
        {"event_id": "fb-1", "timestamp": "2026-10-31T10:00:00Z", "user_id": user, "event_type": "visit"},
        {"event_id": "fb-2", "timestamp": "not a time", "user_id": user, "event_type": "visit"},
        {"event_id": "fb-3", "timestamp": "2026-10-31T10:00:00Z", "user_id": user, "event_type": "send"},
        {"event_id": "fb-4", "timestamp": "2026-10-31T10:00:00Z", "user_id": user, "event_type": "send",
         "message_id": "m000", "channel": "fax"},
        {"event_id": "fb-5", "timestamp": "2026-10-31T10:00:00Z", "user_id": user, "event_type": "convert",
         "value": -5.0},
        "not an object",
        {"event_id": "fb-7", "timestamp": "9999-01-01T00:00:00Z", "user_id": user, "event_type": "visit"},
        {"event_id": "fb-8", "timestamp": "2026-10-31T10:00:00Z", "user_id": user, "event_type": "convert",
         "value": float("nan")},
        {"event_id": "fb-9", "timestamp": "2026-10-31T10:00:00Z", "user_id": "   ", "event_type": "visit"},
        {"event_id": " \t ", "timestamp": "2026-10-31T10:00:00Z", "user_id": user, "event_type": "visit"},
        {"event_id": "fb-11", "timestamp": "2026-10-31T10:00:00Z", "user_id": user + "\u200b", "event_type": "visit"},
    ]
    r = client.post("/feedback", content=json.dumps({"events": events}, allow_nan=True),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["duplicates"] == 0
    reasons = {x["index"]: x["error"] for x in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
    assert "user_id" in reasons[8] and "event_id" in reasons[9] and "U+200B" in reasons[10]
    assert "timestamp" in reasons[1] and "message_id" in reasons[2] and "channel" in reasons[3]
    assert "value" in reasons[4] and "event" in reasons[5]
    assert "timestamp" in reasons[6] and "supported range" in reasons[6] and "value" in reasons[7]
    again = client.post("/feedback", json={"events": events[:1]}).json()
    assert again == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert client.post("/feedback", json={"events": []}).status_code == 400
    assert client.post("/feedback", json={"rows": []}).status_code == 400
    for malformed in ("not json", '{"events": [}', "[]"):
        for route in ("/feedback", "/recommend_batch"):
            r = client.post(route, content=malformed, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (route, malformed, r.status_code, r.text)


def test_a_reported_send_counts_for_the_caps_at_once(client, served_world) -> None:
    """recommend → the campaign engine sends it → a second recommend cannot use that channel the same day."""
    for user in _users(served_world, 40)[20:]:
        first = client.post("/recommend", json={"user_id": user, "now": NOW, "explore": False}).json()
        if first["items"]:
            break
    else:
        pytest.skip("no user with an item")
    item = first["items"][0]
    sent = {"event_id": f"send-{first['decision_id']}", "timestamp": item["send_at"], "user_id": user,
            "event_type": "send", "message_id": item["message_id"], "channel": item["channel"],
            "decision_id": first["decision_id"], "propensity": item["propensity"]}
    assert client.post("/feedback", json={"events": [sent]}).json()["accepted"] == 1
    second = client.post("/recommend", json={"user_id": user, "now": NOW, "explore": False}).json()
    at = pd.Timestamp(item["send_at"])
    for other in second["items"]:
        gap = abs(pd.Timestamp(other["send_at"]) - at)
        assert gap >= pd.Timedelta(hours=12)
        assert not (other["channel"] == item["channel"] and gap < pd.Timedelta(hours=24))
        assert other["message_id"] != item["message_id"]


def test_an_unsubscribe_or_a_bounce_by_feedback_takes_the_channel_away_at_once(client, served_world) -> None:
    """recommend → the user unsubscribes from one of the answer's channels and bounces on another → no later
    answer uses either, at a later `now` or at the server's clock, while the other channels still come."""
    for user in _users(served_world, 120)[60:]:
        first = client.post("/recommend", json={"user_id": user, "now": NOW, "explore": False, "k": 3}).json()
        if len({i["channel"] for i in first["items"]}) >= 2:
            break
    else:
        pytest.skip("no user with items on two channels")
    unsubscribed, bounced = first["items"][0]["channel"], first["items"][1]["channel"]
    events = [{"event_id": f"unsub-{user}", "timestamp": "2026-10-31T12:00:00Z", "user_id": user,
               "event_type": "unsubscribe", "channel": unsubscribed},
              {"event_id": f"bounce-{user}", "timestamp": "2026-10-31T13:00:00Z", "user_id": user,
               "event_type": "bounce", "channel": bounced, "message_id": first["items"][1]["message_id"]}]
    assert client.post("/feedback", json={"events": events}).json()["accepted"] == 2
    used = set()
    for day in range(2, 12):            # days apart: the caps of one answer do not hold the next
        now = (pd.Timestamp(NOW) + pd.Timedelta(days=7 * day)).isoformat()
        for body in ({"user_id": user, "now": now, "k": 3}, {"user_id": user, "k": 3}):
            used |= {i["channel"] for i in client.post("/recommend", json=body).json()["items"]}
    assert used, "no later answer had items: the test proves nothing"
    assert not used & {unsubscribed, bounced}, used


def test_losses_count_as_of_an_explicit_now_and_always_at_the_servers_clock() -> None:
    """Engine._lost on a table of cases: a loss after a request's `now` does not count for it (replay's view
    of the past), nor one in the same millisecond (the snapshot compares whole milliseconds); a request
    without `now` counts every loss the store knows; other channels and users are kept. Times outside the
    snapshot indexes' span (before their base, or ~17.4 years after it) compare as they are, not clipped."""
    from types import SimpleNamespace

    from serving.engine import Engine
    from serving.state import Contacts

    ms = 10**6
    engine = SimpleNamespace(_channel_codes={"email": 0, "push": 1, "sms": 2},      # the vocabulary's codes
                             store=SimpleNamespace(history=SimpleNamespace(base=0)))
    engine._counted_losses = lambda *a: Engine._counted_losses(engine, *a)
    empty = np.zeros(0)
    span = 2**39 * ms                                    # the indexes' span of whole milliseconds after base
    t = np.array([100 * ms + 700, 100 * ms, 100 * ms, 100 * ms + 900, -5 * ms, span + 10 * ms], dtype=np.int64)
    requests = [{"now": "explicit"}, {"now": None}, {"now": "explicit"}, {"now": "explicit"}, {"now": "explicit"},
                {"now": "explicit"}]
    contacts = [Contacts(empty, empty, empty, 0, {"sms": 99 * ms + 999_999, "push": 100 * ms, "fax": 1}),
                Contacts(empty, empty, empty, 0, {"push": 10**18}), Contacts(empty, empty, empty, 0),
                Contacts(empty, empty, empty, 0, {"email": 100 * ms + 100}),
                Contacts(empty, empty, empty, 0, {"email": -10 * ms, "sms": -5 * ms + 1}),
                Contacts(empty, empty, empty, 0, {"push": span + 2 * ms, "sms": span + 10 * ms})]
    pairs = SimpleNamespace(group=np.repeat([0, 1, 2, 3, 4, 5], 4), channel_code=np.tile([0, 1, 2, -1], 6))
    lost = Engine._lost(engine, requests, pairs, contacts, t)
    assert lost.tolist() == [False, False, True, False,     # sms before its `now`'s millisecond counts, push in it not
                             False, True, False, False,     # the server's clock: a future push loss counts
                             False, False, False, False,
                             False, False, False, False,    # 0.8 ms before, in the same millisecond: not before it
                             True, False, False, False,     # before base: email 5 ms before `now` counts, sms after not
                             False, True, False, False]     # past the span: push 8 ms before counts, sms at `now` not


def test_health_endpoints(client) -> None:
    # /livez and /metrics need BentoML's server around the app (its metrics client): test_serve_e2e.py.
    for route in ("/healthz", "/readyz"):
        assert client.get(route).status_code == 200, route


def test_every_decision_is_in_the_decision_log(client, served_world) -> None:
    r = client.post("/recommend", json={"user_id": _users(served_world, 1)[0], "now": NOW}).json()
    log = _decision_log(served_world)
    row = log.set_index("decision_id").loc[r["decision_id"]]
    assert row["model_version"] == r["model_version"] and row["policy"].startswith("nbm-ranker/")
    assert (log["propensity"] > 0).all() and (log["propensity"] <= 1).all()


def test_the_decision_log_exports_as_a_data_directory(client, served_world, tmp_path) -> None:
    """nbm export-log → decisions and events in the data contract, readable by nbm's loader."""
    import os

    from nbm.cli import main
    from nbm.config import load_config
    from nbm.io import read_raw_table
    from nbm.validate import validate_decisions
    from serving.state import SQLiteState

    _, home = served_world
    os.environ["NBM_HOME"] = str(home)
    for user in _users(served_world, 100)[80:]:
        answer = client.post("/recommend", json={"user_id": user, "now": NOW, "k": 2}).json()
        if answer["items"]:
            break
    item = answer["items"][-1]
    # The campaign engine reports the send without echoing its propensity, and one the service did not answer.
    sends = [{"event_id": f"x-{answer['decision_id']}", "timestamp": item["send_at"], "user_id": user,
              "event_type": "send", "message_id": item["message_id"], "channel": item["channel"],
              "decision_id": answer["decision_id"]},
             {"event_id": f"y-{answer['decision_id']}", "timestamp": item["send_at"], "user_id": user,
              "event_type": "send", "message_id": item["message_id"],
              "channel": next(c for c in ("email", "sms", "push") if c != item["channel"]),
              "decision_id": answer["decision_id"]}]
    assert client.post("/feedback", json={"events": sends}).json()["accepted"] == 2
    assert main(["export-log", "--out", str(tmp_path)]) == 0
    decisions, problems = validate_decisions(read_raw_table(tmp_path / "decisions.parquet"))
    assert len(decisions) >= 1 and sum(len(p) for p in problems) == 0
    logged = SQLiteState.from_url(load_config().state_url)
    assert sorted(decisions["decision_id"]) == sorted(logged.decision_log()["decision_id"])
    row = decisions.set_index("decision_id").loc[answer["decision_id"]]
    assert (row["model_version"], row["explorer"]) == (answer["model_version"], "epsilon_greedy")
    assert json.loads(row["items"]) == answer["items"]
    events = read_raw_table(tmp_path / "events.parquet")
    assert sorted(events["event_id"]) == sorted(logged.feedback_events()["event_id"])
    propensity = events.set_index("event_id")["propensity"]
    assert propensity[sends[0]["event_id"]] == item["propensity"]          # the answer's, to the bit
    assert np.isnan(propensity[sends[1]["event_id"]])                      # not an item of that answer


def test_batch_scoring_and_the_service_take_the_same_greedy_decision(served_world, tmp_path) -> None:
    """One decision function: `nbm recommend` and the engine agree for users the state store never saw."""
    import os

    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from serving.batch_scoring import recommend_all
    from serving.engine import Engine, EngineSettings

    data, home = served_world
    os.environ["NBM_HOME"] = str(home)
    config = load_config().model_copy(update={"state_url": f"sqlite:///{tmp_path / 'fresh.db'}"})
    engine = Engine(config, EngineSettings(data=data, explorer="greedy"))
    users = _users(served_world, 200)[150:190]          # not used by the other tests
    now = pd.Timestamp("2026-10-29T00:00:00Z")
    dataset, _ = load_dataset(data, config)
    out = tmp_path / "batch.jsonl"
    recommend_all(dataset, config, engine.model.artifact, engine.model.version, now, out, users=users)
    batch = {r["user_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    agree = 0
    for user in users:
        served = engine.recommend(user, now=now, explore=False)
        if any(i["propensity"] < 1 for i in served["items"] + batch[user]["items"]):
            continue   # an exact tie: greedy draws between the tied pairs, each path with its own seed
        key = lambda items: [(i["message_id"], i["channel"], i["send_at"]) for i in items]  # noqa: E731
        assert key(served["items"]) == key(batch[user]["items"]), user
        agree += bool(served["items"])
    assert agree >= 10


def test_decision_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    from serving.engine import decision_ids

    ids = decision_ids(2_000)
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.hex, parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_copies_of_one_user_in_a_batch_are_decided_in_turn(served_world, tmp_path) -> None:
    """Eight requests for one user in one call (a campaign's retries, or one micro-batch), caps loose
    enough that each may send: each is decided after the one before is reserved, on the contacts it
    planned — every copy reserved and logged, no message twice (the 7-day cooldown), no item over its
    channel's daily cap of 3 counting the earlier copies' items (alone, every copy would take the same
    best pair). Before, all copies read the same
    contacts, one reservation won per attempt, and the sixth retry raised (the whole micro-batch a 500)."""
    import os

    from nbm.config import load_config
    from serving.engine import Engine, EngineSettings

    data, home = served_world
    os.environ["NBM_HOME"] = str(home)
    config = load_config().model_copy(update={"state_url": f"sqlite:///{tmp_path / 'copies.db'}"})
    loose = config.contact_policy.model_copy(update={"daily_cap_per_channel": 3, "weekly_cap_per_channel": 50,
                                                     "weekly_cap_total": 100, "min_gap_hours": 0.0})
    engine = Engine(config.model_copy(update={"contact_policy": loose}), EngineSettings(data=data, explorer="greedy"))
    for user in _users(served_world, 300)[200:]:
        answers = engine.recommend_many([{"user_id": user, "now": pd.Timestamp(NOW), "explore": False}] * 8)
        items = [i for a in answers for i in a["items"]]
        if len(items) >= 6:
            break
    else:
        pytest.skip("no user with six messages to send")
    assert [a["user_id"] for a in answers] == [user] * 8 and all("error" not in a for a in answers)
    assert len({i["message_id"] for i in items}) == len(items)
    day = pd.Timedelta(hours=24)
    for j, item in enumerate(items):    # the cap counts the earlier answers' items within 24 h either side
        at = pd.Timestamp(item["send_at"])
        assert sum(i["channel"] == item["channel"] and abs(pd.Timestamp(i["send_at"]) - at) < day
                   for i in items[:j]) < 3, (j, items)
    assert len({a["decision_id"] for a in answers}) == 8
    planned = engine.state.contacts_many([user], [pd.Timestamp(NOW).value], engine.lookback_ns)[0]
    assert len(planned.times) == len(items)


def test_a_decision_that_cannot_be_reserved_is_a_503_on_its_own(client, served_world, monkeypatch) -> None:
    """A reservation lost RESERVE_ATTEMPTS + 1 times (other writers for the user, each time): that request
    alone is answered — 503 with Retry-After on /recommend, an `error` in its place in a batch's results —
    and nothing of it is logged."""
    from serving.engine import RESERVE_ATTEMPTS, UNRESERVED, Engine

    calls = []
    real = Engine._decide
    lost = set(_users(served_world, 260)[250:252])

    def contended(self, requests, k, explore, kind="model"):
        calls.append(len(requests))
        kept = [r for r in requests if r["user_id"] not in lost]
        it = iter(real(self, kept, k, explore, kind) if kept else [])
        return [None if r["user_id"] in lost else next(it) for r in requests]

    monkeypatch.setattr(Engine, "_decide", contended)
    before = _decision_log(served_world)["user_id"].value_counts()
    first, second = sorted(lost)
    response = client.post("/recommend", json={"user_id": first, "now": NOW})
    assert response.status_code == 503 and response.headers["retry-after"] == "1", (response.text, calls)
    assert response.json() == {"error": "unavailable", "detail": UNRESERVED, "field": None,
                               "status": 503}    # the one error envelope
    assert len(calls) == RESERVE_ATTEMPTS + 1
    other = _users(served_world, 262)[261]
    batch = client.post("/recommend_batch", json={"requests": [{"user_id": other, "now": NOW},
                                                               {"user_id": second, "now": NOW}]})
    assert batch.status_code == 200
    good, bad = batch.json()["results"]
    assert good["user_id"] == other and "decision_id" in good
    assert bad == {"user_id": second, "error": UNRESERVED}
    after = _decision_log(served_world)["user_id"].value_counts()
    grew = after.sub(before, fill_value=0)
    assert grew.get(other, 0) == 1 and grew.reindex(sorted(lost)).fillna(0).eq(0).all(), grew[grew > 0]
