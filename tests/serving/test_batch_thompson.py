"""`nbm recommend --explorer thompson`: the explorer's statistics come from the data directory's history."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nbm.config import AttributionConfig, load_config

T0 = pd.Timestamp("2026-10-01T00:00:00Z")
HOUR, DAY = pd.Timedelta(hours=1), pd.Timedelta(days=1)


def _events(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["event_id", "timestamp", "user_id", "event_type", "message_id", "channel",
                                        "decision_id"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    frame["propensity"], frame["value"] = np.nan, np.nan
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


EVENTS = _events([
    ("s1", T0, "u1", "send", "m1", "email", "d1"),
    ("s2", T0 + HOUR, "u2", "send", "m1", "email", None),
    ("s3", T0 + 2 * HOUR, "u3", "send", "m1", "email", None),
    ("s4", T0, "u1", "send", "m2", "sms", None),
    ("c1", T0 + DAY, "u1", "convert", None, None, "d1"),          # by decision id → s1
    ("c2", T0 + 2 * DAY, "u2", "convert", "m1", None, None),      # by window (7 days) → s2
    ("c3", T0 + 30 * DAY, "u3", "convert", "m1", None, None),     # past the window: nobody's
    ("k1", T0 + HOUR, "u1", "click", "m2", "sms", None),          # not the target
    ("s5", T0 + 41 * DAY, "u1", "send", "m1", "email", None),     # after `now`
    ("c4", T0 + 41 * DAY, "u1", "convert", "m2", None, None),     # after `now`
])
NOW = (T0 + 40 * DAY).value


@pytest.mark.parametrize(("target", "expected"), [
    ("convert", {("m1", "email"): (2, 1), ("m2", "sms"): (0, 1)}),
    ("click", {("m1", "email"): (0, 3), ("m2", "sms"): (1, 0)}),
])
def test_history_statistics_count_sends_and_their_attributed_target_outcomes_as_of_now(target, expected) -> None:
    from serving.batch_scoring import history_statistics

    assert history_statistics(EVENTS, AttributionConfig(), target, NOW) == expected
    assert history_statistics(EVENTS, AttributionConfig(), target, T0.value) == {}       # nothing before the first send


def test_batch_thompson_decides_with_the_history_statistics(served_world, tmp_path, monkeypatch) -> None:
    import decision.decide
    import serving.batch_scoring as batch
    from nbm.dataset import load_dataset
    from serving.registry import load_model

    data, home = served_world
    config = load_config(environ={"NBM_HOME": str(home)})
    dataset, _ = load_dataset(data, config)
    model = load_model("models:/nbm-ranker@champion", config)
    now = pd.Timestamp("2026-10-29T00:00:00Z")
    expected = batch.history_statistics(dataset.events, config.attribution, model.artifact.target, now.value)
    assert sum(s for s, _ in expected.values()) > 0 and sum(f for _, f in expected.values()) > 0
    seen = []
    decide = decision.decide.arm_decide
    monkeypatch.setattr(decision.decide, "arm_decide",
                        lambda *a, **kw: seen.append(kw.get("statistics")) or decide(*a, **kw))
    out = tmp_path / "thompson.jsonl"
    users = dataset.users["user_id"].to_numpy(dtype=object)[:60]
    batch.recommend_all(dataset, config, model.artifact, model.version, now, out, users=users, explorer="thompson")
    assert seen and all(statistics == expected for statistics in seen)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    items = [i for line in lines for i in line["items"]]
    assert items and all(0 < i["propensity"] <= 1 for i in items)
    # Each estimated propensity states its standard error: √(p(1 − p)/samples), at most 0.5/√samples.
    samples = config.explorer.thompson_samples
    for i in items:
        expected_error = np.sqrt(i["propensity"] * (1 - i["propensity"]) / samples)
        assert i.get("propensity_error", 0.0) == pytest.approx(expected_error, abs=2e-6)   # absent: exactly 0
        assert i.get("propensity_error", 0.0) <= 0.5 / np.sqrt(samples) + 1e-6
    greedy = tmp_path / "greedy.jsonl"
    batch.recommend_all(dataset, config, model.artifact, model.version, now, greedy, users=users, explorer="greedy")
    exact = [i for line in map(json.loads, greedy.read_text().splitlines()) for i in line["items"]]
    assert exact and not any("propensity_error" in i for i in exact)      # exact propensities state none
