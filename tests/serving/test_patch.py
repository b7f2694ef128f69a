"""Sends the snapshot lacks (feedback, planned items) patch the contact-recency features at once."""

from __future__ import annotations

import numpy as np

from features.compute import Candidates
from serving.engine import DAY_NS, HOUR_NS, PATCHED, Engine
from serving.state import Contacts

T = 100 * DAY_NS


def test_patch_counts_and_recency_per_channel_and_message() -> None:
    n = 3   # candidates: (m1, email), (m2, email), (m1, sms)
    frame = {name: np.zeros(n, dtype=np.float32) for name in PATCHED}
    for name in ("time_hours_since_contact", "uc_hours_since_contact", "um_days_since_received"):
        frame[name] = np.full(n, 1000.0, dtype=np.float32)
    contacts = Contacts(np.array([T - 3 * HOUR_NS, T - 2 * DAY_NS, T + 5 * HOUR_NS]),   # the last is planned later
                        np.array(["email", "email", "sms"], dtype=object), np.array(["m1", "m9", "m1"], dtype=object), 0)
    Engine._patch(frame, np.array(["email", "email", "sms"], dtype=object), np.array(["m1", "m2", "m1"], dtype=object),
                  contacts, T)
    np.testing.assert_allclose(frame["time_hours_since_contact"], [3, 3, 3])
    np.testing.assert_allclose(frame["user_contacts_7d"], [2, 2, 2])
    np.testing.assert_allclose(frame["uc_hours_since_contact"], [3, 3, 1000])    # no past sms send
    np.testing.assert_allclose(frame["uc_contacts_24h"], [1, 1, 0])
    np.testing.assert_allclose(frame["uc_contacts_7d"], [2, 2, 0])
    np.testing.assert_allclose(frame["um_received"], [1, 0, 1])                   # m1 once before T
    np.testing.assert_allclose(frame["um_days_since_received"], [0.125, 1000, 0.125])


def test_what_feedback_patches_equals_the_features_of_the_data_with_those_events(served_world, tmp_path, monkeypatch) -> None:
    """A send and an unsubscribe reported by ``/feedback``: every patched feature of the engine's candidates
    (contact recency and counts, channels lost and consented) equals what a store built from the data with
    those two events in the events table computes for the same rows."""
    import shutil

    import pandas as pd

    from features.pipeline import FeatureStore
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from serving.engine import LOSS_PATCHED, EngineSettings

    data, home = served_world
    monkeypatch.setenv("NBM_HOME", str(home))
    # No live refresh: the patch is what a worker decides by until its refresher has built the user's live
    # store (serving/live.py; tests/serving/test_live.py), and what planned items always go through.
    config = load_config().model_copy(update={"state_url": f"sqlite:///{tmp_path / 'patch.db'}"})
    config = config.model_copy(update={"service": config.service.model_copy(update={"live_refresh_seconds": 0.0})})
    engine = Engine(config, EngineSettings(data=data, explorer="greedy"))
    users = pd.read_parquet(data / "users.parquet")
    user = users.loc[users["consent"].map(lambda c: {"email", "sms", "push"} <= set(c)), "user_id"].iloc[7]
    now = pd.Timestamp("2026-10-29T00:00:00Z")
    message = str(engine.dataset.messages["message_id"].iloc[0])
    events = [{"event_id": "patch-send", "timestamp": (now - pd.Timedelta(hours=5)).isoformat(), "user_id": user,
               "event_type": "send", "message_id": message, "channel": "email"},
              {"event_id": "patch-unsub", "timestamp": (now - pd.Timedelta(hours=2)).isoformat(), "user_id": user,
               "event_type": "unsubscribe", "channel": "sms"}]
    assert engine.feedback(events)["accepted"] == 2

    seen = []
    featurise_columns = FeatureStore.featurise_columns

    def record(self, rows, spread=False):
        columns = featurise_columns(self, rows, spread)
        if self is engine.store:
            seen.append((rows, columns))      # patched in place before it is scored
        return columns

    monkeypatch.setattr(FeatureStore, "featurise_columns", record)
    answer = engine.recommend(user, k=1, now=now, explore=False)
    assert answer["items"] and all(i["channel"] != "sms" for i in answer["items"])
    rows, columns = seen[0]
    monkeypatch.setattr(FeatureStore, "featurise_columns", featurise_columns)

    copy = tmp_path / "world"
    shutil.copytree(data, copy)
    table = pd.read_parquet(copy / "events.parquet")
    extra = pd.DataFrame(events).assign(timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True))
    pd.concat([table, extra.astype({c: table[c].dtype for c in extra.columns if c != "timestamp"})],
              ignore_index=True).to_parquet(copy / "events.parquet")
    dataset, _ = load_dataset(copy, config)
    truth = FeatureStore.build(dataset, config).featurise_columns(rows)
    assert len(rows) >= 20
    for name in PATCHED + LOSS_PATCHED:
        np.testing.assert_allclose(np.asarray(columns[name], dtype=float), np.asarray(truth[name], dtype=float),
                                   rtol=1e-6, err_msg=name)
    assert (np.asarray(truth["user_unsubscribed_channels"]) >= 1).all()
    assert (np.asarray(truth["time_hours_since_contact"], dtype=float) == 5).all()
    # One batch, the same user at two times: each decision's rows are patched as of its own time.
    from dataclasses import replace

    later = now.value + 3 * DAY_NS
    contacts = engine.state.contacts(user, later, engine.lookback_ns)
    both = Candidates(*(np.concatenate([getattr(rows, f), getattr(rows, f)]) for f in ("user_id", "message_id", "channel")),
                      np.concatenate([rows.as_of, np.full(len(rows), later)]), np.concatenate([rows.send_at, rows.send_at + 3 * DAY_NS]),
                      user_code=np.concatenate([rows.user_code, rows.user_code]))
    base = FeatureStore.featurise_columns(engine.store, both)
    lost = [engine._channel_codes["sms"]]
    known = {(user, int(now.value)): (engine.state.contacts(user, now.value, engine.lookback_ns), lost),
             (user, later): (contacts, lost)}
    together = dict(base)
    engine._patch_many(together, both, known)
    for key, half in zip(known, (slice(0, len(rows)), slice(len(rows), None))):
        alone = {name: np.asarray(values)[half] for name, values in base.items()}
        engine._patch_many(alone, replace(both, **{f: getattr(both, f)[half] for f in
                                                   ("user_id", "message_id", "channel", "as_of", "send_at", "user_code")}),
                           {key: known[key]})
        for name in PATCHED + LOSS_PATCHED:
            np.testing.assert_array_equal(np.asarray(together[name])[half], alone[name], err_msg=name)
    assert not np.array_equal(np.asarray(together["time_hours_since_contact"])[:len(rows)],
                              np.asarray(together["time_hours_since_contact"])[len(rows):])
