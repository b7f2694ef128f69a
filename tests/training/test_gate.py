"""The promotion gate: a degenerate model is never promoted, and an unmeasured comparison keeps the champion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from nbm.config import TrainingConfig
from training.gate import NO_SERVING, ModelEvidence, degeneracy, promotion_gate
from training.policy_eval import LoggedDecisions, PolicyReport, Replay, estimates

HEALTHY = ModelEvidence(target="convert", train_positives=420, valid_positives=130, test_auc=0.71, best_iteration=47,
                        mean_prediction=0.0134, prediction_std=0.0151, distinct_predictions=38)


def test_a_healthy_model_is_not_degenerate() -> None:
    assert degeneracy(HEALTHY) == ()


@pytest.mark.parametrize("change, reasons", [
    # the lambdarank model of issue 39: one tree, AUC 0.50, every prediction the base rate
    (dict(test_auc=0.5, best_iteration=1, mean_prediction=0.0145, prediction_std=0.0, distinct_predictions=1),
     ("held-out AUC 0.500 ≤ 0.52", "best_iteration 1 ≤ 1",
      "near-constant test predictions: std 0 ≤ 1% of the mean 0.0145 (1 distinct value)")),
    # a target without positives: nothing to learn, an AUC that does not exist
    (dict(train_positives=0, valid_positives=0, test_auc=float("nan")),
     ("no positive of the target `convert` in the training window",
      "no positive of the target `convert` in the validation window",
      "held-out AUC n/a (the test window holds one class only)")),
    (dict(test_auc=float("nan")), ("held-out AUC n/a (the test window holds one class only)",)),
    (dict(valid_positives=0), ("no positive of the target `convert` in the validation window",)),
    (dict(test_auc=0.52), ("held-out AUC 0.520 ≤ 0.52",)),                    # the bound itself is degenerate
    (dict(test_auc=0.31), ("held-out AUC 0.310 ≤ 0.52",)),                    # worse than chance is no better
    (dict(best_iteration=1), ("best_iteration 1 ≤ 1",)),
    (dict(best_iteration=0), ("best_iteration 0 ≤ 1",)),
    (dict(prediction_std=0.0, distinct_predictions=1),
     ("near-constant test predictions: std 0 ≤ 1% of the mean 0.0134 (1 distinct value)",)),
    (dict(prediction_std=0.000134, distinct_predictions=5),                   # std exactly 1 % of the mean
     ("near-constant test predictions: std 0.00013 ≤ 1% of the mean 0.0134 (5 distinct values)",)),
    (dict(mean_prediction=0.0, prediction_std=0.0, distinct_predictions=1),  # all zero: 0 ≤ 1 % of 0
     ("near-constant test predictions: std 0 ≤ 1% of the mean 0 (1 distinct value)",)),
])
def test_each_degenerate_model_says_why(change: dict, reasons: tuple[str, ...]) -> None:
    assert degeneracy(replace(HEALTHY, **change)) == reasons


@pytest.mark.parametrize("change", [
    dict(test_auc=0.521), dict(best_iteration=2),
    dict(prediction_std=0.000136, distinct_predictions=2),                   # std just above 1 % of the mean
    dict(train_positives=1, valid_positives=1),
])
def test_just_inside_every_bound_is_not_degenerate(change: dict) -> None:
    assert degeneracy(replace(HEALTHY, **change)) == ()


def test_the_near_constant_rule_on_predictions() -> None:
    """Both sides of "std ≤ 1 % of the mean" on prediction vectors, as ``training.metrics.evaluate`` summarises
    them: a coefficient of variation of 0.9 % is near-constant, 1.1 % is not."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal(10_000)
    z = (z - z.mean()) / z.std()
    for cv, degenerate in ((0.009, True), (0.011, False)):
        p = 0.04 * (1 + cv * z)
        evidence = replace(HEALTHY, mean_prediction=float(p.mean()), prediction_std=float(p.std()),
                           distinct_predictions=len(np.unique(p)))
        assert bool(degeneracy(evidence)) is degenerate, cv


def test_the_auc_bound_is_a_setting() -> None:
    stricter = TrainingConfig(min_test_auc=0.6)
    assert degeneracy(replace(HEALTHY, test_auc=0.58), stricter) == ("held-out AUC 0.580 ≤ 0.60",)
    assert degeneracy(replace(HEALTHY, test_auc=0.58)) == ()


def test_evidence_comes_from_the_job_metrics() -> None:
    metrics = {"train_positives": 420.0, "valid_positives": 130.0, "test_auc": 0.71, "best_iteration": 47.0,
               "test_mean_prediction": 0.0134, "test_prediction_std": 0.0151, "test_distinct_predictions": 38.0,
               "test_log_loss": 0.07}
    assert ModelEvidence.of(metrics, "convert") == HEALTHY


def _report(n: int = 5_000, model_support: int | None = None, champion_support: int | None = None,
            model_q: float = 1.0) -> PolicyReport:
    """Logged decisions with propensity 1 and reward 1 on 30 % of them; the champion picks every logged action
    (ESS n unless ``champion_support``), the model those of the first ``model_support`` decisions only (its
    ESS), with a reward model worth ``model_q`` per decision: its DR value beats the champion's 0.3."""
    rng = np.random.default_rng(7)
    reward = (rng.random(n) < 0.3).astype(float)
    frame = pd.DataFrame({"reward": reward, "propensity": np.ones(n), "q_logged": np.zeros(n), "sent": True})
    logged = LoggedDecisions(frame, "decisions")
    support = lambda k: (np.arange(n) < (n if k is None else k)).astype(float)  # noqa: E731
    replayed = Replay({"model": support(model_support), "champion": support(champion_support)},
                      {"model": np.full(n, model_q), "champion": np.zeros(n)}, {})
    return PolicyReport(logged, replayed, estimates(logged, replayed, n_bootstrap=50), None, 0, 0.0)


DEGENERATE = ("held-out AUC 0.500 ≤ 0.52", "best_iteration 1 ≤ 1")


@pytest.mark.parametrize("report, champion, force, promoted, status, says", [
    # a degenerate model: never promoted — first model, forced, or winning the DR comparison
    (None, None, False, False, "degenerate",
     f"degenerate model: held-out AUC 0.500 ≤ 0.52; best_iteration 1 ≤ 1; {NO_SERVING}"),
    (None, "3", True, False, "degenerate",
     "--force-promote does not promote a degenerate model; champion stays version 3"),
    (_report(), "3", False, False, "degenerate", "champion stays version 3"),
])
def test_the_gate_never_promotes_a_degenerate_model(report, champion, force, promoted, status, says) -> None:
    gate = promotion_gate(report, champion, force, DEGENERATE)
    assert (gate.promoted, gate.status, gate.degenerate) == (promoted, status, DEGENERATE)
    assert says in gate.reason
    assert promotion_gate(report, champion, force).promoted   # the same figures, not degenerate: promoted


@pytest.mark.parametrize("report, champion, force, promoted, status, says", [
    (_report(), "3", False, True, "promoted", "lower bound above zero"),
    # the model's policy matches 5 logged decisions (ESS 5): its winning DR difference is no evidence
    (_report(model_support=5), "3", False, False, "kept_champion",
     "the model's policy has an effective sample size of 5 < 100: the DR comparison with the champion is unusable; "
     "champion kept"),
    (_report(model_support=0), "3", False, False, "kept_champion", "effective sample size of 0 < 100"),
    (_report(champion_support=40), "3", False, False, "kept_champion",
     "the champion's policy has an effective sample size of 40 < 100"),
    (_report(model_support=5), "3", True, True, "promoted", "unusable; promoted by --force-promote"),
    # no champion: a model that is not degenerate is the first champion, its unmeasured value said
    (_report(model_support=5), None, False, True, "promoted",
     "no champion yet (policy value unmeasured: the model's policy has an effective sample size of 5 < 100)"),
    (None, None, False, True, "promoted", "no champion yet"),
])
def test_the_gate_compares_only_on_supported_estimates(report, champion, force, promoted, status, says) -> None:
    gate = promotion_gate(report, champion, force)
    assert (gate.promoted, gate.status, gate.degenerate) == (promoted, status, ())
    assert says in gate.reason


def test_the_ess_minimum_is_what_keeps_the_champion() -> None:
    weak = _report(model_support=5)
    assert not promotion_gate(weak, "3", False).promoted
    assert promotion_gate(weak, "3", False, min_policy_ess=5).promoted
    assert TrainingConfig().min_policy_ess == 100
