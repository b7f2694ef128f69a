"""The contact policy judged per (decision, channel, slot) plus the rows of messages sent before equals the
policy on every candidate row (decision/contact.py ``pair_contact``, through ``contact_verdict``)."""

from __future__ import annotations


import numpy as np
import pandas as pd

from features.pipeline import FeatureStore
from decision.contact import pair_contact
from decision.pairs import expand_pairs
from decision.contact import _contact_every_row, contact_verdict
from decision.histories import send_histories
from decision.pairs import expand_many
from nbm.config import ContactPolicyConfig
from nbm.policy.contact import SendHistories

HOUR = 3_600 * 10**9


def _with_planned(histories: SendHistories, now: np.ndarray, rng: np.random.Generator, store) -> SendHistories:
    """Add sends planned after each decision's time (earlier answers' items), as the service has them."""
    n = len(now)
    extra = rng.integers(0, n, 3 * n)
    times = now[extra] + rng.integers(1, 30, len(extra)) * HOUR
    channels = rng.choice(np.asarray(store.globals.vocabulary.channels, dtype=object), len(extra))
    messages = rng.choice(np.asarray(store.globals.vocabulary.messages, dtype=object), len(extra))
    group = np.concatenate([histories.group, extra])
    order = np.lexsort((np.concatenate([histories.times, times]), group))
    return SendHistories(group[order], np.concatenate([histories.times, times])[order],
                         np.concatenate([np.asarray(histories.channels, object), channels])[order],
                         np.concatenate([np.asarray(histories.messages, object), messages])[order])


def _both_paths(store, users: np.ndarray, stamps: pd.Series, quantile: float, size: int, rng: np.random.Generator):
    """``size`` random users decided around the log's ``quantile`` time (at several times, with planned sends):
    the grid's verdicts (``contact_verdict``) checked equal to the policy on every row; (users, times, rows,
    histories, every row's verdict)."""
    t = int(stamps.quantile(quantile).value)
    chosen = users[rng.integers(0, len(users), size)]
    now = t + rng.integers(0, 48, len(chosen)) * HOUR // 4        # decisions at several times
    ex = expand_many(store, chosen, now)
    histories = _with_planned(send_histories(store, chosen, now, 11.0), now, rng, store)
    fast, every = contact_verdict(store, ex, histories), _contact_every_row(store, ex, histories)
    np.testing.assert_array_equal(fast.allowed, every.allowed)
    np.testing.assert_array_equal(fast.send_at, every.send_at)
    assert fast.reason.tolist() == every.reason.tolist()
    return chosen, now, ex, histories, every


def test_grid_verdicts_equal_the_policy_on_every_row(dataset, config) -> None:
    rng = np.random.default_rng(8)
    # Tight caps and a long cooldown, so that every rule decides some rows.
    policy = ContactPolicyConfig(daily_cap_per_channel=1, weekly_cap_per_channel=3, weekly_cap_total=5,
                                 min_gap_hours=6, message_cooldown_days=10, quiet_hours_start=21,
                                 quiet_hours_end=8)
    store = FeatureStore.build(dataset, config.model_copy(update={"contact_policy": policy}))
    users = dataset.users["user_id"].to_numpy(dtype=object)
    stamps = dataset.events["timestamp"]
    seen = set()
    for quantile, size in ((0.5, 150), (0.8, 150), (0.97, 150), (0.9, 1), (0.6, 20)):   # grid and every row
        chosen, now, ex, histories, every = _both_paths(store, users, stamps, quantile, size, rng)
        seen |= set(every.reason.tolist())
        # The verdicts laid out per (pair, slot) are the same, eligible slots only.
        pairs = expand_pairs(store, chosen, now)
        laid_out = pair_contact(store, pairs, histories)
        rows, p, s = pairs.expanded()
        np.testing.assert_array_equal(rows.rows.send_at, ex.rows.send_at)
        assert not laid_out.allowed[~pairs.ok].any()
        assert laid_out.rows(p, s).reason.tolist() == every.reason.tolist()
        np.testing.assert_array_equal(laid_out.rows(p, s).send_at, every.send_at)
        # A subset of the rows (the service's request filters) is judged the same too.
        keep = np.flatnonzero(rng.random(len(ex)) < 0.3)
        part = contact_verdict(store, ex.take(keep), histories)
        assert part.reason.tolist() == every.reason[keep].tolist()
    assert seen >= {"", "frequency_cap_daily", "frequency_cap_weekly", "frequency_cap_total", "min_gap", "cooldown"}


def test_a_send_a_fraction_of_a_millisecond_outside_a_window_is_outside_on_both_paths(dataset, config) -> None:
    """The windows' millisecond buckets start at a whole millisecond, whatever the earliest instant of a call:
    a past send 24 h + 0.5 ms before a slot does not count for the daily cap, on the grid or on every row."""
    day = 24 * HOUR
    policy = ContactPolicyConfig(daily_cap_per_channel=1, weekly_cap_per_channel=99, weekly_cap_total=99,
                                 min_gap_hours=0, message_cooldown_days=0, quiet_hours_start=0, quiet_hours_end=0)
    store = FeatureStore.build(dataset, config.model_copy(update={"contact_policy": policy}))
    users = dataset.users["user_id"].to_numpy(dtype=object)[:60]
    now = int(dataset.events["timestamp"].max().value) + np.arange(60) * day // 4
    ex = expand_many(store, users, now)
    last = np.flatnonzero(ex.group == 59)
    first = last[np.argmin(ex.rows.send_at[last])]
    at = int(ex.rows.send_at[first])
    histories = SendHistories(np.array([59]), np.array([at - day - 500_000]),
                              np.array([ex.rows.channel[first]], object), np.array(["elsewhere"], object))
    for rows in (ex, ex.take(last)):
        on_slot = rows.rows.send_at == at
        for verdict in (contact_verdict(store, rows, histories), _contact_every_row(store, rows, histories)):
            assert verdict.allowed[on_slot].all()


def _topical(dataset, config, by: str = "message"):
    """A store whose policy has topic caps, outcome-based suppression and mandatory messages."""
    from nbm.config import ChannelCaps

    topics = sorted(dataset.messages["topic"].astype(str).unique())
    mandatory = str(dataset.messages["message_id"].iloc[-1])
    policy = ContactPolicyConfig(daily_cap_per_channel=2, weekly_cap_per_channel=4, weekly_cap_total=8,
                                 min_gap_hours=2, message_cooldown_days=0.5, quiet_hours_start=21, quiet_hours_end=8,
                                 topic_caps={topics[0]: ChannelCaps(daily=1, weekly=2), topics[1]: ChannelCaps(weekly=1)},
                                 ignored_sends=2, ignored_within_days=21, ignored_pause_days=10, ignored_by=by,
                                 mandatory_messages=[mandatory])
    return FeatureStore.build(dataset, config.model_copy(update={"contact_policy": policy})), mandatory


def test_topic_caps_suppression_and_mandatory_messages_agree_on_the_grid_and_every_row(dataset, config) -> None:
    rng = np.random.default_rng(12)
    for by in ("message", "topic"):
        store, mandatory = _topical(dataset, config, by)
        users = dataset.users["user_id"].to_numpy(dtype=object)
        stamps = dataset.events["timestamp"]
        seen = set()
        for quantile, size in ((0.6, 200), (0.95, 200), (0.9, 3)):
            _, _, ex, _, every = _both_paths(store, users, stamps, quantile, size, rng)
            seen |= set(every.reason.tolist())
            # A mandatory message is never held back, and goes at the decision's time when it is live then.
            own = np.asarray(ex.rows.message_id, dtype=object) == mandatory
            row = dataset.messages.set_index("message_id").loc[mandatory]
            start = -np.inf if pd.isna(row["start_at"]) else pd.Timestamp(row["start_at"]).value
            end = np.inf if pd.isna(row["end_at"]) else pd.Timestamp(row["end_at"]).value
            live = (ex.rows.as_of >= start) & (ex.rows.as_of < end)
            assert every.allowed[own].all()
            assert (every.send_at[own & live] == ex.rows.as_of[own & live]).all()
            assert (every.send_at[own & ~live] == ex.rows.send_at[own & ~live]).all()
        assert {"topic_cap_daily", "topic_cap_weekly", "suppressed_ignored"} <= seen, (by, seen)


def test_suppression_follows_its_definition(dataset, config) -> None:
    """``ignored_pairs`` against the rule computed from the events table, pair by pair: L the last event of the
    user with the message before now; paused when now − L < P, at least N sends in [L − D, L] and no open or
    click in [L − D, now)."""
    from decision.contact import ignored_pairs

    store, _ = _topical(dataset, config)
    policy = store.config.contact_policy
    events = dataset.events[dataset.events["message_id"].notna()]
    rng = np.random.default_rng(4)
    sample = events.iloc[rng.integers(0, len(events), 400)]
    now = (sample["timestamp"] + pd.to_timedelta(rng.integers(0, 20 * 24, len(sample)), unit="h")).to_numpy(
        dtype="datetime64[ns]").astype(np.int64)
    users, messages = sample["user_id"].to_numpy(dtype=object), sample["message_id"].to_numpy(dtype=object)
    voc = store.globals.vocabulary
    got = ignored_pairs(store, store.history.user_codes(users), voc.messages.get_indexer(messages), now)
    day = 86_400 * 10**9
    by_pair = {k: g for k, g in events.groupby(["user_id", "message_id"])}
    expected = []
    for u, m, t in zip(users, messages, now):
        g = by_pair[(u, m)]
        times = g["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        kinds = g["event_type"].to_numpy(dtype=object)
        before = times < t
        if not before.any():
            expected.append(False)
            continue
        last = times[before].max()
        start = last - int(policy.ignored_within_days * day)
        sends = ((kinds == "send") & (times >= start) & (times <= last)).sum()
        engaged = (np.isin(kinds, ["open", "click"]) & (times >= start) & (times < t)).sum()
        expected.append(bool(t - last < policy.ignored_pause_days * day and sends >= policy.ignored_sends
                             and engaged == 0))
    expected = np.array(expected)
    assert 10 <= expected.sum() <= len(expected) - 10          # both sides of the rule are exercised
    np.testing.assert_array_equal(got, expected)
