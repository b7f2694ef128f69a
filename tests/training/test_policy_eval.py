"""Off-policy evaluation of decision policies, the world's true values, and the promotion gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.training.worlds import evaluate_on_simulated_world
from training.job import _gate
from training.policy_eval import (LoggedDecisions, PolicyReport, Replay, _probability_of_logged, dr_terms,
                                  paired_difference)


def test_paired_difference_of_a_constant_shift_is_exact() -> None:
    rng = np.random.default_rng(0)
    b = rng.normal(size=5000)
    d = paired_difference(b + 0.25, b, n_bootstrap=200)
    assert d.value == pytest.approx(0.25) and d.ci_low == pytest.approx(0.25) and d.ci_high == pytest.approx(0.25)


def test_paired_difference_interval_matches_the_normal_theory() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.1, 1.0, 20_000), rng.normal(0.0, 1.0, 20_000)
    d = paired_difference(a, b, n_bootstrap=4000, seed=3)
    se = np.std(a - b, ddof=1) / np.sqrt(len(a))
    assert d.ci_low == pytest.approx(d.value - 1.96 * se, abs=0.2 * se)
    assert d.ci_high == pytest.approx(d.value + 1.96 * se, abs=0.2 * se)


def _part() -> pd.DataFrame:
    hour = 3_600 * 10**9
    return pd.DataFrame({"sent": [True, True, False, False],
                         "message_id": ["m1", "m2", None, None], "channel": ["email", "sms", None, None],
                         "send_at": [10 * hour + 7 * 60 * 10**9, 18 * hour, 0, 0]})


def test_probability_of_the_logged_action_matches_message_channel_and_hour() -> None:
    hour = 3_600 * 10**9
    part = _part()
    from training.policy_eval import _logged_keys

    logged = _logged_keys(part, 100)
    acts = (np.array([100, 100, 101, 102]), np.array(["m1", "m3", "m2", "m1"], object),
            np.array(["email", "email", "sms", "push"], object),
            np.array([10 * hour, 10 * hour, 19 * hour, 9 * hour]), np.array([0.7, 0.3, 1.0, 0.4]))
    p = _probability_of_logged(part, 100, logged, acts)
    # 100: the 10:07 send is the 10:00 slot's action; 101: same pair at another hour; 102: nothing with
    # probability 0.6; 103: the policy sends nothing for sure.
    assert p.tolist() == pytest.approx([0.7, 0.0, 0.6, 1.0])


def _report(reward, propensity, targets: dict, q: dict) -> PolicyReport:
    frame = pd.DataFrame({"reward": reward, "propensity": propensity, "q_logged": np.zeros(len(reward)),
                          "sent": reward > 0})
    logged = LoggedDecisions(frame, "decisions")
    return PolicyReport(logged, Replay(targets, q, {}), {}, None, 0, 0.0)


def test_the_gate_promotes_only_when_the_lower_bound_is_above_zero() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    reward = rng.exponential(1.0, n) * (rng.random(n) < 0.3)
    same = np.ones(n)
    report = _report(reward, np.ones(n), {"model": same, "champion": same}, {"model": np.zeros(n), "champion": np.zeros(n)})
    kept = _gate(report, "1", force=False)
    assert not kept.promoted and kept.difference.value == 0.0
    forced = _gate(report, "1", force=True)
    assert forced.promoted and forced.forced and "force" in forced.reason
    better = _report(reward, np.ones(n), {"model": same, "champion": same},
                     {"model": np.full(n, 0.2), "champion": np.zeros(n)})
    assert dr_terms(better.logged, better.replayed, "model").mean() > dr_terms(better.logged, better.replayed, "champion").mean()
    promoted = _gate(better, "1", force=False)
    assert promoted.promoted and promoted.difference.ci_low > 0
    assert _gate(None, None, force=False).promoted   # the first model becomes champion


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A small simulated world, a trained model and its evaluation (shared by the slow tests below)."""
    return evaluate_on_simulated_world(tmp_path_factory.mktemp("world"), n_users=3000, n_days=35, seed=12)


@pytest.mark.slow
def test_uniform_probabilities_agree_with_the_world_eligibility(evaluated) -> None:
    """An explored send's logged propensity ε/(n + 1) reveals the world's n eligible actions; the replay's
    uniform policy must give it probability 1/n (its own eligibility, from the data alone)."""
    sim, report = evaluated
    f = report.logged.frame
    explored = f["sent"].to_numpy() & (f["propensity"].to_numpy() < 1 - sim.epsilon)
    n_world = np.rint(sim.epsilon / f["propensity"].to_numpy()[explored] - 1)
    n_replay = 1.0 / report.replayed.target["uniform"][explored]
    assert explored.sum() > 200
    assert np.mean(n_world == np.rint(n_replay)) > 0.95


@pytest.mark.slow
def test_true_value_of_the_logged_actions_matches_the_realised_reward(evaluated) -> None:
    from training.simulated import true_values

    sim, report = evaluated
    f = report.logged.frame
    sent = np.flatnonzero(f["sent"].to_numpy())
    actions = pd.DataFrame({"decision": sent, "message_id": f["message_id"].to_numpy()[sent],
                            "channel": f["channel"].to_numpy()[sent], "send_at": f["send_at"].to_numpy()[sent],
                            "probability": np.ones(len(sent))})
    truth, seen = true_values(sim, f, {"logged": actions}, uniform=False)
    assert seen == len(f)
    reward = f["reward"].to_numpy()
    se = reward.std(ddof=1) / np.sqrt(len(reward))
    assert abs(truth["logged"] - reward.mean()) < 4 * se


@pytest.mark.slow
def test_estimates_cover_the_truth_where_the_log_supports_the_policy(evaluated) -> None:
    _, report = evaluated
    uniform = report.values["uniform"]
    assert uniform.ess > 500
    assert uniform.dr_low <= uniform.true_value <= uniform.dr_high
    assert uniform.snips_low <= uniform.true_value <= uniform.snips_high
    model = report.values["model"]
    assert model.true_value > 2 * uniform.true_value
    assert model.true_value > 1.3 * report.values["rules"].true_value
    # Every decision has a probability for the logged action under every policy; nothing is NaN.
    for name, target in report.replayed.target.items():
        assert np.isfinite(target).all() and ((target >= 0) & (target <= 1 + 1e-9)).all(), name
