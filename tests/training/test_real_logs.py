"""Logs nbm did not write (issue 39, benchmarks/real_obd.py): a week of clicks, no conversions, sends at any
second — the Open Bandit Dataset's shape. The time split follows the log's span, the policy value is in
clicks, and logged actions are matched on what their propensities cover."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nbm.cli import build_parser, main
from nbm.errors import UnusableInputError
from training.actions import PAIR, SLOT, Offered, choose
from training.fit import time_split
from training.policy_eval import _logged_keys, _probability_of_logged
from training.reward import REWARDS, reward_of

DAY = pd.Timedelta(days=1)


def _stamps(days: float) -> pd.DataFrame:
    start = pd.Timestamp("2019-11-24", tz="UTC")
    return pd.DataFrame({"timestamp": pd.date_range(start, start + days * DAY, freq="h")})


def test_windows_not_given_follow_the_span_of_the_log() -> None:
    week = _stamps(7)
    split = time_split(week)                    # fixed 7 + 7 days left no training window here
    end = week["timestamp"].max()
    assert (end - split.test_start, split.test_start - split.valid_start) == (1.75 * DAY, 1.75 * DAY)
    assert (len(split.train), len(split.valid), len(split.test)) == (84, 42, 43)
    long = time_split(_stamps(60))
    assert (long.test_start - long.valid_start, _stamps(60)["timestamp"].max() - long.test_start) == (7 * DAY, 7 * DAY)
    given = time_split(week, valid_days=1, test_days=2)
    assert (end - given.test_start, given.test_start - given.valid_start) == (2 * DAY, 1 * DAY)
    assert end - time_split(week, valid_days=3).test_start == 1.75 * DAY
    with pytest.raises(UnusableInputError, match="train window is empty"):
        time_split(week, valid_days=4, test_days=4)


def test_train_and_evaluate_take_both_windows_and_default_to_the_span() -> None:
    parser = build_parser()
    for command in ("train", "evaluate"):
        args = parser.parse_args([command, "--data", "d"])
        assert (args.valid_days, args.test_days) == (None, None)
        args = parser.parse_args([command, "--data", "d", "--valid-days", "2", "--test-days", "1.5"])
        assert (args.valid_days, args.test_days) == (2.0, 1.5)


@pytest.mark.parametrize(("types", "values", "reward"), [
    (["send", "click", "convert"], [np.nan, np.nan, 12.5], "revenue"),
    (["send", "click", "convert"], [np.nan, np.nan, np.nan], "conversions"),
    (["send", "open", "click"], [np.nan, np.nan, np.nan], "clicks"),
    (["send", "open"], [np.nan, np.nan], "revenue"),
])
def test_the_reward_follows_what_the_log_records(types, values, reward) -> None:
    assert reward_of(pd.DataFrame({"event_type": types, "value": values})) is REWARDS[reward]
    assert REWARDS["clicks"].unit == "clicks per decision"


def test_a_message_channel_action_sums_the_policy_over_its_slots() -> None:
    hour, minute = 3_600 * 10**9, 60 * 10**9
    part = pd.DataFrame({"sent": [True, True, False], "message_id": ["m1", "m2", None],
                         "channel": ["position_1", "position_2", None],
                         "send_at": [10 * hour + 7 * minute, 13 * hour + 59 * minute, 0]})
    logged = _logged_keys(part, 0)
    acts = (np.array([0, 0, 0, 1, 2]), np.array(["m1", "m1", "m3", "m2", "m1"], object),
            np.array(["position_1"] * 3 + ["position_2", "position_1"], object),
            np.array([11, 14, 11, 15, 11]) * hour, np.array([0.25, 0.5, 0.25, 1.0, 0.4]))
    # On (message, channel, hour) the 10:07 and 13:59 impressions match no slot of 11:00, 14:00 or 15:00.
    assert _probability_of_logged(part, 0, logged, acts, SLOT).tolist() == pytest.approx([0.0, 0.0, 0.6])
    assert _probability_of_logged(part, 0, logged, acts, PAIR).tolist() == pytest.approx([0.75, 1.0, 0.6])


def test_the_uniform_policys_actions_count_their_candidates_under_each_key() -> None:
    """Decision 7 offers message 1 on channel 0 at hours 10 and 13, message 2 at 10; decision 8 message 1 at 11."""
    offered = Offered.of(np.array([7, 7, 7, 8]), np.array([1, 1, 2, 1]), np.array([0, 0, 0, 0]),
                         np.array([10, 13, 10, 11]), n_messages=3, n_channels=2)
    ask = (np.array([7, 7, 7, 8, 7, 7]), np.array([1, 1, 2, 1, -1, 1]), np.array([0, 0, 0, 0, 0, 1]),
           np.array([13, 12, 10, 40, 10, 10]))
    assert offered.candidates_of(SLOT, *ask).tolist() == [1, 0, 1, 0, 0, 0]
    assert offered.candidates_of(PAIR, *ask).tolist() == [2, 2, 1, 1, 0, 0]


@pytest.mark.parametrize(("covered", "key"), [
    ({"slot": 3718, "pair": 3719}, SLOT), ({"slot": 0, "pair": 2376}, PAIR), ({"slot": 40, "pair": 100}, PAIR),
    ({"slot": 50, "pair": 100}, SLOT), ({"slot": 0, "pair": 0}, SLOT),
])
def test_actions_keep_their_slot_only_when_the_logged_sends_fall_on_nbms_slots(covered, key) -> None:
    assert choose(covered) is key


def _click_log(root, n: int = 1_600, messages: int = 8, seed: int = 3):
    """A week of impressions at any second, uniform over ``messages`` in the user's one position (propensity
    1/messages), clicks only; one user per impression."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2019-11-24", tz="UTC").value
    stamps = pd.to_datetime(np.sort(start + rng.integers(0, 7 * 86_400 * 10**9, n)), utc=True)
    ids = np.array([f"r{i:05d}" for i in range(n)], dtype=object)
    message = rng.integers(0, messages, n)
    channel = np.where(rng.random(n) < 0.5, "position_1", "position_2").astype(object)
    clicked = rng.random(n) < 0.02 + 0.04 * (message % 3 == 0)
    send = pd.DataFrame({"event_id": ids + "-send", "timestamp": stamps, "user_id": ids, "event_type": "send",
                         "message_id": [f"m{m}" for m in message], "channel": channel, "decision_id": ids,
                         "propensity": 1.0 / messages})
    click = send[clicked].assign(event_id=ids[clicked] + "-click", event_type="click", propensity=np.nan)
    data = root / "log"
    data.mkdir()
    pd.concat([send, click], ignore_index=True).to_parquet(data / "events.parquet", index=False)
    pd.DataFrame({"message_id": [f"m{m}" for m in range(messages)], "topic": "t",
                  "channels": [["position_1", "position_2"]] * messages}).to_parquet(data / "messages.parquet")
    pd.DataFrame({"user_id": ids, "consent": [[c] for c in channel]}).to_parquet(data / "users.parquet")
    (data / "nbm.toml").write_text('channels = ["position_1", "position_2"]\n')
    return data


def test_nbm_evaluate_values_an_impression_log_in_clicks_on_message_and_channel(tmp_path, monkeypatch, capsys) -> None:
    """The uniform policy over the log's own choices has weight 1 on every impression: its IPS and SNIPS are
    the log's click rate exactly. Matched on the send hour, no impression at hh:mm:ss is a slot's action
    and both would be 0; valued in revenue they would be 0 too."""
    from features.pipeline import build_training_set
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from training.fit import RankerParams, fit_ranker

    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    data = _click_log(tmp_path)
    config = load_config(data / "nbm.toml", environ={"NBM_HOME": str(tmp_path / "home")})
    rows = build_training_set(load_dataset(data, config)[0], config)
    artifact = fit_ranker(time_split(rows), RankerParams(target="click", num_boost_round=10, num_threads=1))
    model = tmp_path / "model"
    artifact.save(model)
    out = tmp_path / "evaluation.json"
    assert main(["evaluate", "--data", str(data), "--config", str(data / "nbm.toml"), "--model", str(model),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    result = json.loads(out.read_text())
    assert (result["reward"], result["actions"]) == ("clicks", "(message, channel)")
    assert result["logged_sends_eligible"]["slot"] == 0 < result["logged_sends_eligible"]["pair"]
    uniform = result["policies"]["uniform"]
    assert uniform["ips"] == pytest.approx(result["logged_mean_reward"]) and result["logged_mean_reward"] > 0
    assert uniform["snips"] == pytest.approx(result["logged_mean_reward"])
    assert uniform["ess"] == pytest.approx(result["decisions"])
    text = " ".join((printed.out + printed.err).split())
    assert "clicks per decision" in text and "revenue" not in text
    assert "actions matched on (message, channel)" in text
    assert "time split (not given: each a quarter of the log's span, at most 7 days)" in text
