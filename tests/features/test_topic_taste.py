"""Which topics a person prefers: the stated-favourite match (``attr_<name>_is_topic``) and the topic lifts
(``ut_open_lift``, ``ut_click_lift``), against a naive reading of the users table and a naive count of the log."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.compute import Candidates, topic_attributes
from features.pipeline import FeatureStore
from features.priors import global_rates
from nbm.config import NbmConfig

DAY = pd.Timedelta(days=1)


def _sends(dataset, n: int, seed: int) -> Candidates:
    sends = dataset.events[dataset.events["event_type"] == "send"].sample(n, random_state=seed)
    at = sends["timestamp"].to_numpy(dtype="int64")
    return Candidates(*(sends[c].to_numpy(dtype=object) for c in ("user_id", "message_id", "channel")), at, at)


@pytest.fixture(scope="module")
def stated(dataset):
    """The test world's users with text attributes that name topics in several spellings, or not at all."""
    users = dataset.users.copy()
    topics = sorted(dataset.messages["topic"].astype(str).unique())
    rng = np.random.default_rng(5)
    spelled = [f"  {t.upper()} " if i % 2 else t.title() for i, t in enumerate(topics)]
    # Every value names a topic, in other case and blanks; a tenth of the people say nothing.
    users["favourite"] = np.where(rng.random(len(users)) < 0.1, None, rng.choice(spelled, len(users)))
    # Half of the values name topics: still a topic attribute. A third of them: not one.
    users["half"] = rng.choice([*topics[:2], "other", "none"], len(users))
    users["third"] = rng.choice([topics[0], "x", "y"], len(users))
    users["one"] = rng.choice([topics[0]], len(users))        # a single topic name is not a vocabulary of topics
    return replace(dataset, users=users)


def test_text_attributes_that_name_topics_get_a_match_feature(stated) -> None:
    store = FeatureStore.build(stated, NbmConfig())
    assert {"favourite", "half"} <= set(topic_attributes(store.history)) and not (
        {"third", "one", "country", "age_band"} & set(topic_attributes(store.history)))
    rows = _sends(stated, 500, seed=1)
    frame = store.featurise(rows)
    assert "attr_favourite_is_topic" in frame and "attr_third_is_topic" not in frame
    topic_of = stated.messages.set_index("message_id")["topic"].astype(str)
    for name in ("favourite", "half"):
        said = stated.users.set_index("user_id")[name].reindex(rows.user_id)
        names = said.astype(object).map(lambda v: None if v is None or pd.isna(v) else str(v).strip().casefold())
        expected = np.where(names.isna(), np.nan,
                            (names.to_numpy() == topic_of.reindex(rows.message_id).str.casefold().to_numpy()))
        got = frame[f"attr_{name}_is_topic"].to_numpy(dtype=float)
        np.testing.assert_array_equal(got, expected.astype(float))
        assert 0 < np.nanmean(got) < 1 and np.isnan(got).any() == (name == "favourite")


def test_an_unknown_user_or_message_has_no_match_and_the_snapshot_holds_no_match(stated) -> None:
    store = FeatureStore.build(stated, NbmConfig())
    known = stated.users["user_id"].iloc[0]
    message = stated.messages["message_id"].iloc[0]
    t = stated.events["timestamp"].max().value
    rows = Candidates(np.array(["nobody", known, known], dtype=object), np.array([message, "no-such", message], dtype=object),
                      np.array(["email"] * 3, dtype=object), np.full(3, t), np.full(3, t))
    got = store.featurise(rows)["attr_favourite_is_topic"].to_numpy(dtype=float)
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert not any(c.endswith("_is_topic") for c in store.snapshot(pd.Timestamp(t, tz="UTC")).columns)


def test_topic_lifts_equal_a_naive_count_of_the_log(dataset) -> None:
    """The user's rate on the topic shrunk toward the user's own rate (itself shrunk toward the population's),
    divided by that own rate; every count over the 90 days before the row's time."""
    s = 5.0
    config = NbmConfig.model_validate({"features": {"prior_strength": s}})
    store = FeatureStore.build(dataset, config)
    rows = _sends(dataset, 300, seed=3)
    got = store.featurise(rows)
    events = dataset.events
    topic_of = dataset.messages.set_index("message_id")["topic"].astype(str)
    event_topic = topic_of.reindex(events["message_id"]).to_numpy()
    for i in range(len(rows)):
        t = pd.Timestamp(rows.as_of[i], tz="UTC")
        mine = events[(events["user_id"] == rows.user_id[i]) & (events["timestamp"] < t)
                      & (events["timestamp"] >= t - 90 * DAY)]
        on_topic = event_topic[mine.index] == topic_of[rows.message_id[i]]
        population = global_rates(store.globals.rates, np.array([rows.as_of[i]]), s)
        for outcome, kind in (("opens", "open"), ("clicks", "click")):
            own = ((mine["event_type"] == kind).sum() + s * population[outcome][0]) / (
                (mine["event_type"] == "send").sum() + s)
            k = ((mine["event_type"] == kind).to_numpy() & on_topic).sum()
            n = ((mine["event_type"] == "send").to_numpy() & on_topic).sum()
            assert got[f"ut_{kind}_lift"].iloc[i] == pytest.approx((k / own + s) / (n + s), rel=1e-5), (i, kind)


def test_a_person_who_opens_one_topic_has_a_lift_above_one_there_and_below_elsewhere(dataset) -> None:
    """The lift separates taste from general responsiveness: among people with opens on two topics or more
    sent, the topic they opened most has the highest lift."""
    store = FeatureStore.build(dataset, NbmConfig())
    events = dataset.events
    topic_of = dataset.messages.set_index("message_id")["topic"].astype(str)
    opens = events[events["event_type"] == "open"].assign(topic=lambda f: topic_of.reindex(f["message_id"]).to_numpy())
    t = events["timestamp"].max() + pd.Timedelta(hours=1)
    per = opens.groupby(["user_id", "topic"]).size().unstack(fill_value=0)
    clear = per[(per.max(axis=1) >= 2) & ((per == per.max(axis=1).to_numpy()[:, None]).sum(axis=1) == 1)]
    assert len(clear) >= 20
    topics = list(per.columns)
    example = dataset.messages.groupby("topic")["message_id"].first()
    users = np.repeat(clear.index.to_numpy(dtype=object), len(topics))
    messages = np.tile(example.reindex(topics).to_numpy(dtype=object), len(clear))
    rows = Candidates(users, messages, np.full(len(users), "email", dtype=object), np.full(len(users), t.value),
                      np.full(len(users), t.value))
    lift = store.featurise(rows)["ut_open_lift"].to_numpy().reshape(len(clear), len(topics))
    best = np.argmax(clear.to_numpy(), axis=1)
    assert (np.argmax(lift, axis=1) == best).mean() > 0.8
    assert (lift[np.arange(len(clear)), best] > 1).all()


def test_topics_that_differ_in_case_or_blanks_are_one_topic_to_a_stated_favourite(stated) -> None:
    """A catalog with "News" and "news " (say) is one topic to a person who said "NEWS": both match, and no
    index of the names is built on duplicates."""
    messages = stated.messages.copy()
    first = str(messages["topic"].iloc[0])
    twin = messages["topic"].astype(str) == first
    messages.loc[twin[twin].index[1::2], "topic"] = f" {first.upper()} "       # every other message of that topic
    data = replace(stated, messages=messages)
    store = FeatureStore.build(data, NbmConfig())
    rows = _sends(data, 600, seed=4)
    frame = store.featurise(rows)
    said = data.users.set_index("user_id")["favourite"].reindex(rows.user_id).astype(object)
    names = said.map(lambda v: None if v is None or pd.isna(v) else str(v).strip().casefold())
    topics = messages.set_index("message_id")["topic"].astype(str).str.strip().str.casefold().reindex(rows.message_id)
    expected = np.where(names.isna(), np.nan, names.to_numpy() == topics.to_numpy()).astype(float)
    np.testing.assert_array_equal(frame["attr_favourite_is_topic"].to_numpy(dtype=float), expected)
    assert (frame["attr_favourite_is_topic"].to_numpy()[topics.to_numpy() == first] == 1).any()


def test_a_model_scores_where_the_users_table_no_longer_names_topics(stated) -> None:
    """A model that learned from ``attr_favourite_is_topic`` scores a store whose users table lost the
    attribute (or no longer names topics): the match is missing for everybody, as for a person without a value;
    a missing feature of any other kind is still an error."""
    import lightgbm as lgb

    from nbm.artifact import Calibrator, ScoringArtifact

    store = FeatureStore.build(stated, NbmConfig())
    rows = _sends(stated, 400, seed=6)
    frame = store.featurise(rows)
    features = ("ut_open_lift", "attr_favourite_is_topic", "attr_half")
    categories = {"attr_half": tuple(map(str, frame["attr_half"].cat.categories))}
    probe = ScoringArtifact(None, Calibrator.identity(), features, categories)   # type: ignore[arg-type]
    label = (np.random.default_rng(0).random(len(frame)) < 0.3).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(
        probe.matrix(frame), label, feature_name=list(features), categorical_feature=[2]), num_boost_round=5)
    model = replace(probe, booster=booster)
    lost = FeatureStore.build(replace(stated, users=stated.users.drop(columns=["favourite", "half"])), NbmConfig())
    without = lost.featurise(rows)
    assert "attr_favourite_is_topic" not in without
    nan_match = frame.assign(attr_favourite_is_topic=np.nan, attr_half=pd.Categorical([None] * len(frame)))
    np.testing.assert_allclose(model.score(without), model.score(nan_match))
    with pytest.raises(ValueError, match="ut_open_lift"):
        model.score(without.drop(columns=["ut_open_lift"]))
