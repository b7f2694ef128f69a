"""Learned smoothing strengths and segment priors (features/priors.py, features/segments.py):

- each family is fitted on the cells the features count (a naive pandas count of them gives the same strength);
- "auto" equals fixed strengths given the learned numbers; a number is every family's strength;
- the training set (one pass or partitioned) and the service's online store of the same data learn the same
  strengths and give the same features; nothing is learned again per request;
- a cold user takes their segment's rate, itself smoothed toward the population's (a naive reference);
- invalid settings are refused with the key named.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import features.priors as priors
from features.compute import Candidates
from features.declarations import FEATURE_NAMES
from features.pipeline import FeatureStore, Globals, build_training_set
from features.priors import GLOBAL_PRIOR, WINDOW_NS, PriorStrengths
from nbm.shrinkage import fit_strength
from nbm.config import FeatureConfig, NbmConfig, load_config
from nbm.errors import UsageError

DAY = 86_400 * 10**9
SEGMENTS = NbmConfig.model_validate({"features": {"segment_by": ["tier"]}})


@pytest.fixture(scope="module")
def learned(dataset, config) -> Globals:
    return Globals.build(dataset, config)


def test_the_families_are_the_configurations() -> None:
    assert PriorStrengths.families() == FeatureConfig.PRIOR_FAMILIES


def test_auto_learns_the_user_and_message_families(learned) -> None:
    s = learned.strengths
    assert set(s.learned) >= {"user_channel_opens", "user_channel_clicks", "user_topic_opens", "user_topic_clicks",
                              "user_opens", "user_hour_opens", "message_opens", "message_clicks"}
    assert "population" not in s.learned and s.population == priors.DEFAULT_STRENGTH
    assert all(1.0 <= s.as_dict()[f] <= 1000.0 for f in s.learned)
    assert not any(f.startswith("segment_") for f in s.learned)          # no segments configured


def _population_rate(events: pd.DataFrame, before: int, outcome: str, mask: np.ndarray, strength: float) -> float:
    """Naive: the population's rate of the rows of ``mask`` before ``before``, toward the overall rate."""
    days = events["timestamp"].to_numpy(dtype="int64") < before
    kind = events["event_type"].to_numpy()
    total = lambda m, k: float(((kind == k) & days & m).sum())       # noqa: E731
    everyone = np.ones(len(events), bool)
    overall = (total(everyone, outcome) + strength * GLOBAL_PRIOR[outcome + "s"]) / (total(everyone, "send") + strength)
    return (total(mask, outcome) + strength * overall) / (total(mask, "send") + strength)


@pytest.mark.parametrize(("family", "column", "outcome"), [("user_channel_clicks", "channel", "click"),
                                                            ("user_topic_opens", "topic", "open")])
def test_a_family_is_fitted_on_the_cells_the_features_count(dataset, learned, family, column, outcome) -> None:
    """A naive count (pandas, the 90 days before the end of the log) of each user's cells, with the parent
    of each (the population's rate of the channel or topic), fitted: the same strength as the pipeline's."""
    events = dataset.events.copy()
    events["topic"] = events["message_id"].map(dataset.messages.set_index("message_id")["topic"])
    stamps = events["timestamp"].to_numpy(dtype="int64")
    end = int(stamps.max()) + 1
    recent = events[(stamps >= end - WINDOW_NS) & events[column].notna()]
    cells = pd.crosstab([recent["user_id"], recent[column]], recent["event_type"])
    parent = {value: _population_rate(events, end // DAY * DAY, outcome, (events[column] == value).to_numpy(),
                                      learned.strengths.population)
              for value in cells.index.get_level_values(1).unique()}
    mu = np.array([parent[v] for v in cells.index.get_level_values(1)])
    expected = fit_strength(cells.get(outcome, 0) * 1.0, cells["send"] * 1.0, mu).strength
    assert getattr(learned.strengths, family) == pytest.approx(expected, rel=1e-9)


def test_auto_equals_fixed_strengths_given_the_learned_numbers(dataset, config, learned) -> None:
    pinned = NbmConfig.model_validate({"features": {"prior_strength": learned.strengths.as_dict()}})
    again = Globals.build(dataset, pinned)
    assert again.strengths.as_dict() == learned.strengths.as_dict() and again.strengths.learned == ()
    pd.testing.assert_frame_equal(FeatureStore.build(dataset, pinned).training_set(),
                                  FeatureStore.build(dataset, config, learned).training_set())
    # A number is every family's strength (the smoothing before "auto"), and differs from the learned one.
    fixed = NbmConfig.model_validate({"features": {"prior_strength": 10.0}})
    assert Globals.build(dataset, fixed).strengths == PriorStrengths.uniform(10.0)
    rows = _sends(dataset, 300)
    assert not FeatureStore.build(dataset, fixed).featurise(rows)["ut_click_affinity"].equals(
        FeatureStore.build(dataset, config, learned).featurise(rows)["ut_click_affinity"])


def test_a_partial_table_pins_its_families_and_learns_the_others(dataset, learned) -> None:
    partial = NbmConfig.model_validate({"features": {"prior_strength": {"user_topic_clicks": 123.0}}})
    strengths = Globals.build(dataset, partial).strengths
    assert strengths.user_topic_clicks == 123.0 and "user_topic_clicks" not in strengths.learned
    assert strengths.user_channel_opens == learned.strengths.user_channel_opens


def _sends(dataset, n: int) -> Candidates:
    sends = dataset.events[dataset.events["event_type"] == "send"].sample(n, random_state=2)
    at = sends["timestamp"].to_numpy(dtype="int64")
    return Candidates(*(sends[c].to_numpy(dtype=object) for c in ("user_id", "message_id", "channel")), at, at)


@pytest.mark.parametrize("setting", [{}, {"segment_by": ["country", "age_band"]}], ids=["auto", "auto+segments"])
def test_training_set_and_online_store_learn_the_same_strengths_and_features(dataset, setting) -> None:
    """Offline (the training set, one pass and by partitions) against online (the service's store, built on
    the same data and frozen): the same learned strengths, and every training row's features equal the
    online featurisation of the same send."""
    config = NbmConfig.model_validate({"features": setting})
    online = FeatureStore.build(dataset, config).freeze()
    shared = Globals.build(dataset, config)
    assert online.prior_strengths() == shared.strengths and shared.strengths.learned
    by_partitions = build_training_set(dataset, config, partitions=3, shared=shared)
    one_pass = build_training_set(dataset, config, partitions=1)
    pd.testing.assert_frame_equal(by_partitions, one_pass)
    sample = one_pass.sample(300, random_state=3)
    at = sample["timestamp"].astype("int64").to_numpy()
    rows = Candidates(sample["user_id"].to_numpy(dtype=object), sample["message_id"].to_numpy(dtype=object),
                      sample["channel_name"].to_numpy(dtype=object), at, at)
    served = online.featurise(rows)
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(served[name].to_numpy(), sample[name].to_numpy(), err_msg=name)


def test_nothing_is_learned_again_after_the_build(dataset, config, learned, monkeypatch) -> None:
    store = FeatureStore.build(dataset, config, learned).freeze()

    def refuse(*args, **kwargs):
        raise AssertionError("a strength was fitted after the build")

    monkeypatch.setattr(priors, "fit_strength", refuse)
    monkeypatch.setattr(priors, "prior_strengths", refuse)
    now = dataset.events["timestamp"].max() + pd.Timedelta(hours=2)
    store.snapshot(now)
    store.featurise(_sends(dataset, 50))
    store.featurise_columns(replace(_sends(dataset, 50), as_of=np.full(50, now.value), send_at=np.full(50, now.value)))


RATES = ("uc_open_rate", "uc_click_rate", "ut_open_affinity", "ut_click_affinity", "ut_open_lift", "ut_click_lift",
         "ug_click_affinity", "uh_open_rate", "uh_open_rate_near", "message_open_rate", "message_click_rate",
         "message_convert_rate")
FAMILY_FEATURES = {
    "population": RATES,
    "message_opens": ("message_open_rate",), "message_clicks": ("message_click_rate",),
    "message_converts": ("message_convert_rate",),
    "user_opens": ("uh_open_rate", "uh_open_rate_near"), "user_hour_opens": ("uh_open_rate", "uh_open_rate_near"),
    "user_channel_opens": ("uc_open_rate",), "user_channel_clicks": ("uc_click_rate",),
    "user_topic_opens": ("ut_open_affinity", "ut_open_lift"), "user_topic_clicks": ("ut_click_affinity", "ut_click_lift"),
    "user_tag_clicks": ("ug_click_affinity",),
    "user_hour_visits": ("uh_visit_share", "uh_visit_share_near"), "user_weekday_visits": ("uw_visit_share",),
    "segment_channel_opens": ("uc_open_rate",), "segment_channel_clicks": ("uc_click_rate",),
    "segment_topic_opens": ("ut_open_affinity",), "segment_topic_clicks": ("ut_click_affinity",),
}
"""The features each family's strength smooths (docs/features.md, "Smoothing")."""


def test_each_strength_smooths_exactly_its_familys_features(dataset) -> None:
    data = _tiered(dataset)
    store = FeatureStore.build(data, SEGMENTS)
    rows = _sends(data, 400)
    base = store.featurise(rows)
    assert set(FAMILY_FEATURES) == set(PriorStrengths.families())
    for family, expected in FAMILY_FEATURES.items():
        strengths = replace(store.globals.strengths, **{family: getattr(store.globals.strengths, family) * 7 + 3})
        other = replace(store, globals=replace(store.globals, strengths=strengths)).featurise(rows)
        changed = {c for c in FEATURE_NAMES if not np.array_equal(other[c].to_numpy(), base[c].to_numpy(), equal_nan=True)}
        assert changed == set(expected), family


# -- segments -------------------------------------------------------------------------------------

def _tiered(dataset):
    """The test world with a ``tier`` attribute — ``hi`` for users whose clicks per send are above the
    median, ``lo`` otherwise — and two users without any history, one in each tier."""
    events = dataset.events
    per_user = pd.crosstab(events["user_id"], events["event_type"])
    rate = (per_user.get("click", 0) / per_user["send"].clip(lower=1)).reindex(dataset.users["user_id"]).fillna(0.0)
    users = dataset.users.copy()
    users["tier"] = np.where(rate.to_numpy() > rate.median(), "hi", "lo")
    cold = users.iloc[:2].copy()
    cold["user_id"] = ["cold-hi", "cold-lo"]
    cold["tier"] = ["hi", "lo"]
    return replace(dataset, users=pd.concat([users, cold], ignore_index=True))


def test_a_cold_user_gets_their_segments_rate(dataset) -> None:
    data = _tiered(dataset)
    events = data.events
    now = int(events["timestamp"].max().value) // DAY * DAY + 2 * DAY
    message = data.messages.iloc[0]
    rows = Candidates(np.array(["cold-hi", "cold-lo"], dtype=object), np.array([message["message_id"]] * 2, dtype=object),
                      np.array(["email"] * 2, dtype=object), np.full(2, now), np.full(2, now))
    store = FeatureStore.build(data, SEGMENTS)
    segmented = store.featurise(rows)
    population = FeatureStore.build(data, NbmConfig()).featurise(rows)
    for column in ("ut_click_affinity", "ut_open_affinity", "uc_click_rate", "uc_open_rate"):
        hi, lo = segmented[column]
        assert hi > population[column].iloc[0] > lo, column          # the high tier's rate, then the low's
        assert population[column].iloc[0] == population[column].iloc[1]
    # Naive reference: the hi tier's clicks / sends on the message's topic, toward the topic's population rate.
    s = store.prior_strengths()
    topic = events["message_id"].map(data.messages.set_index("message_id")["topic"]).to_numpy() == message["topic"]
    tier = events["user_id"].map(data.users.set_index("user_id")["tier"]).to_numpy() == "hi"
    parent = _population_rate(events, now, "click", topic, s.population)
    kind = events["event_type"].to_numpy()
    expected = (((kind == "click") & topic & tier).sum() + s.segment_topic_clicks * parent) / (
        ((kind == "send") & topic & tier).sum() + s.segment_topic_clicks)
    assert segmented["ut_click_affinity"].iloc[0] == pytest.approx(expected, rel=1e-6)
    # 3 tiers (hi, lo, missing) × the topics are enough cells to learn from; × 5 channels are not (10 kept).
    assert "segment_topic_clicks" in s.learned and "segment_channel_clicks" not in s.learned


def test_segments_are_the_same_in_every_partition(dataset) -> None:
    data = _tiered(dataset)
    pd.testing.assert_frame_equal(build_training_set(data, SEGMENTS, partitions=3),
                                  build_training_set(data, SEGMENTS, partitions=1))


def test_a_user_without_a_users_row_or_a_segment_without_history_gets_the_population_rate(dataset) -> None:
    data = _tiered(dataset)
    users = data.users.copy()
    users.loc[users["user_id"] == "cold-lo", "tier"] = "nobody-else"
    data = replace(data, users=users)
    now = int(data.events["timestamp"].max().value) + DAY
    rows = Candidates(np.array(["cold-lo", "never-seen"], dtype=object), np.repeat(data.messages["message_id"].iloc[:1].to_numpy(dtype=object), 2),
                      np.array(["email"] * 2, dtype=object), np.full(2, now), np.full(2, now))
    segmented = FeatureStore.build(data, SEGMENTS).featurise(rows)
    population = FeatureStore.build(data, NbmConfig(), Globals.build(data, SEGMENTS)).featurise(rows)
    for column in ("ut_click_affinity", "uc_open_rate"):
        np.testing.assert_allclose(segmented[column], population[column], rtol=1e-6, err_msg=column)


# -- invalid settings -------------------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "named"), [
    ("prior_strength = -1", "prior_strength"),
    ("prior_strength = 0", "prior_strength"),
    ('prior_strength = "sometimes"', "prior_strength"),
    ("prior_strength = { user_topic = 3 }", "user_topic"),
    ("prior_strength = { user_opens = 0 }", "prior_strength"),
    ('segment_by = ["country", "country"]', "segment_by"),
    ('segment_by = [""]', "segment_by"),
])
def test_invalid_settings_are_refused_with_the_key_named(tmp_path: Path, toml: str, named: str) -> None:
    path = tmp_path / "nbm.toml"
    path.write_text(f"[features]\n{toml}\n")
    with pytest.raises(UsageError, match=named):
        load_config(path, environ={})


def test_a_segment_column_the_users_table_lacks_is_refused(dataset) -> None:
    config = NbmConfig.model_validate({"features": {"segment_by": ["country", "shoe_size"]}})
    with pytest.raises(UsageError, match=r"segment_by.*shoe_size"):
        Globals.build(dataset, config)
    with pytest.raises(UsageError, match="timezone"):
        Globals.build(dataset, NbmConfig.model_validate({"features": {"segment_by": ["timezone"]}}))


def test_a_sample_of_users_is_chosen_by_their_ids_alone(dataset, config, monkeypatch) -> None:
    """Beyond MAX_FIT_USERS the strengths are learned on a sample chosen by a hash of the user ids: the same
    for the same log in any order, and still within the clipped range."""
    monkeypatch.setattr(priors, "MAX_FIT_USERS", 250)
    sampled = Globals.build(dataset, config).strengths
    assert Globals.build(dataset, config).strengths == sampled
    assert set(sampled.learned) >= {"user_channel_opens", "user_topic_clicks"}
    names = dataset.events["user_id"].unique().astype(object)
    shuffled = np.random.default_rng(4).permutation(names)
    chosen = names[priors._sample(names)]
    assert len(chosen) == 250 and set(chosen) == set(shuffled[priors._sample(shuffled)])


def test_a_store_built_with_a_models_strengths_featurises_as_the_model_was_trained(dataset) -> None:
    """The service and `nbm recommend` featurise with the strengths the model was trained with
    (``artifact.prior_strengths``), not with strengths learned again on their own snapshot: on a shorter log the
    learned ones differ, the pinned ones do not."""
    config = NbmConfig()
    trained = FeatureStore.build(dataset, config)
    strengths = trained.prior_strengths().as_dict()
    cut = dataset.events["timestamp"].max() - pd.Timedelta(days=10)
    shorter = replace(dataset, events=dataset.events[dataset.events["timestamp"] < cut].reset_index(drop=True))
    relearned = FeatureStore.build(shorter, config)
    served = FeatureStore.build(shorter, config, strengths=strengths)
    assert relearned.prior_strengths().as_dict() != strengths
    assert served.prior_strengths().as_dict() == strengths
    pinned = FeatureStore.build(shorter, NbmConfig.model_validate({"features": {"prior_strength": strengths}}))
    rows = _sends(shorter, 200)
    pd.testing.assert_frame_equal(served.featurise(rows), pinned.featurise(rows))
    again = relearned.with_strengths(strengths)
    pd.testing.assert_frame_equal(again.featurise(rows), pinned.featurise(rows))
    assert relearned.with_strengths(None) is relearned
