"""The verdict per metric at the top of the A/B report: winner, lift with interval, certainty, SRM status.

On the seeded 12,000-user world (``conftest.make_world``): ``model`` converts more than ``rules`` and
unsubscribes twice as often (a guardrail breach), ``random`` is an A/A twin of ``rules``, ``holdout`` is never
sent anything. The rules of the verdict are checked by editing one row of a real result.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re

import numpy as np
import pytest

from experiments import stats
from experiments.ab import ALL, METRICS, analyze
from experiments.ab_report import render_html, verdicts
from tests.experiments.conftest import EXPERIMENT, experiment_config


@pytest.fixture(scope="module")
def result(dataset):
    return analyze(dataset, EXPERIMENT, experiment_config(), by="tier")


def _by_metric(result) -> dict:
    return {v.metric: v for v in verdicts(result)}


def _edit(result, metric: str, arm: str, **values):
    """``result`` with the overall row of ``arm`` × ``metric`` changed."""
    rows = result.results.copy()
    where = (rows["segment"] == ALL) & (rows["metric"] == metric) & (rows["arm"] == arm)
    assert where.sum() == 1
    for column, value in values.items():
        rows.loc[where, column] = value
    return dataclasses.replace(result, results=rows)


def test_one_verdict_per_metric_whose_numbers_are_the_overall_rows(result) -> None:
    found = verdicts(result)
    assert [v.metric for v in found] == [m.name for m in METRICS]
    overall = result.results[result.results["segment"] == ALL].set_index(["arm", "metric"])
    for verdict in found:
        row = overall.loc[(verdict.arm, verdict.metric)]
        for field in ("relative", "relative_ci_low", "relative_ci_high", "difference", "ci_low", "ci_high",
                      "p_value", "sequential_p_value"):
            assert getattr(verdict, field) == pytest.approx(row[field], nan_ok=True, rel=1e-15), field
        assert verdict.control == "rules" and verdict.srm_passed
        assert verdict.sentence.startswith(verdict.metric) and "SRM check passed (p = " in verdict.sentence


def test_the_planted_effect_wins_with_its_log_ratio_interval_and_the_aa_twin_never_does(result) -> None:
    convert = _by_metric(result)["convert_rate"]
    assert (convert.winner, convert.arm, convert.certainty) == ("model", "model", "significant")
    assert 0 < convert.relative_ci_low < convert.relative < convert.relative_ci_high
    lift = f"{convert.relative:+.1%} [{convert.relative_ci_low:+.1%}, {convert.relative_ci_high:+.1%}]"
    assert f"convert_rate: model wins against rules, {lift}" in convert.sentence
    assert "always-valid p = " in convert.sentence
    assert all(v.winner != "random" for v in verdicts(result))


def test_a_guardrail_breach_leads_its_verdict(result) -> None:
    """model raises the unsubscribe rate: the sentence opens on the breach, though holdout lowers it."""
    unsubscribe = _by_metric(result)["unsubscribe_rate"]
    assert unsubscribe.arm == "model" and unsubscribe.difference > 0 and unsubscribe.p_value < 0.05
    assert unsubscribe.sentence.startswith("unsubscribe_rate (guardrail, lower is better): guardrail breach, "
                                           "model raises it against rules")
    assert unsubscribe.winner == "holdout"  # sent nothing, unsubscribes never: lower, significantly


def test_an_arm_without_a_test_is_said_so(result) -> None:
    assert "holdout not tested" in _by_metric(result)["clicks_per_send"].sentence  # the holdout has no sends


@pytest.mark.parametrize(("sequential", "p_value", "certainty", "winner", "words"), [
    (0.2, 1e-4, "significant_at_end_only", "model", "only if this is the planned end"),
    (0.001, 1e-4, "significant", "model", "it holds however often one looked"),
    (np.nan, 1e-4, "significant", "model", "significant at α = 0.05 (p = 1.0e-04)"),
    (0.9, 0.3, "not_significant", "", "not significant at α = 0.05 (p = 0.300)"),
])
def test_certainty_follows_the_fixed_and_the_always_valid_p_value(result, sequential, p_value, certainty, winner,
                                                                  words) -> None:
    edited = _edit(result, "convert_rate", "model", sequential_p_value=sequential, p_value=p_value)
    verdict = _by_metric(edited)["convert_rate"]
    assert verdict.certainty == certainty and verdict.winner == winner
    assert words in verdict.sentence
    if not winner:
        assert "no winner" in verdict.sentence


def test_a_significant_fall_is_no_win(result) -> None:
    """Every treatment arm worse than the control: no winner, the sentence says which arm does worse."""
    rows = result.results
    worse = rows.copy()
    overall = (worse["segment"] == ALL) & (worse["metric"] == "convert_rate") & (worse["arm"] != "rules")
    worse.loc[overall, "difference"] = -np.abs(worse.loc[overall, "difference"])
    verdict = _by_metric(dataclasses.replace(result, results=worse))["convert_rate"]
    assert verdict.winner == "" and "no arm beats rules; model does worse" in verdict.sentence


def test_a_sample_ratio_mismatch_is_in_every_verdict(result) -> None:
    broken = dataclasses.replace(result, srm=stats.srm([5_000, 5_400], [0.5, 0.5]))
    for verdict in verdicts(broken):
        assert not verdict.srm_passed
        assert f"SRM check failed (p = {broken.srm.p_value:.1e})" in verdict.sentence
        assert "do not trust this" in verdict.sentence
    page = render_html(broken)
    assert page.index('class="banner srm"') < page.index('<h2 id="verdict">') < page.index("<h2>Arms")
    assert page.count('<li class="untrusted">') == len(METRICS)


def test_the_report_opens_on_the_verdicts_and_its_relative_intervals_stay_above_minus_100(result) -> None:
    page = render_html(result)
    verdict = page.index('<h2 id="verdict">')
    assert page.index("<h2") == verdict  # the first section
    for v in verdicts(result):
        assert html.escape(v.sentence, quote=True) in page
    lows = [float(low) for low in re.findall(r"\[([+-]\d+\.\d+)%, [+-]\d+\.\d+%\]", page)]
    assert len(lows) > 50 and min(lows) > -100
    overall = result.results
    tested = overall["relative_ci_low"].notna()
    assert tested.sum() > 100 and (overall.loc[tested, "relative_ci_low"] > -1).all()
    assert not math.isnan(overall.loc[tested, "relative_ci_high"].min())


def test_without_a_treatment_arm_the_verdict_says_there_is_nothing_to_compare(result) -> None:
    only_control = dataclasses.replace(result, results=result.results[result.results["arm"] == "rules"])
    for verdict in verdicts(only_control):
        assert (verdict.winner, verdict.arm, verdict.certainty) == ("", "", "untestable")
        assert "no treatment arm to compare with rules" in verdict.sentence and math.isnan(verdict.p_value)
