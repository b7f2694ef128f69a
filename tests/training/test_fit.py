"""Fitting the ranker on a simulated world: time split, calibration, artifact round trip, reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.pipeline import build_training_set
from nbm.artifact import Calibrator, ScoringArtifact
from nbm.config import NbmConfig
from nbm.dataset import build_dataset
from nbm.simulate import SimConfig, simulate
from training.metrics import mean_ndcg
from training.fit import RankerParams, fit_calibrator, fit_ranker, target_of, time_split


@pytest.fixture(scope="module")
def split():
    """Groups per user: lambdarank needs several sends per group (a user gets about one a day)."""
    config = NbmConfig.model_validate({"features": {"group_by": "user"}})
    tables = simulate(SimConfig(n_users=4000, n_days=42, seed=41)).tables
    dataset, _ = build_dataset(tables, config, now=pd.Timestamp("2026-11-01T00:00:00Z"))
    return time_split(build_training_set(dataset, config), valid_days=7, test_days=7)


def test_time_split_never_mixes_windows(split) -> None:
    assert split.train["timestamp"].max() < split.valid_start <= split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() < split.test_start <= split.test["timestamp"].min()


def test_empty_window_is_a_clear_error(split) -> None:
    from nbm.errors import UnusableInputError

    with pytest.raises(UnusableInputError, match="train window is empty"):
        time_split(split.test, valid_days=30, test_days=30)


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])
def test_ranker_learns_and_is_calibrated(split, objective, tmp_path: Path) -> None:
    """Binary scores separate clickers across users; lambdarank orders each user's sends (its groups)
    better than chance — across users its calibrated scores separate little (AUC measured 0.53–0.56)."""
    artifact = fit_ranker(split, RankerParams(objective=objective, target="click", num_boost_round=150))
    p = artifact.score(split.test)
    y = target_of(split.test, "click")
    assert ((p >= 0) & (p <= 1)).all()
    if objective == "binary":
        assert roc_auc_score(y, p) > 0.7
    else:
        chance = np.mean([mean_ndcg(split.test, np.random.default_rng(s).random(len(p)), 3) for s in range(5)])
        assert mean_ndcg(split.test, artifact.raw_score(split.test), 3) > chance + 0.03
    # Calibration on the test window: predicted and observed click rates agree within 25 % overall.
    assert abs(p.mean() - y.mean()) < 0.25 * y.mean()
    again = ScoringArtifact.load(artifact.save(tmp_path / objective))
    np.testing.assert_allclose(again.score(split.test), p)


def test_same_data_and_seed_give_the_same_model(split) -> None:
    params = RankerParams(num_boost_round=60, target="click")
    first, second = fit_ranker(split, params), fit_ranker(split, params)
    np.testing.assert_array_equal(first.raw_score(split.test), second.raw_score(split.test))


def test_isotonic_calibrator_matches_sklearn_and_is_monotone() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    raw = rng.normal(size=2000)
    outcome = (rng.random(2000) < 1 / (1 + np.exp(-2 * raw))).astype(int)
    calibrator = fit_calibrator(raw, outcome)
    grid = np.linspace(-4, 4, 101)
    reference = IsotonicRegression(out_of_bounds="clip").fit(raw, outcome).predict(grid)
    np.testing.assert_allclose(calibrator(grid), reference)
    assert np.all(np.diff(calibrator(grid)) >= 0)
    with pytest.raises(ValueError, match="probabilities"):
        Calibrator((0.0, 1.0), (0.0, 2.0))


def test_tuning_is_seeded_and_resumes(split, tmp_path) -> None:
    from training.fit import TimeSplit
    from training.tune import tune

    # A slice of the split: what is tested (seeded suggestions, resumption) does not depend on its size.
    split = TimeSplit(split.train.head(6000), split.valid.head(2000), split.test.head(0), split.valid_start,
                      split.test_start)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    base = RankerParams(target="click", num_boost_round=80, early_stopping_rounds=10)
    best, study = tune(split, base, trials=4, storage=storage, study_name="s")
    first = [t.params for t in study.trials]  # the study object reads its storage live: keep a copy
    assert len(first) == 4
    # Resuming asks only for the missing trials: 6 in all, the first 4 kept.
    best_again, resumed = tune(split, base, trials=6, storage=storage, study_name="s")
    assert len(resumed.trials) == 6
    assert [t.params for t in resumed.trials[:4]] == first
    # Same seed, fresh storage: the same suggestions.
    _, twin = tune(split, base, trials=4, storage=f"sqlite:///{tmp_path / 'twin.db'}", study_name="s")
    assert [t.params for t in twin.trials] == first
    assert 15 <= best.num_leaves <= 255 and 0.01 <= best.learning_rate <= 0.2


def test_tuning_datasets_take_every_trials_min_data_in_leaf_without_a_fatal_line(split, capfd) -> None:
    """Issue 43: Optuna's trials share one pair of datasets; a trial asking for a smaller `min_data_in_leaf`
    than the first made LightGBM print `[LightGBM] [Fatal] Reducing min_data_in_leaf…` on a good run."""
    import lightgbm as lgb

    from training.fit import TimeSplit, feature_columns, lightgbm_datasets

    base = RankerParams(target="click")
    small = TimeSplit(split.train.head(3000), split.valid.head(1000), split.test.head(0), split.valid_start,
                      split.test_start)

    def two_trials(pre_filter: bool) -> tuple[str, lgb.Booster]:
        train, valid = lightgbm_datasets(small, feature_columns(small.train), base, pre_filter=pre_filter)
        for leaf in (400, 20):
            booster = lgb.train({**base.lightgbm(), "min_data_in_leaf": leaf}, train, num_boost_round=5,
                                valid_sets=[valid])
        captured = capfd.readouterr()
        return captured.out + captured.err, booster

    said, shared = two_trials(pre_filter=False)
    assert "Fatal" not in said
    said_before, rebuilt = two_trials(pre_filter=True)       # the old datasets: the false alarm, a rebuilt dataset
    assert "[Fatal] Reducing `min_data_in_leaf`" in said_before
    assert shared.num_trees() == rebuilt.num_trees() == 5


def test_funnel_is_click_times_the_shrunk_conversion_rate_of_the_message(split, tmp_path: Path) -> None:
    """A funnel's score is P(click) × P(convert | click) of the message; it predicts conversions about as
    well calibrated as a direct model, and survives a save and load."""
    catalog = pd.DataFrame({"message_id": pd.unique(pd.concat([split.train, split.valid])["message_id"])}).assign(
        topic="all")
    funnel = fit_ranker(split, RankerParams(objective="funnel", num_boost_round=150), catalog)
    clicks = fit_ranker(split, RankerParams(objective="binary", target="click", num_boost_round=150))
    assert funnel.target == "convert" and funnel.followup is not None and funnel.followup.given == "click"
    followup = funnel.followup
    rates = followup.rates(split.test["message_id"].to_numpy(dtype=object))
    np.testing.assert_allclose(funnel.score(split.test), clicks.score(split.test) * rates, rtol=1e-6)
    # Each message's rate lies between its raw rate and the topic's (shrinkage), and unknown messages get the topic's.
    rows = pd.concat([split.train, split.valid])
    clicked = rows[target_of(rows, "click").astype(bool)]
    raw = clicked.groupby("message_id")["label"].apply(lambda s: (s >= 3).mean())
    topic = followup.topics["all"]
    for message, r in raw.items():
        low, high = sorted((r, topic))
        assert low - 1e-12 <= followup.messages[message] <= high + 1e-12
    assert followup.rates(np.array(["never-seen"], dtype=object), np.array(["all"], dtype=object))[0] == topic
    assert followup.rates(np.array(["never-seen"], dtype=object), np.array(["other"], dtype=object))[0] == followup.overall
    y = target_of(split.test, "convert")
    p = funnel.score(split.test)
    assert roc_auc_score(y, p) > 0.6
    assert abs(p.mean() - y.mean()) < 0.3 * y.mean()
    from dataclasses import replace

    pinned = {"population": 3.0, "user_topic_clicks": 1.5}
    again = ScoringArtifact.load(replace(funnel, prior_strengths=pinned).save(tmp_path / "funnel"))
    np.testing.assert_allclose(again.score(split.test), p)
    assert again.prior_strengths == pinned and again.followup == funnel.followup
    with pytest.raises(ValueError, match="message_id"):
        funnel.score(split.test.drop(columns="message_id"))


def test_ranking_groups_are_cut_below_lightgbms_query_limit() -> None:
    """One id with 12,000 sends (a bot, a shared id) would be one query over LightGBM's 10,000-row limit."""
    from training.fit import MAX_GROUP_ROWS, ranking_groups

    n = 12_000
    rows = pd.DataFrame({"group": [f"g{i}" for i in range(n)], "user_id": ["bot"] * (n - 2) + ["a", "b"],
                         "timestamp": pd.date_range("2026-11-01", periods=n, freq="min", tz="UTC")[::-1]})
    groups = ranking_groups(rows)
    sizes = groups.value_counts()
    assert sizes.max() <= MAX_GROUP_ROWS and sizes.sum() == n
    assert set(groups[rows["user_id"] != "bot"]) == {"a#0", "b#0"}        # small groups stay whole
    # pieces follow time: the bot's newest sends (first rows here) are its last piece
    assert groups.iloc[0] == f"bot#{(n - 3) // MAX_GROUP_ROWS}"


def test_refit_learns_every_window_with_the_held_out_trees_count(split) -> None:
    """The served model is the held-out one's procedure on the whole log: the same number of trees, trained
    on training + validation + test rows (so it fits the test window better than the held-out model does),
    the held-out calibrator kept (its calibration on the test window stays within 25 %), and a funnel's
    conversion rates counted over every window."""
    from training.fit import refit_ranker

    catalog = pd.DataFrame({"message_id": pd.unique(pd.concat([split.train, split.valid, split.test])["message_id"])})
    catalog = catalog.assign(topic="all")
    params = RankerParams(objective="funnel", num_boost_round=150)
    held_out = fit_ranker(split, params, catalog)
    served = refit_ranker(held_out, split, params, catalog)
    trees = held_out.booster.best_iteration
    assert trees >= 2 and served.booster.current_iteration() == trees
    assert served.calibrator == held_out.calibrator and served.features == held_out.features
    # What each learned from, for `nbm evaluate` to say when its test window is in-sample.
    assert pd.Timestamp(held_out.trained_until) == split.valid["timestamp"].max() < split.test_start
    assert pd.Timestamp(served.trained_until) == split.test["timestamp"].max()
    click = target_of(split.test, "click")
    fit_held_out = roc_auc_score(click, held_out.raw_score(split.test))
    fit_served = roc_auc_score(click, served.raw_score(split.test))
    assert fit_served > fit_held_out + 0.01           # it learned from the test window
    p = served.score(split.test)
    y = target_of(split.test, "convert")
    assert abs(p.mean() - y.mean()) < 0.25 * y.mean()
    # Conversion rates now count the test window's clicks: a message clicked only there has its own rate.
    everything = pd.concat([split.train, split.valid, split.test])
    clicked = everything[target_of(everything, "click").astype(bool)]
    assert served.followup.overall == pytest.approx(((clicked["label"] >= 3).sum() + 0.5) / (len(clicked) + 1.0))
    only_test = set(split.test["message_id"]) - set(pd.concat([split.train, split.valid])["message_id"])
    assert {m for m in only_test if m in set(clicked["message_id"])} <= set(served.followup.messages)
    # A held-out model with one tree (degenerate: the gate refuses it) is not refitted.
    stump = fit_ranker(split, RankerParams(objective="binary", target="click", num_boost_round=1))
    assert refit_ranker(stump, split, RankerParams(objective="binary", target="click")) is stump
