"""One contract for both state stores (SQLite and Redis): contact history, reservations, feedback, explorer, log.

Redis runs as a real server (the ``redis_server`` fixture); SQLite is the reference the Redis store is also
compared with, operation by operation, on a seeded random sequence.
"""

from __future__ import annotations

import multiprocessing
import uuid
from dataclasses import replace
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from decision.answer import Answer
from serving.state import HOUR_NS, PLANNED_GRACE_NS, SQLiteState, open_state

DAY = 24 * HOUR_NS
NOW = pd.Timestamp("2026-11-01T00:00:00Z").value
LOOKBACK = 8 * DAY


def _url(kind: str, tmp_path, redis_server_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return f"{redis_server_url}?prefix=t{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path) -> str:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    return _url(request.param, tmp_path, server)


@pytest.fixture
def store(url):
    return open_state(url)


def _decision(user: str, now: int = NOW, items: list | None = None, arm: str | None = "model") -> Answer:
    return Answer(uuid.uuid4().hex, user, "3", items or [], [], "", now, arm, None, "greedy", "nbm-ranker/3")


def _planned(decision: Answer, planned: list, propensity: float | None) -> Answer:
    """``decision`` with its planned sends ``(send_at, channel, message_id)`` and slate propensity."""
    return replace(decision, planned=list(planned), propensity=propensity)


def _send(event_id: str, user: str, at: int, message: str = "m1", channel: str = "email",
          decision: str | None = None) -> dict:
    return {"event_id": event_id, "timestamp": at, "user_id": user, "event_type": "send", "message_id": message,
            "channel": channel, "decision_id": decision}


def test_an_unknown_user_has_no_contacts(store) -> None:
    c = store.contacts("nobody", NOW, LOOKBACK)
    assert len(c.times) == 0 and c.times.dtype == np.int64
    assert store.contacts_many(["a", "b"], [NOW, NOW], LOOKBACK)[1].version == c.version


def test_reserve_plans_items_and_a_stale_version_writes_nothing(store) -> None:
    v0 = store.contacts("u", NOW, LOOKBACK).version
    first = _decision("u")
    assert store.reserve("u", v0, _planned(first, [(NOW + 2 * HOUR_NS, "email", "m1"), (NOW + 20 * HOUR_NS, "sms", "m2")],
                                           0.5))
    c = store.contacts("u", NOW, LOOKBACK)
    assert c.version != v0
    assert c.times.tolist() == [NOW + 2 * HOUR_NS, NOW + 20 * HOUR_NS]
    assert c.channels.tolist() == ["email", "sms"] and c.messages.tolist() == ["m1", "m2"]
    stale = _decision("u")
    assert not store.reserve("u", v0, _planned(stale, [(NOW + 3 * HOUR_NS, "push", "m3")], 0.2))   # another decision won
    assert len(store.contacts("u", NOW, LOOKBACK).times) == 2
    log = store.decision_log()
    assert log["decision_id"].tolist() == [first.decision_id]      # the losing decision is not logged
    assert store.reserve("u", c.version, _planned(stale, [(NOW + 3 * HOUR_NS, "push", "m3")], 0.2))
    # Another user's writes do not change this user's version.
    before = store.contacts("u", NOW, LOOKBACK).version
    assert store.reserve("w", store.contacts("w", NOW, LOOKBACK).version,
                         _planned(_decision("w"), [(NOW, "email", "m1")], 1.0))
    assert store.contacts("u", NOW, LOOKBACK).version == before


def test_a_decision_without_items_is_logged_whatever_the_version(store) -> None:
    assert store.reserve("u", 12345, _planned(_decision("u"), [], 1.0))
    store.log_decisions([_planned(_decision("u", NOW + 1), [], 1.0),
                         _planned(_decision("v", NOW + 2, arm="holdout"), [], None)])
    log = store.decision_log()
    assert len(log) == 3 and log["arm"].tolist() == ["model", "model", "holdout"]
    assert log["propensity"].isna().tolist() == [False, False, True]
    assert len(store.contacts("u", NOW, LOOKBACK).times) == 0


def test_the_window_is_exact_to_the_nanosecond_and_planned_items_expire(store) -> None:
    v = store.contacts("u", NOW, LOOKBACK).version
    edge = NOW - LOOKBACK
    store.feedback([_send("e1", "u", edge - 1), _send("e2", "u", edge, "m2"), _send("e3", "u", NOW - 1, "m3")])
    planned_at = NOW + 5 * HOUR_NS + 7
    assert store.reserve("u", store.contacts("u", NOW, LOOKBACK).version, _planned(_decision("u"),
                         [(planned_at, "push", "m4")], 1.0))
    assert v != store.contacts("u", NOW, LOOKBACK).version
    assert store.contacts("u", NOW, LOOKBACK).times.tolist() == [edge, NOW - 1, planned_at]
    later = planned_at + PLANNED_GRACE_NS
    assert store.contacts("u", later, LOOKBACK).times.tolist()[-1] == planned_at        # still counts at the edge
    assert planned_at not in store.contacts("u", later + 1, LOOKBACK).times.tolist()    # then it expires
    assert NOW - 1 in store.contacts("u", later + 1, LOOKBACK).times.tolist()           # a real send does not


def test_a_send_replaces_its_planned_item_and_feeds_the_explorer(store) -> None:
    d = _decision("u")
    at = NOW + 2 * HOUR_NS
    assert store.reserve("u", store.contacts("u", NOW, LOOKBACK).version, _planned(d,
                         [(at, "email", "m1"), (at + 12 * HOUR_NS, "sms", "m2")], 0.25))
    v = store.contacts("u", NOW, LOOKBACK).version
    assert store.feedback([_send("s1", "u", at + 60 * 10**9, decision=d.decision_id)]) == (1, 0)
    c = store.contacts("u", NOW, LOOKBACK)
    assert c.version != v
    assert c.times.tolist() == [at + 60 * 10**9, at + 12 * HOUR_NS]     # the send, and the other planned item
    assert c.messages.tolist() == ["m1", "m2"]
    assert store.explorer_statistics() == {("m1", "email"): (0, 1)}


def test_feedback_is_idempotent_by_event_id(store) -> None:
    events = [_send("s1", "u", NOW - DAY), {"event_id": "c1", "timestamp": NOW - DAY + HOUR_NS, "user_id": "u",
                                             "event_type": "convert", "message_id": "m1", "channel": "email",
                                             "value": 12.5, "propensity": None, "decision_id": None}]
    assert store.feedback(events) == (2, 0)
    assert store.feedback(events) == (0, 2)
    assert store.feedback([events[0], _send("s2", "u", NOW - HOUR_NS)]) == (1, 1)
    assert store.explorer_statistics() == {("m1", "email"): (1, 1)}
    assert len(store.contacts("u", NOW, LOOKBACK).times) == 2
    read = store.feedback_events()
    assert read["event_id"].tolist() == ["s1", "c1", "s2"]
    assert read["value"].tolist()[1] == 12.5 and np.isnan(read["value"].tolist()[0])
    assert str(read["timestamp"].dtype).startswith("datetime64") and read["timestamp"].iloc[0].value == NOW - DAY


def test_an_outcome_without_message_is_credited_to_its_decisions_item(store) -> None:
    d = _decision("u")
    assert store.reserve("u", store.contacts("u", NOW, LOOKBACK).version, _planned(d, [(NOW, "push", "m7")], 1.0))
    convert = {"event_id": "c1", "timestamp": NOW + HOUR_NS, "user_id": "u", "event_type": "convert",
               "decision_id": d.decision_id}
    assert store.feedback([convert]) == (1, 0)
    assert store.explorer_statistics() == {("m7", "push"): (1, 0)}       # planned only: a success without an impression yet
    other = {**convert, "event_id": "c2", "decision_id": "unknown"}
    assert store.feedback([other, {**convert, "event_id": "o1", "event_type": "open"}]) == (2, 0)
    assert store.explorer_statistics() == {("m7", "push"): (1, 0)}       # neither an unknown decision nor a non-target counts


def _loss(event_id: str, user: str, at: int, channel: str, kind: str = "unsubscribe") -> dict:
    return {"event_id": event_id, "timestamp": at, "user_id": user, "event_type": kind, "channel": channel,
            "message_id": "m1" if kind == "bounce" else None}


def test_an_unsubscribe_or_a_bounce_loses_the_channel_from_its_earliest_time(store, url) -> None:
    version = store.contacts("u", NOW, LOOKBACK).version
    events = [_loss("x1", "u", NOW - DAY, "sms"), _loss("x2", "u", NOW, "sms", "bounce"),
              _loss("x3", "u", NOW - HOUR_NS, "email", "bounce"), _loss("x4", "v", NOW, "push")]
    assert store.feedback(events) == (4, 0)
    c = store.contacts("u", NOW, LOOKBACK)
    assert c.lost == {"sms": NOW - DAY, "email": NOW - HOUR_NS}
    assert len(c.times) == 0 and c.version == version      # a loss is no send: it changes no cap
    assert store.feedback([_loss("x5", "u", NOW - 2 * DAY, "sms"), events[0]]) == (1, 1)
    many = store.contacts_many(["u", "v", "w"], [NOW, NOW, NOW], LOOKBACK)
    assert [m.lost for m in many] == [{"sms": NOW - 2 * DAY, "email": NOW - HOUR_NS}, {"push": NOW}, {}]
    assert open_state(url).contacts("u", NOW, LOOKBACK).lost == many[0].lost       # kept across a restart
    assert store.explorer_statistics() == {}                                                     # no impression either


def test_the_earliest_loss_is_exact_to_the_nanosecond(store) -> None:
    """Times 1 ns apart (a double tells apart only ~256 ns here), before 1970 too; then the backfill's rule."""
    old = -pd.Timestamp("1950-01-01T00:00:00Z").value            # a time before the epoch, negated
    steps = [("e1", NOW + 3, NOW + 3), ("e2", NOW + 1, NOW + 1), ("e3", NOW + 2, NOW + 1),
             ("e4", -old + 1, -old + 1), ("e5", -old - 1, -old - 1), ("e6", -old, -old - 1)]
    for event_id, at, earliest in steps:
        assert store.feedback([_loss(event_id, "u", at, "sms")]) == (1, 0)
        assert store.contacts("u", NOW, LOOKBACK).lost == {"sms": earliest}, event_id


def test_a_state_file_from_before_losses_were_kept_finds_them_in_its_feedback(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    SQLiteState(path).feedback([_loss("x1", "u", NOW - DAY, "sms"), _loss("x2", "u", NOW - 2 * DAY, "sms", "bounce"),
                                _send("s1", "u", NOW - DAY)])
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE lost")      # as the file was before the table existed
    assert SQLiteState(path).contacts("u", NOW, LOOKBACK).lost == {"sms": NOW - 2 * DAY}


# -- SQLite as the reference ------------------------------------------------------------------------------
def _apply(store, ops: list[tuple]) -> list:
    """Run ``ops`` on ``store``; what each returned (versions replaced by whether they changed)."""
    out, versions = [], {}
    for op in ops:
        kind = op[0]
        if kind == "read":
            _, user, t = op
            c = store.contacts(user, t, LOOKBACK)
            out.append((c.times.tolist(), c.channels.tolist(), c.messages.tolist(), sorted(c.lost.items())))
            versions[user] = (versions.get(user, (None, None))[1], c.version)
        elif kind == "reserve":
            _, user, stale, decision, items = op
            previous, current = versions.get(user, (None, store.contacts(user, NOW, LOOKBACK).version))
            version = previous if stale and previous is not None else current
            out.append(store.reserve(user, version, _planned(decision, items, 0.5)))
        else:
            _, events = op
            out.append(store.feedback(events))
    out += [store.explorer_statistics(), store.decision_log().to_dict("list"),
            store.feedback_events().to_dict("list")]
    return out


def _random_ops(seed: int, n: int = 150) -> list[tuple]:
    rng = np.random.default_rng(seed)
    users, messages, channels = ["a", "b", "c"], ["m1", "m2", "m3"], ["email", "sms", "push"]
    ops, decisions, event = [], [], 0
    for _ in range(n):
        user = users[rng.integers(3)]
        t = NOW + int(rng.integers(-3 * DAY, 3 * DAY))
        r = rng.random()
        if r < 0.35:
            ops.append(("read", user, t))
        elif r < 0.65:
            items = [(t + int(rng.integers(0, DAY)), channels[rng.integers(3)], messages[rng.integers(3)])
                     for _ in range(int(rng.integers(0, 3)))]
            items = list({(c, m): (at, c, m) for at, c, m in items}.values())   # an answer's items are distinct pairs
            d = _decision(user, t, [{"message_id": m, "channel": c} for _, c, m in items])
            decisions.append((d.decision_id, user, items))
            ops.append(("reserve", user, bool(rng.random() < 0.3), d, items))
        else:
            events = []
            for _ in range(int(rng.integers(1, 4))):
                if decisions and rng.random() < 0.5:
                    did, u, items = decisions[rng.integers(len(decisions))]
                    if items and rng.random() < 0.6:
                        at, c, m = items[rng.integers(len(items))]
                        events.append(_send(f"e{event}", u, at + 1, m, c, did))
                    else:
                        events.append({"event_id": f"e{event}", "timestamp": t, "user_id": u,
                                       "event_type": "convert", "decision_id": did, "value": 3.0})
                elif rng.random() < 0.15:
                    events.append(_loss(f"e{event}", user, t, channels[rng.integers(3)],
                                        ("unsubscribe", "bounce")[rng.integers(2)]))
                else:
                    events.append(_send(f"e{event}", user, t, messages[rng.integers(3)], channels[rng.integers(3)]))
                if rng.random() < 0.2 and event:   # a redelivery
                    events.append({**events[-1], "event_id": f"e{int(rng.integers(event))}"})
                event += 1
            ops.append(("feedback", events))
    return ops


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_redis_agrees_with_sqlite_on_a_random_sequence(seed, tmp_path, redis_server) -> None:
    ops = _random_ops(seed)
    reference = _apply(SQLiteState(tmp_path / "ref.db"), ops)
    got = _apply(open_state(_url("redis", tmp_path, redis_server)), ops)
    assert sum(1 for r in reference if r is False) > 0, "no reservation lost a race: the test proves little"
    assert got[:-2] == reference[:-2]
    for mine, ref in zip(got[-2:], reference[-2:]):
        pd.testing.assert_frame_equal(pd.DataFrame(mine), pd.DataFrame(ref))


# -- several processes -------------------------------------------------------------------------------------
def _race(url: str, worker: int, attempts: int, start=None) -> list[tuple[int, bool]]:
    store = open_state(url)
    if start is not None:      # every process ready before any reserves: they race
        start.wait(120)
    out = []
    for i in range(attempts):
        version = store.contacts("shared", NOW, LOOKBACK).version
        ok = store.reserve("shared", version,
                           _planned(_decision("shared"), [(NOW + (worker * 1000 + i), "email", "m1")], 1.0))
        out.append((version, ok))
    return out


def test_only_one_reservation_wins_per_version_across_processes(url) -> None:
    open_state(url)   # creates the schema before the processes race
    # Spawned, not forked: this process runs threads (the SQLite stores' checkpoint threads, tqdm's monitor),
    # and a child forked while one of them holds a lock inside C code can hang on it.
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, ProcessPoolExecutor(4, mp_context=spawn) as pool:
        start = manager.Barrier(4)
        results = [r for part in pool.map(_race, [url] * 4, range(4), [25] * 4, [start] * 4) for r in part]
    wins = [version for version, ok in results if ok]
    assert len(wins) == len(set(wins)), "two decisions reserved on the same contact version"
    assert len(open_state(url).contacts("shared", NOW, LOOKBACK).times) == len(wins)
    assert len(wins) < len(results), "no reservation lost a race: the test proves little"


def test_an_unreachable_redis_is_a_usage_error_without_the_password() -> None:
    from nbm.errors import UsageError
    from serving.launch import free_port

    with pytest.raises(UsageError, match=r"`state_url`: cannot reach .*redis://:\*\*\*@127\.0\.0\.1") as error:
        open_state(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert "hunter2" not in str(error.value)


def test_the_redis_scripts_time_order_is_exact_on_int64_times(redis_server) -> None:
    """The Lua ``before`` (decimal strings, byte by byte) against Python's integer order on 2,000 seeded pairs:
    near and far apart, negative, the int64 ends, equal."""
    import redis

    from serving.state.redis import _BEFORE

    rng = np.random.default_rng(31)
    a = rng.integers(-(2 ** 63), 2 ** 63 - 1, 2_000, dtype=np.int64, endpoint=True)
    b = a.copy()
    near = rng.random(2_000) < 0.5
    b[near] = a[near] + rng.integers(-300, 300, int(near.sum()))       # may wrap at the ends: still int64 pairs
    b[~near] = rng.integers(-(2 ** 63), 2 ** 63 - 1, int((~near).sum()), dtype=np.int64, endpoint=True)
    ends = [-(2 ** 63), -1, 0, 1, 9, 10, 99, 100, 2 ** 63 - 1]
    pairs = [(int(x), int(y)) for x, y in zip(a, b)] + [(x, y) for x in ends for y in ends]
    order = redis.Redis.from_url(redis_server).register_script(
        _BEFORE + "local out = {}\nfor i = 1, #ARGV, 2 do out[#out + 1] = before(ARGV[i], ARGV[i + 1]) and 1 or 0 end\n"
        "return out")
    got = order(args=[str(v) for pair in pairs for v in pair])
    assert got == [int(x < y) for x, y in pairs]


def test_redis_without_fsync_on_every_write_is_reported(redis_server, caplog) -> None:
    import redis

    assert open_state(redis_server).durable
    client = redis.Redis.from_url(redis_server)
    client.config_set("appendfsync", "everysec")
    try:
        with caplog.at_level("WARNING", logger="serving.state.redis"):
            assert not open_state(redis_server).durable
        assert "appendfsync everysec" in caplog.text and "can be lost" in caplog.text
    finally:
        client.config_set("appendfsync", "always")


def test_many_at_once_equals_one_at_a_time(store, monkeypatch) -> None:
    """contacts_many and reserve_many (one transaction or round trip) give what the single calls give."""
    import serving.state.sqlite

    monkeypatch.setattr(serving.state.sqlite, "QUERY_CHUNK", 3)        # several chunks, a user in two of them
    rng = np.random.default_rng(4)
    users = [f"u{i}" for i in range(7)]
    store.feedback([_send(f"s{i}", users[i % 7], NOW - int(rng.integers(0, 10 * DAY)), f"m{i % 4}") for i in range(40)])
    asked = users + ["u2", "nobody", "u5"]
    times = [NOW - int(rng.integers(0, 3 * DAY)) for _ in asked]
    many = store.contacts_many(asked, times, LOOKBACK)
    for user, t, c in zip(asked, times, many):
        one = store.contacts(user, t, LOOKBACK)
        assert (c.times.tolist(), c.channels.tolist(), c.messages.tolist(), c.version) == \
               (one.times.tolist(), one.channels.tolist(), one.messages.tolist(), one.version)
    assert sum(len(c.times) for c in many) > 10
    u0, u1 = many[0], many[1]
    won = store.reserve_many([("u0", u0.version, _planned(_decision("u0"), [(NOW, "email", "m1")], 1.0)),
                              ("u0", u0.version, _planned(_decision("u0"), [(NOW + 1, "sms", "m2")], 1.0)),   # same version
                              ("u1", u1.version - 1, _planned(_decision("u1"), [(NOW, "email", "m1")], 1.0)),  # stale
                              ("u1", u1.version - 1, _planned(_decision("u1"), [], 1.0))])                   # nothing to plan
    assert won == [True, False, False, True]
    assert len(store.decision_log()) == 2
    assert store.contacts("u0", NOW, LOOKBACK).times.tolist()[-1] == NOW


def _log_many(state: SQLiteState, n: int) -> None:
    for lo in range(0, n, 100):
        state.reserve_many([(f"u{i}", 0, _planned(_decision(f"u{i}", items=[(NOW, "email", "m1")]),
                                                  [(NOW, "email", "m1")], 0.5))
                            for i in range(lo, lo + 100)])


def test_commits_leave_checkpoints_to_the_thread_until_the_safety_limit(tmp_path, monkeypatch) -> None:
    """Below SAFETY_PAGES no commit copies the log back (SQLite's default would past 1,000 pages, inside the
    request that passes them); past it a commit does; the thread copies all of it."""
    import serving.state.sqlite

    monkeypatch.setattr(serving.state.sqlite, "CHECKPOINT_SECONDS", 3600.0)      # the thread waits: commits alone
    state = SQLiteState(tmp_path / "state.db")
    _log_many(state, 6000)
    busy, log, copied = state.checkpoint()
    assert busy == 0 and log > 1000 and copied == log                       # nothing was copied before
    state.close()
    assert not state._checkpointer.is_alive()

    monkeypatch.setattr(serving.state.sqlite, "SAFETY_PAGES", 200)
    small = SQLiteState(tmp_path / "small.db")
    _log_many(small, 6000)
    busy, log, copied = small.checkpoint()
    assert log < 1000                       # commits checkpointed themselves past 200 pages (the log restarted)
    small.close()


def test_the_thread_checkpoints_and_ends_with_its_store(tmp_path, monkeypatch) -> None:
    import gc
    import time

    import serving.state.sqlite

    monkeypatch.setattr(serving.state.sqlite, "CHECKPOINT_SECONDS", 0.05)
    state = SQLiteState(tmp_path / "state.db")
    _log_many(state, 3000)
    deadline = time.monotonic() + 10
    while getattr(state, "last_checkpoint", (0, 0, 0))[1] < 1000 and time.monotonic() < deadline:
        time.sleep(0.02)
    busy, log, copied = state.last_checkpoint
    assert log > 1000 and copied == log
    thread = state._checkpointer
    del state
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_redis_store_from_before_losses_were_kept_finds_them_in_its_feedback(tmp_path, redis_server) -> None:
    import redis

    url = _url("redis", tmp_path, redis_server)
    store = open_state(url)
    store.feedback([_loss("x1", "u", NOW - DAY, "sms"), _loss("x2", "u", NOW - 2 * DAY, "sms", "bounce"),
                    _send("s1", "u", NOW - DAY)])
    raw = redis.Redis.from_url(redis_server)
    raw.delete(store._key("lost", "u"), store._key("lost", "ready"))      # as an older nbm left the database
    assert open_state(url).contacts("u", NOW, LOOKBACK).lost == {"sms": NOW - 2 * DAY}
    raw.delete(store._key("lost", "u"))
    assert open_state(url).contacts("u", NOW, LOOKBACK).lost == {}        # once per database, not every open
    store.feedback([_loss("y1", "w", NOW + 3, "sms"), _loss("y2", "w", NOW + 1, "sms")])    # exact, as feedback is
    raw.hset(store._key("lost", "w"), "sms", str(NOW + 2))      # a later loss stored: the backfill's rule mends it
    raw.delete(store._key("lost", "ready"))
    assert open_state(url).contacts("w", NOW, LOOKBACK).lost == {"sms": NOW + 1}


# -- live users: facts, per-user feedback, the change log ---------------------------------------------------------
def test_user_facts_merge_field_by_field_and_each_upsert_is_a_change(store) -> None:
    start, _ = store.changes_since(0)
    assert store.upsert_users([{"user_id": "p", "consent": ["email"], "timezone": "Europe/Paris",
                                "attributes": {"tier": "gold", "points": 3.0}}]) == 1
    assert store.upsert_users([{"user_id": "p", "consent": [], "attributes": {"points": None}},
                               {"user_id": "q", "signup_at": NOW}]) == 2
    assert store.user_facts(["p", "q", "nobody"]) == {
        "p": {"consent": [], "timezone": "Europe/Paris", "attributes": {"tier": "gold", "points": None}},
        "q": {"signup_at": NOW}}
    assert store.users_table() == store.user_facts(["p", "q"])
    seq, users = store.changes_since(start)
    assert seq == start + 3 and users == ["p", "q"]
    assert store.changes_since(seq) == (seq, [])


def test_accepted_feedback_is_kept_per_user_and_logged_as_changes_once(store) -> None:
    start, _ = store.changes_since(0)
    events = [_send("e1", "a", NOW - DAY), _loss("e2", "a", NOW - 3, "sms"), _send("e3", "b", NOW - 2 * DAY)]
    assert store.feedback(events) == (3, 0)
    assert store.feedback(events[:1]) == (0, 1)                # a duplicate is no change
    seq, users = store.changes_since(start)
    assert sorted(users) == ["a", "b"] and store.changes_since(seq) == (seq, [])
    mine = store.user_events(["a"])
    assert mine["event_id"].tolist() == ["e1", "e2"]
    assert mine["timestamp"].tolist() == [pd.Timestamp(NOW - DAY, tz="UTC"), pd.Timestamp(NOW - 3, tz="UTC")]
    assert list(mine.columns) == list(store.feedback_events().columns)
    assert store.user_events(["nobody"]).empty


def test_a_state_file_from_before_live_users_logs_its_feedback_users_as_changes(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    SQLiteState(path).feedback([_send("s1", "u", NOW - DAY), _send("s2", "v", NOW - DAY)])
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE changes")
        db.execute("DROP TABLE users")
    store = SQLiteState(path)
    assert sorted(store.changes_since(0)[1]) == ["u", "v"]
    assert store.user_events(["u"])["event_id"].tolist() == ["s1"]


def test_a_redis_store_from_before_live_users_finds_its_feedback_per_user(tmp_path, redis_server) -> None:
    import redis

    url = _url("redis", tmp_path, redis_server)
    store = open_state(url)
    store.feedback([_send("s1", "u", NOW - DAY), _send("s2", "u", NOW - 2 * DAY), _send("s3", "v", NOW)])
    raw = redis.Redis.from_url(redis_server)
    raw.delete(store._key("uev", "u"), store._key("uev", "v"), store._key("changes"), store._key("live", "ready"))
    again = open_state(url)
    assert sorted(again.changes_since(0)[1]) == ["u", "v"]
    assert again.user_events(["u"])["event_id"].tolist() == ["s2", "s1"]
    store.feedback([_send("s4", "u", NOW)])
    raw.delete(store._key("live", "ready"))          # a second backfill pushes s1–s4 again: each is read once
    assert open_state(url).user_events(["u"])["event_id"].tolist() == ["s2", "s1", "s4"]


def test_catalog_entries_merge_field_by_field_and_raise_the_version(store) -> None:
    assert store.catalog_version() == 0 and store.messages_table() == (0, {})
    assert store.upsert_messages([{"message_id": "m9", "topic": "t", "channels": ["email"], "tags": [],
                                   "end_at": NOW}]) == 1
    assert store.upsert_messages([{"message_id": "m9", "channels": ["sms", "push"], "value": 2.0},
                                  {"message_id": "m1", "end_at": NOW - DAY}]) == 2
    version, table = store.messages_table()
    assert version == store.catalog_version() == 3
    assert table == {"m9": {"topic": "t", "channels": ["sms", "push"], "tags": [], "end_at": NOW, "value": 2.0},
                     "m1": {"end_at": NOW - DAY}}
