"""Experiment arms in the service and in batch scoring: assignment, the rules and random baselines, holdout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nbm.config import ExperimentConfig, load_config
from nbm.policy.assign import assign

NOW = pd.Timestamp("2026-10-29T00:00:00Z")
EXPERIMENT = ExperimentConfig(name="spring", salt="t", arms={"model": 0.25, "rules": 0.25, "random": 0.25,
                                                             "holdout": 0.25})


@pytest.fixture(scope="module")
def engine(served_world, tmp_path_factory):
    from serving.engine import Engine, EngineSettings

    data, home = served_world
    config = load_config(environ={"NBM_HOME": str(home)}).model_copy(
        update={"experiment": EXPERIMENT, "state_url": f"sqlite:///{tmp_path_factory.mktemp('arms') / 's.db'}"})
    return Engine(config, EngineSettings(data=data, explorer="epsilon_greedy", seed=3))


@pytest.fixture(scope="module")
def users(served_world) -> list[str]:
    data, _ = served_world
    frame = pd.read_parquet(data / "users.parquet")
    return frame.loc[frame["consent"].map(len) >= 2, "user_id"].tolist()[:160]


def test_each_decision_serves_and_logs_the_users_assigned_arm(engine, users) -> None:
    answers = engine.recommend_many([{"user_id": u, "now": NOW, "arm": "ignored"} for u in users])
    expected = assign([engine.canonical(u) for u in users], EXPERIMENT)
    assert [a["arm"] for a in answers] == expected.tolist()
    assert set(expected) == {"model", "rules", "random", "holdout"}
    for answer, arm in zip(answers, expected):
        if arm == "holdout":
            assert answer["items"] == [] and answer["reason"] == "holdout"
    sent = {arm: sum(bool(a["items"]) for a, x in zip(answers, expected) if x == arm) for arm in set(expected)}
    assert sent["rules"] > 10 and sent["random"] > 10 and sent["model"] > 5, sent
    log = engine.state.decision_log().set_index("decision_id").loc[[a["decision_id"] for a in answers]]
    assert log["arm"].tolist() == expected.tolist()
    assert (log["experiment"] == "spring").all()
    policies = dict(zip(log["arm"], log["policy"]))
    assert policies["rules"] == "rules" and policies["random"] == "random" and policies["holdout"] == "holdout"
    assert policies["model"].startswith("nbm-ranker/")
    assert (log.loc[log["arm"].isin(["rules", "holdout"]), "propensity"] == 1.0).all()
    random_p = log.loc[(log["arm"] == "random") & (log["items"] != "[]"), "propensity"]
    assert (random_p < 0.5).all()          # one of many pairs


def _decide(served_world, arm: str, draws: int = 1, seed: int = 0):
    """One user's candidates decided ``draws`` times by ``arm`` (decision.arms.arm_decide)."""
    from features.pipeline import FeatureStore
    from decision.arms import arm_decide, rules_priority
    from decision.contact import contact_verdict
    from decision.histories import send_histories
    from decision.pairs import expand_many
    from decision.scoring import score
    from nbm.dataset import load_dataset
    from nbm.policy.explore import Greedy
    from serving.registry import load_model

    data, home = served_world
    config = load_config(environ={"NBM_HOME": str(home)})
    dataset, _ = load_dataset(data, config)
    store = FeatureStore.build(dataset, config)
    artifact = load_model("models:/nbm-ranker@champion", config).artifact
    user = dataset.users["user_id"].to_numpy(dtype=object)[dataset.users["consent"].map(len).to_numpy() >= 3][:1]
    users = np.repeat(user, draws)
    now = np.full(draws, NOW.value, dtype=np.int64)
    ex = expand_many(store, users, now)
    hist = send_histories(store, users, now, 8.0)
    contact = contact_verdict(store, ex, hist)
    md = arm_decide(store, artifact, ex, hist, arm, Greedy(), np.random.default_rng(seed), contact=contact)
    return store, artifact, ex, contact, md, rules_priority, score


def test_the_random_arm_is_uniform_over_allowed_pairs_with_exact_propensities(served_world) -> None:
    draws = 20_000
    _, _, ex, contact, md, _, _ = _decide(served_world, "random", draws)
    first = ex.group == 0
    pairs = {(m, c) for m, c, ok in zip(ex.rows.message_id[first], ex.rows.channel[first], contact.allowed[first]) if ok}
    assert len(pairs) >= 20
    b = md.batch
    assert (b.chosen >= 0).all()
    np.testing.assert_allclose(b.propensity, 1 / len(pairs), rtol=1e-6)
    chosen = pd.Series(list(zip(ex.rows.message_id[b.chosen], ex.rows.channel[b.chosen])))
    frequency = chosen.value_counts(normalize=True).reindex(list(pairs)).fillna(0.0)
    assert np.abs(frequency.to_numpy() - 1 / len(pairs)).max() <= 0.01
    assert set(chosen) <= pairs


def test_the_rules_arm_takes_the_highest_priority_allowed_candidate_and_reports_the_models_score(served_world) -> None:
    store, artifact, ex, contact, md, rules_priority, score = _decide(served_world, "rules")
    priority = rules_priority(store, ex)
    row = int(md.batch.chosen[0])
    assert row >= 0 and md.batch.propensity[0] == 1.0
    best_pair = priority[contact.allowed].max()
    assert priority[row] >= best_pair - 24       # the best pair (at its best allowed slot; quiet hours may move it)
    expected = score(store, artifact, ex.take(np.array([row])).rows)
    np.testing.assert_allclose(md.probability[row], expected[0], rtol=1e-9)
    assert np.isnan(np.delete(md.probability, row)).all()


def test_batch_scoring_assigns_the_same_arms(served_world, tmp_path, users) -> None:
    from nbm.dataset import load_dataset
    from serving.batch_scoring import recommend_all
    from serving.registry import load_model

    data, home = served_world
    config = load_config(environ={"NBM_HOME": str(home)}).model_copy(update={"experiment": EXPERIMENT})
    dataset, _ = load_dataset(data, config)
    model = load_model("models:/nbm-ranker@champion", config)
    out = tmp_path / "batch.jsonl"
    recommend_all(dataset, config, model.artifact, model.version, NOW, out, users=np.asarray(users[:80], object))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in lines] == users[:80]                      # request order kept
    canonical = dataset.identity.apply(pd.Series(users[:80], dtype=object)).tolist()
    assert [r["arm"] for r in lines] == assign(canonical, EXPERIMENT).tolist()
    assert all(r["experiment"] == "spring" for r in lines)
    assert all(not r["items"] and r["reason"] == "holdout" for r in lines if r["arm"] == "holdout")
    assert any(r["items"] for r in lines if r["arm"] == "rules")


def test_request_filters_keep_what_the_naive_rule_keeps(engine, users) -> None:
    """`channels` and `candidates` of each request of a batch, against a per-request isin written out."""
    from decision.pairs import expand_pairs

    rng = np.random.default_rng(8)
    chosen = [engine.canonical(u) for u in users[:30]]
    pairs = expand_pairs(engine.store, np.asarray(chosen, dtype=object), np.full(30, NOW.value, dtype=np.int64))
    ex = pairs.take(np.arange(len(pairs)))       # the filters act on pairs: one row per (message, channel)
    messages = sorted(set(pairs.messages[pairs.message_code]))
    requests = []
    for i in range(30):
        r = {"user_id": chosen[i]}
        if rng.random() < 0.6:
            r["channels"] = list(rng.choice(["email", "sms", "push", "in_app"], size=int(rng.integers(1, 3)), replace=False))
        if rng.random() < 0.5:
            r["candidates"] = list(rng.choice(messages, size=int(rng.integers(1, 6)), replace=False)) + ["no-such-message"]
        requests.append(r)
    expected = np.ones(len(ex), dtype=bool)
    channel, message = ex.channels[ex.channel_code], ex.messages[ex.message_code]
    for i, r in enumerate(requests):
        rows = ex.group == i
        if r.get("channels"):
            expected[rows & ~np.isin(channel, r["channels"])] = False
        if r.get("candidates"):
            expected[rows & ~np.isin(message, r["candidates"])] = False
    got = engine._requested(requests, ex)
    assert 0 < expected.sum() < len(ex)
    np.testing.assert_array_equal(got, expected)


def test_business_weights_rank_by_probability_times_value_times_weight(served_world) -> None:
    """``[arbitration]`` weights: a topic's weight favours its messages, a message's own weight replaces its
    topic's, a weight of 0 keeps a message out of the choice (the greedy model arm, 60 users)."""
    from decision.contact import pair_contact
    from decision.pairs import expand_pairs
    from features.pipeline import FeatureStore
    from decision.histories import send_histories
    from decision.scoring import model_decide
    from nbm.config import ArbitrationConfig
    from nbm.dataset import load_dataset
    from nbm.policy.explore import Greedy
    from serving.registry import load_model

    data, home = served_world
    base = load_config(environ={"NBM_HOME": str(home)})
    dataset, _ = load_dataset(data, base)
    artifact = load_model("models:/nbm-ranker@champion", base).artifact
    users = dataset.users["user_id"].to_numpy(dtype=object)[:60]
    now = np.full(len(users), NOW.value, dtype=np.int64)
    topic_of = dict(zip(dataset.messages["message_id"].astype(str), dataset.messages["topic"].astype(str)))

    def chosen(arbitration: ArbitrationConfig) -> list[str]:
        config = base.model_copy(update={"arbitration": arbitration})
        store = FeatureStore.build(dataset, config)
        pairs = expand_pairs(store, users, now)
        hist = send_histories(store, users, now, 8.0)
        md = model_decide(store, artifact, pairs, hist, Greedy(), np.random.default_rng(0),
                          contact=pair_contact(store, pairs, hist))
        return [str(m) for m in md.scored.rows.message_id[md.slate.row]]

    plain = chosen(ArbitrationConfig())
    assert len(plain) > 30
    favourite = min(topic_of.values(), key=lambda t: sum(topic_of[m] == t for m in plain))   # rarely chosen
    boosted = chosen(ArbitrationConfig(topic_weights={favourite: 1e6}))
    assert sum(topic_of[m] == favourite for m in boosted) > sum(topic_of[m] == favourite for m in plain)
    assert sum(topic_of[m] == favourite for m in boosted) >= 0.8 * len(boosted)
    # One message of that topic keeps weight 1: its own weight replaces the topic's.
    first = next(m for m in boosted if topic_of[m] == favourite)
    override = chosen(ArbitrationConfig(topic_weights={favourite: 1e6}, message_weights={first: 1.0}))
    assert first not in override or override.count(first) < boosted.count(first)
    # Weight 0: never chosen.
    top = max(set(plain), key=plain.count)
    assert top not in chosen(ArbitrationConfig(message_weights={top: 0.0}))


def test_negative_or_infinite_weights_are_refused() -> None:
    import pytest
    from pydantic import ValidationError

    from nbm.config import ArbitrationConfig

    for bad in ({"m1": -1.0}, {"m1": float("inf")}, {"m1": float("nan")}):
        with pytest.raises(ValidationError, match="finite and not negative"):
            ArbitrationConfig(message_weights=bad)
