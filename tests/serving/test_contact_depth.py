"""The deeper contact policy end to end (topic caps, outcome-based suppression, mandatory messages): the
answers of ``k = 3`` slates — whose later items are judged again with the earlier ones — keep every rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

NOW = pd.Timestamp("2026-10-29T09:30:00Z")


def test_slates_keep_topic_caps_suppression_and_mandatory_send_times(served_world, tmp_path, monkeypatch) -> None:
    from decision.contact import ignored_pairs
    from nbm.config import ChannelCaps, load_config
    from serving.engine import Engine, EngineSettings

    data, home = served_world
    monkeypatch.setenv("NBM_HOME", str(home))
    messages = pd.read_parquet(data / "messages.parquet")
    topics = messages["topic"].astype(str).value_counts().index.tolist()
    mandatory = str(messages.loc[messages["channels"].map(lambda c: "email" in c), "message_id"].iloc[0])
    config = load_config().model_copy(update={"state_url": f"sqlite:///{tmp_path / 'depth.db'}"})
    policy = config.contact_policy.model_copy(update={
        "topic_caps": {topics[0]: ChannelCaps(daily=1, weekly=1)}, "ignored_sends": 1, "ignored_within_days": 30,
        "ignored_pause_days": 30, "mandatory_messages": [mandatory], "daily_cap_per_channel": 3,
        "weekly_cap_per_channel": 9, "weekly_cap_total": 20, "min_gap_hours": 0, "message_cooldown_days": 0})
    config = config.model_copy(update={"contact_policy": policy,
                                       "service": config.service.model_copy(update={"live_refresh_seconds": 0.0})})
    engine = Engine(config, EngineSettings(data=data, explorer="greedy"))
    store = engine.store
    topic_of = dict(zip(messages["message_id"].astype(str), messages["topic"].astype(str)))
    users = engine.dataset.users
    chosen = users.loc[users["consent"].map(len) > 0, "user_id"].astype(str).head(120).tolist()
    answers = engine.recommend_many([{"user_id": u, "now": NOW, "k": 3, "explore": False} for u in chosen])
    voc = store.globals.vocabulary
    items = [(a["user_id"], i) for a in answers for i in a["items"]]
    assert len(items) > 100
    codes = store.history.user_codes(np.array([u for u, _ in items], dtype=object))
    paused = ignored_pairs(store, codes, voc.messages.get_indexer([i["message_id"] for _, i in items]),
                           np.full(len(items), NOW.value, dtype=np.int64))
    # No paused message is answered; a mandatory one passes every rule, the pause included.
    assert not (paused & (np.array([i["message_id"] for _, i in items]) != mandatory)).any()
    reasons = {s["reason"] for a in answers for s in a["suppressed"]}
    assert "suppressed_ignored" in reasons
    assert any(i["message_id"] == mandatory for _, i in items)
    for answer in answers:
        capped = [i for i in answer["items"] if topic_of[i["message_id"]] == topics[0]]
        assert len(capped) <= 1                                         # one of the capped topic a day, at most
        for item in answer["items"]:
            if item["message_id"] == mandatory:
                assert pd.Timestamp(item["send_at"]) == NOW             # at the decision's time, not a slot
