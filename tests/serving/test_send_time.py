"""Every item's send time is its (message, channel)'s best allowed slot by the model — the explorer's picks
outside the top pairs and a slate's later picks included — against full enumeration of every slot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.config import load_config

NOW = pd.Timestamp("2026-10-29T00:00:00Z")


@pytest.fixture(scope="module")
def world(served_world):
    """Store, model, 40 users' decisions ×3 (pairs, histories, contact verdict) and every allowed (pair, slot)
    scored from scratch."""
    from decision.contact import pair_contact
    from decision.pairs import expand_pairs
    from features.pipeline import FeatureStore
    from decision.histories import send_histories
    from decision.scoring import score
    from nbm.dataset import load_dataset
    from serving.registry import load_model

    data, home = served_world
    config = load_config(environ={"NBM_HOME": str(home)})
    dataset, _ = load_dataset(data, config)
    store = FeatureStore.build(dataset, config)
    artifact = load_model("models:/nbm-ranker@champion", config).artifact
    frame = dataset.users
    users = frame["user_id"].to_numpy(dtype=object)[frame["consent"].map(len).to_numpy() >= 2][:40]
    users = np.repeat(users, 3)             # three draws of each user's decision
    now = np.full(len(users), NOW.value, dtype=np.int64)
    pairs = expand_pairs(store, users, now)
    hist = send_histories(store, users, now, 8.0)
    contact = pair_contact(store, pairs, hist)
    p, s = np.nonzero(pairs.ok)            # every eligible (pair, slot), scored one by one
    probability = score(store, artifact, pairs.rows(p, s).rows)
    full = {(int(a), int(b)): x for a, b, x in zip(p, s, probability)}
    return store, artifact, pairs, hist, contact, full


def _pair_of(pairs, md) -> np.ndarray:
    """Each slate item's pair index in ``pairs``."""
    key = {(int(g), int(m), int(c)): i for i, (g, m, c) in
           enumerate(zip(pairs.group, pairs.message_code, pairs.channel_code))}
    rows = md.scored.rows
    return np.array([key[int(md.scored.group[r]), int(rows.message_code[r]), int(rows.channel_code[r])]
                     for r in md.slate.row], dtype=np.int64)


def _truth(store, pairs, hist, full, pair: int, earlier: list[tuple[int, str, str]]):
    """The best slot of ``pair`` by expected value among those the contact policy allows given the user's
    history and the decision's ``earlier`` items (send time, channel, message): (send time, probability,
    expected value, the runner-up's expected value)."""
    from nbm.policy.contact import SendHistories, apply_contact_policy_batch

    g = int(pairs.group[pair])
    mine = hist.group == g
    times = np.concatenate([hist.times[mine], np.array([t for t, _, _ in earlier], dtype=np.int64)])
    channels = np.concatenate([np.asarray(hist.channels[mine], dtype=object), np.array([c for _, c, _ in earlier], dtype=object)])
    messages = np.concatenate([np.asarray(hist.messages[mine], dtype=object), np.array([m for _, _, m in earlier], dtype=object)])
    order = np.argsort(times, kind="stable")
    one = SendHistories(np.zeros(len(times), np.int64), times[order], channels[order], messages[order])
    slots = np.flatnonzero(pairs.ok[pair])
    channel, message = pairs.channels[pairs.channel_code[pair]], pairs.messages[pairs.message_code[pair]]
    verdict = apply_contact_policy_batch(np.zeros(len(slots), np.int64), np.full(len(slots), channel, dtype=object),
                                         np.full(len(slots), message, dtype=object), pairs.slot_times[g, slots],
                                         pairs.timezones[[g]], one, store.config.contact_policy)
    allowed = np.flatnonzero(np.asarray(verdict.allowed, dtype=bool))
    assert len(allowed), "no slot of an item's pair is allowed"
    probability = np.array([full[pair, int(slots[i])] for i in allowed])
    expected = probability * float(pairs.value[pair])
    best = int(np.argmax(expected))
    runner_up = np.sort(expected)[-2] if len(expected) > 1 else -np.inf
    sends = np.asarray(verdict.send_at)[allowed]
    return int(sends[best]), probability[best], expected[best], runner_up, set(sends.tolist())


@pytest.mark.parametrize("k", [1, 3])
def test_every_pick_is_sent_at_its_pairs_best_allowed_slot(world, k) -> None:
    """A uniform explorer (ε = 1) picks pairs outside the top ones nearly every time; at ``k = 3`` the later
    picks' slots must also respect the earlier ones (minimum gap, daily caps)."""
    from decision.scoring import model_decide, reference_slots
    from nbm.policy.explore import EpsilonGreedy

    store, artifact, pairs, hist, contact, full = world
    # Without the cost of a send: ε = 1 then explores every allowed pair (with it, pairs not worth their risk
    # are left out: tests/nbm/policy/test_batch.py).
    store = _without_cost(store)
    md = model_decide(store, artifact, pairs, hist, EpsilonGreedy(1.0), np.random.default_rng(11), k=k,
                      contact=contact)
    slate = md.slate
    pair = _pair_of(pairs, md)
    assert len(pair) >= 100
    live, ref_slot = reference_slots(contact.allowed, pairs.n_slots[pairs.group] // 2)
    reference_send = dict(zip(live.tolist(), contact.send_at[live, ref_slot].tolist()))
    moved = 0
    for d in np.unique(slate.decision):
        items = np.flatnonzero(slate.decision == d)
        assert (np.diff(slate.rank[items]) == 1).all()
        earlier: list[tuple[int, str, str]] = []
        for j in items:
            q = int(pair[j])
            send, probability, expected, runner_up, allowed_sends = _truth(store, pairs, hist, full, q, earlier)
            np.testing.assert_allclose(slate.score[j], probability, rtol=1e-7)
            assert int(slate.send_at[j]) in allowed_sends, (d, j)     # an allowed send time, ties or not
            if expected - runner_up > 1e-7 * expected:        # a clear best slot: its send time exactly
                assert int(slate.send_at[j]) == send, (d, j)
            moved += int(slate.send_at[j]) != reference_send[q]
            earlier.append((int(slate.send_at[j]), str(pairs.channels[pairs.channel_code[q]]),
                            str(pairs.messages[pairs.message_code[q]])))
    assert moved >= 20           # the reference slot is often not the best: the check has teeth
    if k == 1:                   # the send time does not change the propensity: uniform over the allowed pairs
        n_allowed = np.bincount(pairs.group[contact.allowed.any(axis=1)], minlength=pairs.n_groups)
        np.testing.assert_allclose(slate.propensity, 1.0 / n_allowed[slate.decision], rtol=1e-9)


def _without_cost(store):
    """``store`` under ``[arbitration] unsubscribe_cost = 0``."""
    from dataclasses import replace

    arbitration = store.config.arbitration.model_copy(update={"unsubscribe_cost": 0.0})
    return replace(store, config=store.config.model_copy(update={"arbitration": arbitration}))


def test_the_answer_reports_the_score_at_the_items_send_time(world) -> None:
    """``slate_items`` (what `/recommend` and `nbm recommend` print) gives each item its reslotted score."""
    from decision.scoring import model_decide
    from nbm.policy.explore import EpsilonGreedy
    from decision.answer import slate_items

    store, artifact, pairs, hist, contact, full = world
    md = model_decide(store, artifact, pairs, hist, EpsilonGreedy(1.0), np.random.default_rng(5), contact=contact)
    items = slate_items(md)
    assert len(items) == len(md.slate.row) >= 100
    np.testing.assert_allclose([i["score"] for i in items], np.round(md.slate.score, 6), atol=1e-12)
    sends = pd.to_datetime([i["send_at"] for i in items], utc=True).as_unit("ns").asi8
    np.testing.assert_array_equal(sends, md.slate.send_at)


def test_the_greedy_pick_needs_no_reslot_so_off_policy_evaluation_reads_the_answers_send_time(world) -> None:
    """Off-policy evaluation reads ``md.batch`` (the greedy pick at its best scored slot): a greedy first pick
    is always a top pair, scored at every slot, so the answer's item is the same, never moved."""
    from decision.scoring import model_decide
    from nbm.policy.explore import Greedy

    store, artifact, pairs, hist, contact, full = world
    md = model_decide(store, artifact, pairs, hist, Greedy(), np.random.default_rng(0), contact=contact)
    b, slate = md.batch, md.slate
    assert len(slate.row) >= 60
    np.testing.assert_array_equal(b.send_at[b.chosen[slate.decision]], slate.send_at)
    np.testing.assert_array_equal(b.chosen[slate.decision], slate.row)
    # Never better than full enumeration of every (pair, slot); how often equal: benchmarks/two_stage.py.
    pair = _pair_of(pairs, md)
    for j, q in enumerate(pair):
        g = pairs.group[q]
        best = max(full[a, s] * float(pairs.value[a]) for a in np.flatnonzero(pairs.group == g)
                   for s in np.flatnonzero(contact.allowed[a]))
        assert slate.score[j] * float(pairs.value[q]) <= best * (1 + 1e-7)


class _Flat:
    """A model that gives every candidate the same probability: with weights of 1 / value, every
    (message, channel, slot) of a decision ties for the best expected value."""

    followup = None
    risk = None

    def __init__(self, artifact) -> None:
        self.artifact = artifact

    def score(self, columns) -> np.ndarray:
        return np.full(len(next(iter(columns.values()))), 0.05)


def test_a_greedy_pick_among_more_tied_pairs_than_top_pairs_is_still_at_its_scored_slot(world) -> None:
    """More pairs tie for the best value than ``top_pairs``: all of them are kept for stage 2, so a greedy
    draw between them (its propensity shared) never lands on a pair scored at one slot only, and
    ``md.batch`` (what off-policy evaluation reads) has the answer's send time."""
    from decision.scoring import model_decide
    from nbm.policy.explore import Greedy

    store, artifact, pairs, hist, contact, full = world
    n_codes = int(pairs.message_code.max()) + 1
    weight = np.ones(n_codes)
    weight[pairs.message_code] = 1.0 / np.maximum(pairs.value, 1e-9)
    md = model_decide(store, _Flat(artifact), pairs, hist, Greedy(), np.random.default_rng(3), top_pairs=2,
                      weight=weight, contact=contact)
    b, slate = md.batch, md.slate
    allowed_pairs = np.bincount(pairs.group[contact.allowed.any(axis=1)], minlength=pairs.n_groups)
    assert len(slate.row) >= 60 and (allowed_pairs[slate.decision] > 4).mean() > 0.9   # more tie than the 4 kept (k + 3)
    np.testing.assert_array_equal(b.chosen[slate.decision], slate.row)
    np.testing.assert_array_equal(b.send_at[b.chosen[slate.decision]], slate.send_at)
    assert (slate.propensity < 0.5).mean() > 0.9          # the draw is between many tied rows


def test_every_item_is_scored_at_the_instant_it_is_sent_inside_its_messages_window(world) -> None:
    """Each item's score is the model's probability of its (message, channel) featurised at the item's own
    send time — slots the quiet hours moved (21:00 → 08:00 the next day) included — and that send time lies
    in the message's live window. Scored from scratch on one row per item, not through the slot grid."""
    from decision.candidates import slot_times
    from features.compute import Candidates
    from decision.scoring import model_decide, score
    from nbm.policy.explore import EpsilonGreedy

    store, artifact, pairs, hist, contact, full = world
    md = model_decide(store, artifact, pairs, hist, EpsilonGreedy(1.0), np.random.default_rng(7), k=3,
                      contact=contact)
    slate, rows = md.slate, md.scored.rows
    g = slate.decision
    send = np.asarray(slate.send_at, dtype=np.int64)
    m, c = np.asarray(rows.message_code)[slate.row], np.asarray(rows.channel_code)[slate.row]
    one = Candidates(pairs.user_ids[g], pairs.messages[m], pairs.channels[c], pairs.now[g], send, m, c,
                     pairs.user_code[g])
    np.testing.assert_allclose(slate.score, score(store, artifact, one), rtol=1e-7)
    catalog = store.history.catalog_arrays
    assert ((catalog["start_ns"][m] <= send) & (send < catalog["end_ns"][m])).all()
    cfg = store.config.features
    moved = sum(int(t) not in set(slot_times(int(pairs.now[d]), str(pairs.timezones[d]), cfg.slot_hours,
                                             cfg.horizon_hours).tolist()) for d, t in zip(g, send))
    assert len(send) >= 150 and moved >= 10, moved       # quiet-hours slots were picked: the check has teeth
