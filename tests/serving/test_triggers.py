"""Triggered decisions: a request's ``context.trigger`` restricts its candidates to the messages configured
(``[triggers]``) or tagged (``trigger:EVENT``) for it, the answer keeps the contract, and the decision log
records the trigger."""

from __future__ import annotations

import json

import pandas as pd
import pytest

NOW = pd.Timestamp("2026-10-29T09:00:00Z")


@pytest.fixture(scope="module")
def triggered(served_world, tmp_path_factory):
    from nbm.config import TriggerConfig, load_config
    from serving.engine import Engine, EngineSettings

    data, home = served_world
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("NBM_HOME", str(home))
    messages = pd.read_parquet(data / "messages.parquet")
    topics = messages["topic"].astype(str).value_counts().index.tolist()
    config = load_config().model_copy(update={
        "state_url": f"sqlite:///{tmp_path_factory.mktemp('triggers') / 'state.db'}",
        "triggers": {"cart_abandoned": TriggerConfig(topics=topics[:2]),
                     "birthday": TriggerConfig(messages=[str(messages["message_id"].iloc[0])])}})
    engine = Engine(config, EngineSettings(data=data, explorer="greedy"))
    yield engine, messages, topics
    monkeypatch.undo()


def _users(engine, n: int) -> list[str]:
    users = engine.dataset.users
    return users.loc[users["consent"].map(len) > 0, "user_id"].astype(str).head(n).tolist()


def test_a_trigger_restricts_the_candidates_to_its_messages(triggered) -> None:
    engine, messages, topics = triggered
    topic_of = dict(zip(messages["message_id"].astype(str), messages["topic"].astype(str)))
    trigger = {"event_type": "cart_abandoned", "message_id": "sku-991"}
    answers = engine.recommend_many([{"user_id": u, "now": NOW, "k": 2, "context": {"trigger": trigger}}
                                     for u in _users(engine, 60)])
    users = _users(engine, 400)          # each call its own users: the earlier answers' items count for the caps
    items = [i for a in answers for i in a["items"]]
    assert len(items) >= 20 and {topic_of[i["message_id"]] for i in items} <= set(topics[:2])
    assert all(set(a) >= {"decision_id", "user_id", "model_version", "items", "suppressed"} for a in answers)
    # The trigger's topic narrows it; the request's own candidates too.
    narrowed = engine.recommend_many([{"user_id": u, "now": NOW, "context": {"trigger": {**trigger, "topic": topics[1]}}}
                                      for u in users[100:200]])
    assert {topic_of[i["message_id"]] for a in narrowed for i in a["items"]} == {topics[1]}
    only = str(messages.loc[messages["topic"] == topics[0], "message_id"].iloc[0])
    own = engine.recommend_many([{"user_id": u, "now": NOW, "candidates": [only], "context": {"trigger": trigger}}
                                 for u in users[200:300]])
    assert {i["message_id"] for a in own for i in a["items"]} <= {only}
    # Candidates outside the trigger's messages leave nothing eligible (not an error).
    other = str(messages.loc[~messages["topic"].isin(topics[:2]), "message_id"].iloc[0])
    none = engine.recommend_many([{"user_id": u, "now": NOW, "candidates": [other], "context": {"trigger": trigger}}
                                  for u in users[300:305]])
    assert all(not a["items"] and a["reason"] == "no_eligible_candidate" for a in none)


def test_the_decision_log_records_the_trigger(triggered, tmp_path) -> None:
    from nbm.io import read_raw_table
    from nbm.validate import validate_decisions
    from serving.export import export_log

    engine, messages, _ = triggered
    user = _users(engine, 401)[-1]
    answer = engine.recommend_many([{"user_id": user, "now": NOW, "context": {"trigger": {"event_type": "birthday"}}}])[0]
    log = engine.state.decision_log().set_index("decision_id")
    recorded = json.loads(log.loc[answer["decision_id"], "trigger"])
    assert recorded == {"event_type": "birthday", "message_id": None, "topic": None,
                        "messages": [str(messages["message_id"].iloc[0])]}
    export_log(engine.state, tmp_path)
    decisions, problems = validate_decisions(read_raw_table(tmp_path / "decisions.parquet"))
    assert sum(len(p) for p in problems) == 0
    assert json.loads(decisions.set_index("decision_id").loc[answer["decision_id"], "trigger"])["event_type"] == "birthday"


def test_an_unknown_trigger_is_a_bad_request_naming_the_field(triggered, client) -> None:
    from serving.engine import BadRequest

    engine, _, _ = triggered
    with pytest.raises(BadRequest) as refused:
        engine.recommend_many([{"user_id": "u1", "context": {"trigger": {"event_type": "no_such_thing"}}}])
    assert refused.value.field == "context.trigger.event_type"
    r = client.post("/recommend", json={"user_id": "u1", "context": {"trigger": {"event_type": "no_such_thing"}}})
    assert r.status_code == 400 and r.json()["field"] == "context.trigger.event_type", r.text
    r = client.post("/recommend_batch", json={"requests": [{"user_id": "u1"},
                                                           {"user_id": "u2", "context": {"trigger": {"event_type": "x"}}}]})
    assert r.status_code == 400 and r.json()["field"] == "requests[1].context.trigger.event_type", r.text
