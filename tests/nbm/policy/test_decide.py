"""decide(): arbitration, send time, threshold, suppression reasons and the explorer's propensity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nbm.config import ContactPolicyConfig
from nbm.policy.contact import SendHistory
from nbm.policy.decide import ScoredCandidates, decide
from nbm.policy.explore import EpsilonGreedy, Greedy

NOW = pd.Timestamp("2026-10-14T06:00:00Z")
POLICY = ContactPolicyConfig()
EMPTY = SendHistory.of(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, object))


def _candidates(rows):
    """rows: (message, channel, hour offset from NOW, probability, value)."""
    m, c, h, p, v = zip(*rows)
    return ScoredCandidates(np.array(m, object), np.array(c, object),
                            np.array([(NOW + pd.Timedelta(hours=x)).value for x in h], np.int64),
                            np.array(p, float), np.array(v, float))


def test_best_expected_value_wins_at_its_best_slot() -> None:
    rows = [("m1", "email", 4, 0.02, 100.0), ("m1", "email", 10, 0.03, 100.0),   # m1 email: best at +10 h
            ("m2", "email", 4, 0.10, 10.0), ("m2", "sms", 4, 0.01, 10.0)]
    decision = decide(_candidates(rows), EMPTY, "UTC", POLICY, Greedy(), np.random.default_rng(0))
    item = decision.items[0]
    assert (item.message_id, item.channel) == ("m1", "email")
    assert item.send_at == NOW + pd.Timedelta(hours=10) and item.propensity == 1.0
    assert item.score == 0.03


def test_nothing_below_the_threshold_with_a_reason() -> None:
    decision = decide(_candidates([("m1", "email", 4, 0.001, 10.0)]), EMPTY, "UTC", POLICY, Greedy(),
                      np.random.default_rng(0), threshold=0.05)
    assert decision.items == [] and decision.reason == "below_threshold"


def test_suppressed_pairs_are_listed_with_their_reason() -> None:
    history = SendHistory.of(np.array([(NOW - pd.Timedelta(hours=2)).value]), np.array(["sms"], object),
                             np.array(["m9"], object))
    rows = [("m1", "sms", 4, 0.5, 10.0), ("m2", "email", 14, 0.1, 10.0)]
    decision = decide(_candidates(rows), history, "UTC", POLICY, Greedy(), np.random.default_rng(0))
    assert [(s.message_id, s.channel, s.reason) for s in decision.suppressed] == [("m1", "sms", "frequency_cap_daily")]
    assert decision.items[0].message_id == "m2"
    all_blocked = decide(_candidates(rows[:1]), history, "UTC", POLICY, Greedy(), np.random.default_rng(0))
    assert all_blocked.items == [] and all_blocked.reason == "all_suppressed"


def test_quiet_hours_move_the_chosen_send_time() -> None:
    decision = decide(_candidates([("m1", "email", 16, 0.5, 10.0)]), EMPTY, "UTC", POLICY, Greedy(),
                      np.random.default_rng(0))  # 22:00 UTC → 08:00 the next day
    assert decision.items[0].send_at == pd.Timestamp("2026-10-15T08:00:00Z")


def test_explorer_propensity_is_returned_and_frequencies_match() -> None:
    rows = [("m1", "email", 4, 0.05, 10.0), ("m2", "email", 4, 0.04, 10.0), ("m3", "push", 4, 0.01, 10.0)]
    explorer = EpsilonGreedy(0.3)
    rng = np.random.default_rng(1)
    picks = [decide(_candidates(rows), EMPTY, "UTC", POLICY, explorer, rng).items[0] for _ in range(10_000)]
    frequency = pd.Series([p.message_id for p in picks]).value_counts(normalize=True)
    propensity = {p.message_id: p.propensity for p in picks}
    for message in ("m1", "m2", "m3"):
        assert abs(frequency[message] - propensity[message]) < 0.01
    assert propensity["m1"] == 0.7 + 0.1


def test_no_candidates() -> None:
    empty = ScoredCandidates(*(np.zeros(0, t) for t in (object, object, np.int64, float, float)))
    assert decide(empty, EMPTY, "UTC", POLICY, Greedy(), np.random.default_rng(0)).reason == "no_eligible_candidate"


def test_k_items_are_distinct_and_respect_the_caps_together() -> None:
    rows = [("m1", "email", 4, 0.5, 10.0), ("m2", "email", 6, 0.4, 10.0), ("m3", "sms", 5, 0.3, 10.0),
            ("m4", "push", 30, 0.2, 10.0), ("m5", "push", 31, 0.1, 10.0)]
    # Daily cap 1 per channel: m1 and m2 (both email within 24 h) cannot both be sent; min gap 0.
    policy = ContactPolicyConfig(min_gap_hours=0)
    decision = decide(_candidates(rows), EMPTY, "UTC", policy, Greedy(), np.random.default_rng(0), k=3)
    picked = [(i.message_id, i.channel) for i in decision.items]
    assert picked == [("m1", "email"), ("m3", "sms"), ("m4", "push")]
    assert all(i.propensity == 1.0 for i in decision.items)
    # With the default 12-hour minimum gap, the second item must be 12 h after the first.
    gapped = decide(_candidates(rows), EMPTY, "UTC", POLICY, Greedy(), np.random.default_rng(0), k=3)
    times = sorted(i.send_at for i in gapped.items)
    assert len(gapped.items) == 2 and times[1] - times[0] >= pd.Timedelta(hours=12)
