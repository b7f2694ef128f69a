"""decide_batch() and the batched contact policy agree with one-user decide() decision by decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.config import ContactPolicyConfig
from nbm.policy.contact import SendHistories, SendHistory, apply_contact_policy, apply_contact_policy_batch
from nbm.policy.decide import ScoredCandidates, decide, decide_batch
from nbm.policy.explore import EpsilonGreedy, Greedy, Softmax

NOW = pd.Timestamp("2026-03-28T06:00:00Z").value   # a DST weekend in Europe
HOUR = 3_600 * 10**9
ZONES = np.array(["UTC", "Europe/Paris", "America/New_York", "Asia/Shanghai"], dtype=object)
POLICY = ContactPolicyConfig(weekly_cap_per_channel=2, weekly_cap_total=3, min_gap_hours=20)


def _world(seed: int, n_groups: int = 60):
    rng = np.random.default_rng(seed)
    messages = np.array([f"m{i}" for i in range(8)], dtype=object)
    channels = np.array(["email", "sms", "push"], dtype=object)
    sizes = rng.integers(0, 12, n_groups)
    group = np.repeat(np.arange(n_groups), sizes)
    n = len(group)
    cands = ScoredCandidates(messages[rng.integers(0, 8, n)], channels[rng.integers(0, 3, n)],
                             NOW + rng.integers(1, 30, n) * HOUR, rng.random(n), rng.choice([1.0, 5.0, 20.0], n))
    h_sizes = rng.integers(0, 6, n_groups)
    h_group = np.repeat(np.arange(n_groups), h_sizes)
    m = len(h_group)
    times = NOW - rng.integers(0, 10 * 24, m) * HOUR
    order = np.lexsort((times, h_group))
    histories = SendHistories(h_group[order], times[order], channels[rng.integers(0, 3, m)][order],
                              messages[rng.integers(0, 8, m)][order])
    zones = ZONES[rng.integers(0, len(ZONES), n_groups)]
    return group, cands, histories, zones


def _one(cands: ScoredCandidates, rows: np.ndarray) -> ScoredCandidates:
    return ScoredCandidates(*(np.asarray(getattr(cands, f))[rows] for f in ("message_id", "channel", "send_at",
                                                                            "probability", "value")))


def _history(histories: SendHistories, g: int) -> SendHistory:
    h = histories.group == g
    return SendHistory.of(histories.times[h], histories.channels[h], histories.messages[h])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_contact_policy_equals_per_user(seed: int) -> None:
    group, cands, histories, zones = _world(seed)
    batch = apply_contact_policy_batch(group, cands.channel, cands.message_id, cands.send_at, zones, histories, POLICY)
    assert batch.reason.astype(str).tolist().count("") < len(group)   # some rules fire
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        one = apply_contact_policy(cands.channel[rows], cands.message_id[rows], cands.send_at[rows],
                                   _history(histories, g), str(zones[g]), POLICY)
        assert one.reason.tolist() == batch.reason[rows].tolist()
        assert one.send_at.tolist() == batch.send_at[rows].tolist()


@pytest.mark.parametrize("explorer", [Greedy(), EpsilonGreedy(0.2), Softmax(0.3)], ids=lambda e: e.name)
def test_batched_decisions_equal_per_user_decisions(explorer) -> None:
    group, cands, histories, zones = _world(7)
    n_groups = int(group.max()) + 1
    batch = decide_batch(group, n_groups, cands, histories, zones, POLICY, explorer, np.random.default_rng(0),
                         threshold=2.0)
    assert {"", "below_threshold", "no_eligible_candidate", "all_suppressed"} >= set(batch.reason)
    assert (batch.reason == "").sum() > n_groups // 3
    for g in range(n_groups):
        rows = np.flatnonzero(group == g)
        one = decide(_one(cands, rows), _history(histories, g), str(zones[g]), POLICY, explorer,
                     np.random.default_rng(0), threshold=2.0)
        assert one.reason == batch.reason[g]
        pairs = batch.pair_group == g
        if one.items:
            # Same probabilities over pairs; the chosen pair carries its propensity.
            probability = batch.pair_probability[pairs]
            assert probability.sum() == pytest.approx(1.0)
            chosen = batch.chosen[g]
            assert batch.propensity[g] == pytest.approx(probability[batch.pair_row[pairs] == chosen][0])
            if explorer.name == "greedy":
                item = one.items[0]
                assert (item.message_id, item.channel) == (cands.message_id[chosen], cands.channel[chosen])
                assert item.send_at.value == batch.send_at[chosen]
        else:
            assert (batch.pair_probability[pairs] == 0).all() and batch.chosen[g] == -1


def test_batch_frequencies_match_propensities() -> None:
    group, cands, histories, zones = _world(3, n_groups=5)
    explorer = Softmax(0.5)
    rng = np.random.default_rng(11)
    draws = [decide_batch(group, 5, cands, histories, zones, POLICY, explorer, rng).chosen for _ in range(20_000)]
    chosen = np.stack(draws)
    batch = decide_batch(group, 5, cands, histories, zones, POLICY, explorer, rng)
    for g in range(5):
        pairs = np.flatnonzero(batch.pair_group == g)
        for i in pairs:
            frequency = (chosen[:, g] == batch.pair_row[i]).mean()
            assert abs(frequency - batch.pair_probability[i]) < 0.01


def test_rows_sorted_by_pair_take_the_same_best_rows_as_the_sort() -> None:
    """decide_batch's best slot per pair: the run-by-run maximum (rows sorted by pair, ``pair`` given)
    equals the sort by (pair, −value), ties included (probabilities from a few values tie often)."""
    group, cands, histories, zones = _world(5)
    rng = np.random.default_rng(5)
    probability = rng.choice([0.01, 0.02, 0.05], len(group))
    sorted_cands = ScoredCandidates(cands.message_id, cands.channel, cands.send_at, probability, cands.value)
    _, codes = np.unique(np.char.add(group.astype(str).astype(object), cands.message_id + "|" + cands.channel),
                         return_inverse=True)
    order = np.lexsort((codes, group))                      # sorted by (decision, pair)
    group, codes = group[order], codes[order]
    sorted_cands = ScoredCandidates(*(np.asarray(getattr(sorted_cands, f))[order] for f in
                                      ("message_id", "channel", "send_at", "probability", "value")))
    pair_code = group * (codes.max() + 1) + codes           # increasing with the decision
    with_pair = ScoredCandidates(sorted_cands.message_id, sorted_cands.channel, sorted_cands.send_at,
                                 sorted_cands.probability, sorted_cands.value, pair=pair_code)
    n = int(group.max()) + 1
    a = decide_batch(group, n, sorted_cands, histories, zones, POLICY, Greedy(), np.random.default_rng(0))
    b = decide_batch(group, n, with_pair, histories, zones, POLICY, Greedy(), np.random.default_rng(0))
    assert len(a.pair_row) > 100
    # The same best row of every pair (the pairs' order differs: first seen against the codes').
    np.testing.assert_array_equal(np.sort(a.pair_row), np.sort(b.pair_row))
    np.testing.assert_array_equal(b.pair_row, np.sort(b.pair_row))
    assert (b.pair_row[1:] != b.pair_row[:-1]).all()
    np.testing.assert_array_equal(a.chosen >= 0, b.chosen >= 0)
    value = sorted_cands.probability * sorted_cands.value
    np.testing.assert_array_equal(value[a.chosen[a.chosen >= 0]], value[b.chosen[b.chosen >= 0]])


def test_a_send_whose_cost_outweighs_its_value_is_never_made_not_even_by_exploration() -> None:
    """With a cost per row, expected value = p × v − cost: a decision whose best pair is below the threshold
    sends nothing (below_threshold), and the explorer never picks a pair below it in the others."""
    from dataclasses import replace

    group, cands, histories, zones = _world(5, n_groups=200)
    rng = np.random.default_rng(1)
    cost = np.where(rng.random(len(group)) < 0.5, 100.0, 0.0)          # half the rows are never worth it
    costly = replace(cands, cost=cost)
    expected = costly.expected()
    for seed in range(20):
        batch = decide_batch(group, 200, costly, histories, zones, POLICY, EpsilonGreedy(1.0),
                             np.random.default_rng(seed))
        chosen = batch.chosen[batch.chosen >= 0]
        assert len(chosen) and (expected[chosen] >= 0).all()
        nothing_worth_it = [g for g in range(200) if (group == g).any()
                            and (expected[group == g] < 0).all()]
        assert all(batch.reason[g] in ("below_threshold", "all_suppressed") for g in nothing_worth_it)
    assert nothing_worth_it
