"""`nbm simulate --ab`: an A/B test played in the simulated world through the service's decision path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nbm.cli import main
from nbm.config import ExperimentConfig
from nbm.policy.assign import assign


@pytest.mark.slow
def test_an_ab_test_runs_through_the_service_and_writes_what_nbm_ab_reads(served_world, tmp_path, monkeypatch) -> None:
    data, home = served_world
    monkeypatch.setenv("NBM_HOME", str(home))
    out = tmp_path / "ab"
    assert main(["simulate", "--ab", "--data", str(data), "--out", str(out), "--days", "3",
                 "--experiment", "trial", "--seed", "1"]) == 0
    assert main(["validate", "--data", str(out)]) == 0                 # the data contract, no problem row
    decisions = pd.read_parquet(out / "decisions.parquet")
    events = pd.read_parquet(out / "events.parquet")
    mine = decisions[decisions["experiment"] == "trial"]
    assert mine["timestamp"].dt.normalize().nunique() == 3
    # Every decision of the experiment has the user's assigned arm (default shares: model, rules, holdout).
    arms = assign(mine["user_id"].tolist(), ExperimentConfig(name="trial"))
    assert (mine["arm"].to_numpy() == arms).all()
    assert set(arms) == {"model", "rules", "holdout"}
    # The sends of the experiment carry the service's decision ids; the holdout's users get none.
    start = mine["timestamp"].min()
    sends = events[(events["event_type"] == "send") & (events["timestamp"] >= start)]
    assert len(sends) > 100
    assert sends["decision_id"].isin(mine["decision_id"]).all()
    by_decision = mine.set_index("decision_id")["arm"]
    assert "holdout" not in set(by_decision.loc[sends["decision_id"]])
    outcomes = events[events["event_type"].isin(["open", "click"]) & (events["timestamp"] >= start)
                      & events["decision_id"].notna()]
    outcomes = outcomes[~outcomes["decision_id"].isin(decisions["decision_id"][decisions["experiment"].isna()])]
    assert outcomes["decision_id"].isin(mine["decision_id"]).all() and len(outcomes) > 10
    # The caps held on what was really sent: one send per user, channel and day at most (default policy).
    day = sends["timestamp"].dt.floor("D")
    assert sends.groupby([sends["user_id"], sends["channel"], day]).size().max() == 1
    # Feedback flowed back: the state store received the sends and credited the explorer.
    from serving.state import SQLiteState

    state = SQLiteState(out / "state.db")
    received = state.feedback_events()
    assert set(sends["event_id"]) <= set(received["event_id"])
    assert sum(s + f for s, f in state.explorer_statistics().values()) >= len(sends)      # each send an impression
    truth = json.loads((out / "ab_truth.json").read_text())
    assert truth["arms"]["holdout"]["sends"] == 0 and truth["arms"]["model"]["true_value"] > 0
    assert truth["arms"]["model"]["sends"] + truth["arms"]["rules"]["sends"] == len(sends)
    # Propensities: rules 1, model in (0, 1]
    p = mine.set_index("arm")["propensity"]
    assert (p.loc["rules"] == 1.0).all() and ((p.loc["model"] > 0) & (p.loc["model"] <= 1)).all()
    assert np.isfinite(mine["propensity"]).all()
    # nbm ab reads it: the default design's shares (no configuration), so no sample-ratio mismatch.
    report = tmp_path / "report"
    assert main(["ab", "--data", str(out), "--experiment", "trial", "--out", str(report)]) == 0
    results = pd.read_csv(report / "results.csv")
    overall = results[(results["segment"] == "all") & (results["metric"] == "convert_rate")].set_index("arm")
    assert set(overall.index) == {"model", "rules", "holdout"} and (overall["control"] == "rules").all()
    assert overall.loc["model", "n_users"] == mine.loc[mine["arm"] == "model", "user_id"].nunique()
    assert "<img" in (report / "report.html").read_text()
    # A design that the assignment did not follow is a sample-ratio mismatch (exit 1); a malformed one, usage.
    assert main(["ab", "--data", str(out), "--experiment", "trial", "--out", str(report),
                 "--shares", "model=0.8,rules=0.1,holdout=0.1"]) == 1
    assert main(["ab", "--data", str(out), "--experiment", "trial", "--shares", "model=0.8,rules"]) == 2
    assert main(["ab", "--data", str(out), "--experiment", "trial", "--shares", "model=0.8,rules=0.8"]) == 2


@pytest.mark.slow
def test_nbm_evaluate_values_the_champion_offline(served_world, tmp_path, monkeypatch) -> None:
    data, home = served_world
    monkeypatch.setenv("NBM_HOME", str(home))
    out = tmp_path / "evaluation.json"
    assert main(["evaluate", "--data", str(data), "--test-days", "5", "--max-decisions", "3000", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["policies"]) == {"model", "uniform", "popular", "rules"}
    assert 0.5 < result["metrics"]["test_auc"] <= 1.0
    assert result["decisions"] == 3000
    # The champion was refitted on this whole log: the fit its training judged, held out from the window, is
    # what gets evaluated (the registered one would be in-sample here).
    assert result["fit"] == "held_out" and result["in_sample"] is False and "held-out fit" in result["model"]
    from training.evaluate import evaluate_model
    from serving.registry import load_model
    from nbm.config import load_config

    config = load_config()
    served = load_model("models:/nbm-ranker@champion", config)
    assert served.held_out_uri is not None
    in_sample = evaluate_model(data, config, served.artifact, "served", test_days=5, max_decisions=200)
    assert in_sample.in_sample and in_sample.fit == "registered"
    assert in_sample.metrics["test_auc"] > result["metrics"]["test_auc"]      # it learned from the window
    for name, v in result["policies"].items():
        assert v["snips_low"] <= v["snips"] <= v["snips_high"], name
        assert v["true_value"] is not None and v["true_value"] >= 0     # a simulated world: its ground truth
    assert main(["evaluate", "--data", str(data), "--model", "models:/nbm-ranker@nobody"]) == 2
