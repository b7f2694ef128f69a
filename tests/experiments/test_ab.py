"""The A/B analysis against a naive per-user reference, `experiments.stats` itself and the seeded world's truth.

The world (``conftest.make_world``): 12,000 users; ``model`` converts more than ``rules`` (only in tier ``gold``),
``random`` has the truth of ``rules`` (an A/A pair), ``holdout`` is never sent anything.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from experiments import stats
from experiments.ab import ALL, METRICS, RESULT_COLUMNS, analyze
from nbm.config import NbmConfig
from nbm.errors import UnusableInputError, UsageError
from tests.experiments.conftest import EXPERIMENT, OTHER, SHARES, experiment_config, load

COUNTED = {"open": "opens", "click": "clicks", "convert": "converts", "unsubscribe": "unsubscribes"}
RATES = {"open_rate": "opens", "click_rate": "clicks", "convert_rate": "converts", "unsubscribe_rate": "unsubscribes"}
EXACT = {"rel": 1e-12, "abs": 1e-15}


@pytest.fixture(scope="module")
def result(dataset):
    return analyze(dataset, EXPERIMENT, experiment_config(), by="tier")


@pytest.fixture(scope="module")
def naive(world) -> pd.DataFrame:
    return naive_per_user(world)


def naive_per_user(tables: dict[str, pd.DataFrame], config: NbmConfig | None = None) -> pd.DataFrame:
    """Per-user counts by loops over rows, straight from the definitions (the slow, obviously right version)."""
    config = config or experiment_config()
    mine = tables["decisions"][tables["decisions"]["experiment"] == EXPERIMENT]
    arms: dict[str, set] = {}
    first: dict[str, pd.Timestamp] = {}
    for d in mine.itertuples():
        arms.setdefault(d.user_id, set()).add(d.arm)
        first[d.user_id] = min(first.get(d.user_id, d.timestamp), d.timestamp)
    end, ids, decisions = mine["timestamp"].max(), set(mine["decision_id"]), Counter(mine["user_id"])
    fields = ["sends", *COUNTED.values(), "revenue"]
    users = {u: {"arm": next(iter(a)), "decisions": decisions[u], **{f: 0 for f in fields},
                 **{"pre_" + f: 0 for f in fields}, "last_activity": None} for u, a in arms.items() if len(a) == 1}
    for e in tables["events"].itertuples():
        user = users.get(e.user_id)
        if user is None:
            continue
        start = first[e.user_id]
        inside, before = start <= e.timestamp <= end, start - (end - start) <= e.timestamp < start
        if e.event_type == "send":
            user["sends"] += e.decision_id in ids or (pd.isna(e.decision_id) and inside)
            user["pre_sends"] += before
        if e.event_type in ("visit", "click", "convert") and e.timestamp < start:  # the lifecycle's activity
            user["last_activity"] = max(user["last_activity"] or e.timestamp, e.timestamp)
        if e.event_type in COUNTED:
            for prefix, counted in (("", inside), ("pre_", before)):
                if counted:
                    user[prefix + COUNTED[e.event_type]] += 1
                    user[prefix + "revenue"] += e.value if e.event_type == "convert" else 0.0
    profiles = tables["users"].set_index("user_id")
    lc = config.lifecycle
    for user_id, user in users.items():
        start, profile = first[user_id], profiles.loc[user_id]
        since_activity = (start - user["last_activity"]).total_seconds() / 86_400 if user["last_activity"] else None
        if (start - profile["signup_at"]).total_seconds() / 86_400 < lc.new_days:
            user["lifecycle"] = "new"
        elif since_activity is not None and since_activity <= lc.at_risk_after_days:
            user["lifecycle"] = "active"
        elif since_activity is not None and since_activity <= lc.dormant_after_days:
            user["lifecycle"] = "at_risk"
        else:
            user["lifecycle"] = "dormant"
        consented = profile["consent"].split(";") if profile["consent"] else []
        user["channel"] = next((c for c in config.channels if c in consented), "none")
    return pd.DataFrame.from_dict(users, orient="index").sort_index()


def _row(result, metric: str, arm: str, segment: str = ALL, value: str = ALL) -> pd.Series:
    r = result.results
    rows = r[(r["metric"] == metric) & (r["arm"] == arm) & (r["segment"] == segment) & (r["segment_value"] == value)]
    assert len(rows) == 1
    return rows.iloc[0]


# ---------------------------------------------------------------------------------------- per-arm numbers


def test_per_user_counts_and_segments_equal_the_naive_reference(result, naive) -> None:
    users = result.users.sort_index()
    assert list(users.index) == list(naive.index)
    assert (users["arm"].astype(str) == naive["arm"]).all()
    for column in ["decisions", "sends", *COUNTED.values(), "pre_sends", *("pre_" + c for c in COUNTED.values())]:
        np.testing.assert_array_equal(users[column].to_numpy(), naive[column].to_numpy(), err_msg=column)
    np.testing.assert_allclose(users["revenue"], naive["revenue"], rtol=1e-12)
    np.testing.assert_allclose(users["pre_revenue"], naive["pre_revenue"], rtol=1e-12)
    assert (users["lifecycle"] == naive["lifecycle"]).all()
    assert (users["channel"] == naive["channel"]).all()
    assert set(naive["lifecycle"]) == {"new", "active", "at_risk", "dormant"}


def test_per_arm_values_equal_the_naive_reference(result, naive) -> None:
    arms = result.arms.set_index("arm")
    for arm, group in naive.groupby("arm"):
        assert arms.loc[arm, "users"] == len(group)
        assert arms.loc[arm, "decisions"] == group["decisions"].sum()
        assert arms.loc[arm, "sends"] == group["sends"].sum()
        for metric, column in RATES.items():
            assert _row(result, metric, arm)["value"] == pytest.approx((group[column] > 0).mean(), **EXACT)
        assert _row(result, "revenue_per_user", arm)["value"] == pytest.approx(group["revenue"].mean(), rel=1e-12)
        clicks_per_send = _row(result, "clicks_per_send", arm)["value"]
        if group["sends"].sum():
            assert clicks_per_send == pytest.approx(group["clicks"].sum() / group["sends"].sum(), **EXACT)
        else:
            assert np.isnan(clicks_per_send)
    assert arms.loc["holdout", "sends"] == 0


def test_comparisons_equal_experiments_stats_on_the_same_per_user_arrays(result, naive) -> None:
    """Every arm against rules, each metric: the fields of the result row are those of the stats call."""
    c = naive[naive["arm"] == "rules"]
    for arm in ("model", "random", "holdout"):
        t = naive[naive["arm"] == arm]
        expected = {m: stats.two_proportions(int((t[col] > 0).sum()), len(t), int((c[col] > 0).sum()), len(c))
                    for m, col in RATES.items()}
        expected["revenue_per_user"] = stats.welch(t["revenue"].to_numpy(), c["revenue"].to_numpy())
        expected["clicks_per_send"] = stats.ratio_metric(t["clicks"], t["sends"], c["clicks"], c["sends"])
        for metric, comparison in expected.items():
            row = _row(result, metric, arm)
            assert row["test"] == comparison.method
            for field in ("difference", "ci_low", "ci_high", "relative", "relative_ci_low", "relative_ci_high",
                          "statistic", "p_value"):
                assert row[field] == pytest.approx(getattr(comparison, field), nan_ok=True, **EXACT), (metric, field)
        adjusted = stats.cuped(np.r_[t["revenue"], c["revenue"]], np.r_[t["pre_revenue"], c["pre_revenue"]],
                               np.r_[np.ones(len(t), bool), np.zeros(len(c), bool)])
        row = _row(result, "revenue_per_user", arm)
        assert row["cuped_difference"] == pytest.approx(adjusted.comparison.difference, rel=1e-10)
        assert row["cuped_ci_low"] == pytest.approx(adjusted.comparison.ci_low, rel=1e-10)
        assert row["variance_reduction"] == pytest.approx(adjusted.variance_reduction, rel=1e-10)
        if arm == "holdout":
            continue
        # clicks per send: CUPED on the delta-method linearisation R + (clicks − R sends) / mean(sends)
        linear = [a["clicks"].sum() / a["sends"].sum() + (a["clicks"] - a["clicks"].sum() / a["sends"].sum()
                                                           * a["sends"]) / a["sends"].mean() for a in (t, c)]
        both = pd.concat([t, c])
        covariate = both["pre_clicks"] - both["pre_clicks"].sum() / both["pre_sends"].sum() * both["pre_sends"]
        adjusted = stats.cuped(np.r_[linear[0], linear[1]], covariate.to_numpy(float),
                               np.r_[np.ones(len(t), bool), np.zeros(len(c), bool)])
        row = _row(result, "clicks_per_send", arm)
        assert row["cuped_difference"] == pytest.approx(adjusted.comparison.difference, rel=1e-10)
        assert row["cuped_ci_high"] == pytest.approx(adjusted.comparison.ci_high, rel=1e-10)
        assert linear[0].mean() == pytest.approx(row["value"], rel=1e-12)  # the linearisation keeps the ratio
        assert adjusted.variance_reduction > 0


def test_the_known_effect_is_detected_and_the_aa_pair_is_not(result) -> None:
    """12,000 users. model − rules on conversion: P(≥ 1) = 1 − (1 + 0.4 lift)^−0.3 and the lift 3 in tier gold
    (30 %) give +3.46 points, about 4.8 standard errors: the interval covers it, p < 0.001, sequential p < 0.01.
    random − rules has the same truth: no metric rejects at α = 0.05 / 6 (Bonferroni over the six, so correct
    code fails this on at most 5 % of seeds)."""
    truth = 0.3 * ((1 - 2.2**-0.3) - (1 - 1.4**-0.3))
    model = _row(result, "convert_rate", "model")
    assert model["ci_low"] <= truth <= model["ci_high"]
    assert model["p_value"] < 0.001 and model["sequential_p_value"] < 0.01
    assert model["test"] == "two_proportions"
    for metric in (m.name for m in METRICS):
        aa = _row(result, metric, "random")
        assert aa["p_value"] > 0.05 / len(METRICS), metric
        assert np.isnan(aa["sequential_p_value"]) or aa["sequential_p_value"] > 0.05 / len(METRICS), metric
    assert _row(result, "revenue_per_user", "model")["test"] == "welch"
    assert _row(result, "clicks_per_send", "model")["test"] == "ratio"


def test_an_unsubscribe_rise_is_a_guardrail_breach_and_the_aa_pair_is_not(result) -> None:
    """model unsubscribes 2 % of sends against 1 %: flagged; the A/A arm and other metrics are not."""
    overall = result.results[result.results["segment"] == ALL]
    breaches = overall[overall["guardrail_breach"]]
    assert list(zip(breaches["arm"], breaches["metric"])) == [("model", "unsubscribe_rate")]
    assert not _row(result, "unsubscribe_rate", "holdout")["guardrail_breach"]  # a fall is no breach


def test_cuped_narrows_the_interval_when_the_pre_period_predicts_the_outcome(result) -> None:
    """Pre-period revenue, conversions and opens share each user's latent rate with the window's."""
    for metric in ("revenue_per_user", "convert_rate", "open_rate"):
        row = _row(result, metric, "model")
        assert row["variance_reduction"] > 0.02, metric
        assert row["cuped_ci_high"] - row["cuped_ci_low"] < row["ci_high"] - row["ci_low"], metric
    # nobody unsubscribes in the pre-period: the covariate is constant, CUPED is the plain test and says so
    row = _row(result, "unsubscribe_rate", "model")
    assert row["cuped_difference"] == pytest.approx(row["difference"]) and "no variance" in row["note"]
    assert row["variance_reduction"] == 0


def test_the_daily_series_ends_at_the_full_window_and_matches_a_naive_count(result, world) -> None:
    daily = result.daily
    last = daily[daily["day"] == daily["day"].max()]
    for r in last.itertuples():
        overall = _row(result, r.metric, r.arm)
        assert r.difference == pytest.approx(overall["difference"], **EXACT)
        assert r.p_value == pytest.approx(overall["p_value"], rel=1e-9)
        assert r.sequential_p_value == overall["sequential_p_value"]
    for (arm, metric), series in daily.groupby(["arm", "metric"]):   # the always-valid p from the counts, again
        if next(m for m in METRICS if m.name == metric).kind != "rate":
            continue
        x_t = np.round(series["value"] * series["n_users"]).to_numpy()
        x_c = np.round(series["control_value"] * series["n_control_users"]).to_numpy()
        again = stats.msprt_proportions(x_t, series["n_users"].to_numpy(), x_c, series["n_control_users"].to_numpy())
        np.testing.assert_allclose(series["sequential_p_value"].to_numpy(), again.p_value, rtol=1e-9, atol=1e-300)
    for _, series in daily.groupby(["arm", "metric"]):
        assert (np.diff(series["n_users"]) >= 0).all() and (np.diff(series["sequential_p_value"]) <= 0).all()
    # the row of day 2026-10-05 holds everything before 2026-10-06: model's users entered and converted, by loops
    cut = pd.Timestamp("2026-10-06T00:00:00Z")
    users = result.users[result.users["arm"] == "model"]
    entered = {u for u, t in users["first_t"].items() if t < cut.value}
    converts = world["events"][world["events"]["event_type"] == "convert"]
    converted = {e.user_id for e in converts.itertuples()
                 if e.user_id in entered and users.loc[e.user_id, "first_t"] <= e.timestamp.value < cut.value}
    series = daily[(daily["metric"] == "convert_rate") & (daily["arm"] == "model")].set_index("day")
    day4 = series.loc[pd.Timestamp("2026-10-05T00:00:00Z")]
    assert day4["n_users"] == len(entered)
    assert day4["value"] == pytest.approx(len(converted) / len(entered), **EXACT)


# -------------------------------------------------------------------------------------------------- SRM


def _drop_users(world, arm: str, share: float, seed: int = 0) -> dict[str, pd.DataFrame]:
    decisions = world["decisions"]
    ids = decisions.loc[(decisions["arm"] == arm) & (decisions["experiment"] == EXPERIMENT), "user_id"].unique()
    dropped = np.random.default_rng(seed).choice(ids, int(share * len(ids)), replace=False)
    return {**world, "decisions": decisions[~decisions["user_id"].isin(dropped)]}


def test_srm_is_flagged_when_users_of_one_arm_are_lost_and_not_otherwise(result, world) -> None:
    assert not result.srm.mismatch and result.exit_code == 0 and result.problems == ()
    lost = analyze(load(_drop_users(world, "random", 0.15)), EXPERIMENT, experiment_config())
    assert lost.srm.mismatch and lost.srm.p_value < 0.001
    assert lost.exit_code == 1 and "sample ratio mismatch" in lost.problems[0]
    users = lost.arms.set_index("arm")["users"] / result.arms.set_index("arm")["users"]
    assert users["random"] < 0.86 and (users.drop("random") == 1).all()


# ---------------------------------------------------------------------------------------------- segments


def test_segment_p_values_are_benjamini_hochberg_adjusted_over_all_segment_tests(result) -> None:
    rows = result.results
    tested = rows[(rows["segment"] != ALL) & rows["p_value"].notna()]
    assert len(tested) > 100 and set(tested["segment"]) == {"lifecycle", "channel", "tier"}
    expected = multipletests(tested["p_value"].to_numpy(), method="fdr_bh")[1]
    np.testing.assert_allclose(tested["p_adjusted"].to_numpy(), expected, rtol=1e-12)
    assert rows.loc[rows["segment"] == ALL, "p_adjusted"].isna().all()
    assert rows.loc[(rows["segment"] != ALL) & rows["p_value"].isna(), "p_adjusted"].isna().all()


def test_the_planted_segment_effect_shows_where_it_was_planted(result) -> None:
    """model lifts conversion in tier gold only: gold survives the correction, silver does not."""
    assert _row(result, "convert_rate", "model", "tier", "gold")["p_adjusted"] < 0.001
    assert _row(result, "convert_rate", "model", "tier", "silver")["p_adjusted"] > 0.05


def test_empty_segments_are_left_out_with_one_note(result) -> None:
    """Nobody consents to in_app or wechat: no rows of nothing for them, one note naming both."""
    rows = result.results
    assert result.empty_segments == (("channel", "in_app"), ("channel", "wechat"))
    assert not ((rows["segment"] == "channel") & rows["segment_value"].isin(["in_app", "wechat"])).any()
    said = [n for n in result.notes if "segments with no users" in n]
    assert said == ["segments with no users, left out of the results: channel = in_app, channel = wechat"]
    assert not rows["note"].str.contains("segment has no users").any()
    channels = rows.loc[rows["segment"] == "channel", "segment_value"]
    assert set(channels) == set(result.users["channel"]) and "none" in set(channels)  # those with users stay
    assert (rows.loc[rows["segment"] != ALL, "n_users"] + rows.loc[rows["segment"] != ALL, "n_control_users"]
            > 0).all()


def test_a_numeric_attribute_is_cut_into_quartiles(dataset) -> None:
    result = analyze(dataset, EXPERIMENT, experiment_config(), by="age")
    values = result.results.loc[result.results["segment"] == "age", "segment_value"].unique()
    assert len(values) == 4 and any("quartile" in n for n in result.notes)


# -------------------------------------------------------------------------------------------- degenerate


def test_an_empty_arm_gives_explicit_rows_and_fails_srm(world) -> None:
    result = analyze(load(_drop_users(world, "random", 1.0)), EXPERIMENT, experiment_config())
    rows = result.results[(result.results["arm"] == "random") & (result.results["segment"] == ALL)]
    assert len(rows) == len(METRICS) and (rows["n_users"] == 0).all() and rows["p_value"].isna().all()
    assert rows["note"].str.contains("empty arm").all()
    assert result.srm.mismatch and "arm `random` has no users" in result.notes


def test_the_holdout_clicks_per_send_is_undefined_with_a_note(result) -> None:
    row = _row(result, "clicks_per_send", "holdout")
    assert np.isnan(row["value"]) and np.isnan(row["difference"]) and np.isnan(row["p_value"])
    assert "denominator sums to 0 in treatment" in row["note"] and "CUPED" in row["note"]
    assert row["test"] == "ratio"


def test_zero_conversions_everywhere_give_explicit_results(world) -> None:
    events = world["events"]
    result = analyze(load({**world, "events": events[events["event_type"] != "convert"]}), EXPERIMENT,
                     experiment_config())
    for metric in ("convert_rate", "revenue_per_user"):
        row = _row(result, metric, "model")
        assert row["value"] == 0 and row["difference"] == 0 and np.isnan(row["p_value"])
        assert "zero variance" in row["note"] and "control is 0" in row["note"]
        assert row["sequential_p_value"] == 1.0


def test_an_unknown_experiment_is_a_usage_error_listing_those_present(dataset) -> None:
    with pytest.raises(UsageError, match="--experiment") as error:
        analyze(dataset, "winter-test", experiment_config())
    assert f"'{EXPERIMENT}'" in str(error.value) and f"'{OTHER}'" in str(error.value)


@pytest.mark.parametrize(("option", "arguments"), [("--control", {"control": "nobody"}), ("--by", {"by": "nothing"}),
                                                    ("--by", {"by": "consent"})])
def test_a_bad_option_is_a_usage_error_naming_it(dataset, option, arguments) -> None:
    with pytest.raises(UsageError, match=option):
        analyze(dataset, EXPERIMENT, experiment_config(), **arguments)


def test_no_decision_log_is_unusable_input(world) -> None:
    dataset = load({k: v for k, v in world.items() if k != "decisions"})
    with pytest.raises(UnusableInputError, match="decision log"):
        analyze(dataset, EXPERIMENT, experiment_config())


def test_users_in_two_arms_are_excluded_and_reported(world, result) -> None:
    decisions = world["decisions"]
    rules = decisions[(decisions["arm"] == "rules") & (decisions["experiment"] == EXPERIMENT)]
    twice = rules.drop_duplicates("user_id").head(25).assign(arm="model")
    twice["decision_id"] = "x" + twice["decision_id"]
    mixed = analyze(load({**world, "decisions": pd.concat([decisions, twice])}), EXPERIMENT, experiment_config())
    assert mixed.users_in_several_arms == 25 and mixed.exit_code == 1
    assert "25 users have decisions in more than one arm" in mixed.problems[0]
    assert not mixed.users.index.isin(twice["user_id"]).any()
    users = mixed.arms.set_index("arm")["users"] - result.arms.set_index("arm")["users"]
    assert users.to_dict() == {"model": 0, "rules": -25, "random": 0, "holdout": 0}


def test_without_an_experiment_column_every_decision_with_an_arm_is_taken_and_said(world) -> None:
    decisions = world["decisions"]
    only = decisions[decisions["experiment"] == EXPERIMENT].drop(columns="experiment")
    result = analyze(load({**world, "decisions": only}), EXPERIMENT, experiment_config())
    assert any("no `experiment` column" in n for n in result.notes)
    assert result.arms["users"].sum() == only["user_id"].nunique()


def test_another_experiments_design_gives_equal_shares_and_the_rules_control(dataset) -> None:
    result = analyze(dataset, EXPERIMENT, NbmConfig())
    assert result.control == "rules"
    np.testing.assert_allclose(result.arms["expected_share"], 0.25)
    assert result.srm.mismatch  # 35/30/25/10 is not an equal split: the check sees it
    holdout = analyze(dataset, EXPERIMENT, experiment_config(), control="holdout")
    assert holdout.control == "holdout" and _row(holdout, "convert_rate", "rules")["difference"] > 0


def test_results_have_one_row_per_arm_metric_and_segment_value(result) -> None:
    rows = result.results
    assert tuple(rows.columns) == RESULT_COLUMNS
    segment_values = 1 + 4 + (len(NbmConfig().channels) + 1 - len(result.empty_segments)) + 3
    assert len(rows) == len(SHARES) * len(METRICS) * segment_values
    assert not rows.duplicated(["arm", "metric", "segment", "segment_value"]).any()
