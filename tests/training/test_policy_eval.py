"""Off-policy evaluation of decision policies, the world's true values, and the promotion gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.features.conftest import config, dataset  # noqa: F401 (fixtures)
from tests.training.worlds import evaluate_on_simulated_world
from training.gate import promotion_gate
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
    kept = promotion_gate(report, "1", force=False)
    assert not kept.promoted and kept.difference.value == 0.0
    forced = promotion_gate(report, "1", force=True)
    assert forced.promoted and forced.forced and "force" in forced.reason
    better = _report(reward, np.ones(n), {"model": same, "champion": same},
                     {"model": np.full(n, 0.2), "champion": np.zeros(n)})
    assert dr_terms(better.logged, better.replayed, "model").mean() > dr_terms(better.logged, better.replayed, "champion").mean()
    promoted = promotion_gate(better, "1", force=False)
    assert promoted.promoted and promoted.difference.ci_low > 0
    assert promotion_gate(None, None, force=False).promoted   # the first model becomes champion


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
def test_with_quiet_hours_the_uniform_target_is_the_worlds_uniform_over_nbms_slots(tmp_path) -> None:
    """nbm's default quiet hours (21, 8): the replay's uniform policy (1/π actions at a decision with a
    send) has as many actions as the world's truth counts (``training.simulated.uniform_actions``: the
    21:00 slots moved to 08:00, equal instants merged, each message within its window at the moved time) —
    the truth values the policy that is estimated. Measured: 3,718 of 3,719 agree."""
    from nbm.simulate.generate import environment_for, logging_policy
    from training.simulated import uniform_actions

    sim, report = evaluate_on_simulated_world(tmp_path, n_users=3000, n_days=35, seed=12, quiet_hours=(21, 8))
    f = report.logged.frame
    target = report.replayed.target["uniform"]
    asked = np.flatnonzero((target > 0) & f["sent"].to_numpy(dtype=bool))
    env, policy = environment_for(sim), logging_policy(sim)
    now = f["now"].to_numpy(dtype="int64")[asked]
    users = pd.Index(env.world.population.user_ids).get_indexer(f["user_id"].to_numpy(dtype=object)[asked])
    count = np.full(len(asked), -1)

    def observe(ctx) -> None:
        today = np.flatnonzero(now == ctx.now)
        if len(today):
            count[today] = np.bincount(uniform_actions(ctx, np.searchsorted(ctx.users, users[today]), (21, 8))[0],
                                       minlength=len(today))

    while env.now <= now.max():
        env.step(policy, observer=observe)
    assert len(asked) > 2000 and (count >= 0).all()
    assert np.mean(np.rint(1.0 / target[asked]) == count) > 0.99


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


HOUR_NS = 3_600 * 10**9


def _events(sends: list[int], delays: list[float | None]) -> pd.DataFrame:
    """Sends at ``sends`` (hours), each converting ``delay`` hours later (None: never), ids linking them."""
    rows = []
    for i, (at, delay) in enumerate(zip(sends, delays)):
        rows.append(("send", at * HOUR_NS, f"u{i}", "m1", f"d{i}", np.nan))
        if delay is not None:
            rows.append(("convert", int((at + delay) * HOUR_NS), f"u{i}", "m1", f"d{i}", 10.0))
    frame = pd.DataFrame(rows, columns=["event_type", "timestamp", "user_id", "message_id", "decision_id", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def test_outcome_horizon_is_the_quantile_of_complete_conversion_delays() -> None:
    from types import SimpleNamespace

    from nbm.config import AttributionConfig
    from training.policy_eval import outcome_horizon

    delays = [float(d) for d in range(1, 101)]                      # 1 … 100 h, sends long before the end
    early = list(range(0, 100))
    late = [2300 + i for i in range(40)]                             # inside the last window: cut short, left out
    events = _events(early + late + [2400], delays + [0.5] * 40 + [None])
    window = AttributionConfig(convert_days=7)
    assert outcome_horizon(SimpleNamespace(events=events), window) == pytest.approx(np.quantile(delays, 0.99))
    assert outcome_horizon(SimpleNamespace(events=events), window, quantile=0.5) == pytest.approx(50.5)
    # never beyond the attribution window; too few conversions: the window itself
    assert outcome_horizon(SimpleNamespace(events=events), AttributionConfig(convert_days=2)) == 48.0
    few = _events([0, 1, 2000], [3.0, 4.0, None])
    assert outcome_horizon(SimpleNamespace(events=few), window) == 7 * 24.0


def test_logged_decisions_leave_out_those_whose_outcomes_are_still_open() -> None:
    """Decisions later than the log's end − horizon − the longest decision-to-send delay are not evaluated."""
    from types import SimpleNamespace

    from training.policy_eval import censoring_note, logged_decisions

    n = 10
    now = np.arange(n) * 24 * HOUR_NS                                # one decision a day, days 0 … 9
    send_at = now + np.where(np.arange(n) == 3, 5, 2) * HOUR_NS        # longest lag: 5 h
    test = pd.DataFrame({"decision_id": [f"d{i}" for i in range(n)], "event_id": [f"e{i}" for i in range(n)],
                         "user_id": [f"u{i}" for i in range(n)], "message_id": "m1", "channel_name": "email",
                         "timestamp": send_at, "revenue": 1.0, "propensity": 0.5})
    decisions = pd.DataFrame({"decision_id": test["decision_id"], "user_id": test["user_id"],
                              "timestamp": now, "propensity": 0.5})
    end = 9 * 24 * HOUR_NS + 10 * HOUR_NS                             # the last event: day 9, 10:00
    events = pd.DataFrame({"timestamp": pd.to_datetime([0, end], utc=True)})
    dataset = SimpleNamespace(events=events, decisions=decisions,
                              messages=pd.DataFrame({"message_id": ["m1"], "value": [1.0]}))
    artifact = SimpleNamespace(score=lambda rows: np.zeros(len(rows)))
    whole = logged_decisions(dataset, test, artifact, 0, None, 0, horizon_hours=None)
    assert len(whole.frame) == n and whole.censored == 0 and whole.until is None
    cut = logged_decisions(dataset, test, artifact, 0, None, 0, horizon_hours=48.0)
    # cut = day 9 10:00 − 48 h − 5 h = day 7 05:00: days 0 … 7 are evaluated, days 8 and 9 held back
    assert cut.frame["decision_id"].tolist() == [f"d{i}" for i in range(8)]
    assert cut.censored == 2 and cut.until == end - 53 * HOUR_NS and cut.horizon_hours == 48.0
    assert "2 decisions after" in censoring_note(cut) and censoring_note(whole) is None
    # a cut that would leave nothing is not made
    assert len(logged_decisions(dataset, test, artifact, 0, None, 0, horizon_hours=24.0 * 30).frame) == n


def test_a_logged_triggered_decision_is_replayed_over_its_triggers_messages(dataset) -> None:
    """The decisions table's ``trigger`` (as the service logs it) restricts a decision's candidates in the
    replay to the messages its trigger allowed; other decisions keep all theirs."""
    import json
    from types import SimpleNamespace

    from decision.decide import eligible_candidates
    from decision.histories import send_histories
    from features.pipeline import FeatureStore
    from nbm.config import NbmConfig
    from training.policy_eval import _trigger_keep, logged_decisions

    messages = dataset.messages["message_id"].astype(str).tolist()
    allowed = messages[:2]
    users = dataset.users["user_id"].astype(str).to_numpy(dtype=object)[:6]
    now = np.full(len(users), int(dataset.events["timestamp"].max().value), dtype=np.int64)
    trigger = json.dumps({"event_type": "cart_abandoned", "message_id": None, "topic": None, "messages": allowed})
    decisions = pd.DataFrame({"decision_id": [f"d{i}" for i in range(6)], "user_id": users, "timestamp": now,
                              "propensity": 0.5, "trigger": [trigger, None, trigger, None, "", trigger]})
    test = pd.DataFrame({"decision_id": pd.Series([], dtype=object), "event_id": pd.Series([], dtype=object),
                         "user_id": pd.Series([], dtype=object), "message_id": pd.Series([], dtype=object),
                         "channel_name": pd.Series([], dtype=object), "timestamp": pd.Series([], dtype="int64"),
                         "revenue": pd.Series([], dtype=float), "propensity": pd.Series([], dtype=float)})
    fake = SimpleNamespace(events=dataset.events, decisions=decisions, messages=dataset.messages)
    logged = logged_decisions(fake, test, SimpleNamespace(score=lambda rows: np.zeros(len(rows))), 0, None, 0)
    frame = logged.frame.set_index("decision_id")
    assert frame.loc["d0", "trigger"] == tuple(allowed) and frame.loc["d1", "trigger"] is None
    assert frame.loc["d4", "trigger"] is None
    part = logged.frame
    store = FeatureStore.build(dataset, NbmConfig())
    users, now = part["user_id"].to_numpy(dtype=object), part["now"].to_numpy(dtype="int64")
    hist = send_histories(store, users, now, 8.0)
    every = eligible_candidates(store, users, now, hist).pairs
    kept = eligible_candidates(store, users, now, hist, _trigger_keep(part)).pairs
    names = np.asarray(kept.messages, dtype=object)
    for g, messages_allowed in enumerate(part["trigger"]):
        mine = names[kept.message_code[kept.group == g]]
        theirs = np.asarray(every.messages, dtype=object)[every.message_code[every.group == g]]
        if messages_allowed is None:
            assert sorted(mine) == sorted(theirs)
        else:
            assert set(mine) <= set(allowed) and sorted(mine) == sorted(m for m in theirs if m in allowed)
    assert _trigger_keep(part.assign(trigger=None)) is None
