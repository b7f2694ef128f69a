"""One lifecycle definition (:mod:`nbm.lifecycle`): every user's stage is the same in the features, the
decision path, ``nbm report`` and ``nbm ab`` — at the thresholds, and on a seeded simulated world.

The world's users click and convert without visiting now and then; a path that counted visits alone (what
``nbm report`` and ``nbm ab`` did before issue 38) puts some of them in a later stage, and a test here fails.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import ab, audience
from features.compute import Candidates
from features.pipeline import FeatureStore
from nbm.config import NbmConfig, load_config
from nbm.dataset import build_dataset
from nbm.lifecycle import LIFECYCLE_STAGES, NAT, stages_at, stages_in_use
from nbm.simulate import SimConfig, simulate

DAY = pd.Timedelta(days=1)
DAY_NS = DAY.value
WORLD = SimConfig(n_users=2_000, n_days=90, seed=38)
CHECKED_DAYS = (14, 35, 56, 84)
"""Instants (days after the world's start) of the decision-path check: before ``at_risk_after_days`` has passed
since the log began, before ``dormant_after_days`` has, and after."""
EXPERIMENT = "lifecycle-check"


# ----------------------------------------------------------------------------------------- the boundaries


AT = pd.Timestamp("2026-06-08T09:30:00.123456Z")   # microseconds: the float path of the features is exact too
MICRO = pd.Timedelta(microseconds=1)
BOUNDARY_USERS = {   # user: (days from signup, [(event type, time before AT)], stage at AT)
    "a": (400, [("visit", 21 * DAY)], "active"),                    # exactly at_risk_after_days: still active
    "b": (400, [("click", 21 * DAY + MICRO)], "at_risk"),           # a microsecond more
    "c": (400, [("convert", 60 * DAY)], "at_risk"),                 # exactly dormant_after_days: still at risk
    "d": (400, [("convert", 60 * DAY + MICRO)], "dormant"),
    "e": (400, [("visit", pd.Timedelta(0)), ("visit", 70 * DAY)], "dormant"),   # at AT itself: not before it
    "f": (400, [("open", DAY), ("send", DAY), ("bounce", DAY), ("visit", 30 * DAY)], "at_risk"),  # not activity
    "g": (30, [("visit", DAY)], "active"),                           # signup exactly new_days before: not new
    "h": (30, [], "dormant"),
    "i": (29, [], "new"),
    "j": (400, [("click", 2 * DAY), ("visit", 40 * DAY)], "active"),  # a click alone keeps a user active
}


def _boundary_dataset():
    users = pd.DataFrame({"user_id": list(BOUNDARY_USERS),
                          "signup_at": [AT - days * DAY for days, _, _ in BOUNDARY_USERS.values()],
                          "timezone": "UTC", "consent": [["email"]] * len(BOUNDARY_USERS)})
    rows = [(u, kind, AT - ago) for u, (_, events, _) in BOUNDARY_USERS.items() for kind, ago in events]
    rows.append(("nobody", "click", AT - DAY))   # an id without a users row: active, not new
    events = pd.DataFrame({"event_id": [f"e{i}" for i in range(len(rows))], "user_id": [r[0] for r in rows],
                           "event_type": [r[1] for r in rows], "timestamp": [r[2] for r in rows],
                           "message_id": ["m" if r[1] in ("open", "send", "bounce", "click") else None for r in rows],
                           "channel": ["email" if r[1] in ("open", "send", "bounce", "click") else None for r in rows]})
    messages = pd.DataFrame({"message_id": ["m"], "topic": ["t"], "channels": [["email"]]})
    dataset, report = build_dataset({"users": users, "events": events, "messages": messages}, NbmConfig(),
                                    pd.Timestamp("2026-12-01T00:00:00Z"))
    assert not len(report.problems)
    return dataset


def test_the_boundaries_are_the_same_in_nbm_lifecycle_and_the_features() -> None:
    """Activity exactly `at_risk_after_days` before is active, a microsecond more at risk — in both paths."""
    dataset, config = _boundary_dataset(), NbmConfig()
    ids = np.array([*BOUNDARY_USERS, "nobody"], dtype=object)
    expected = [stage for _, _, stage in BOUNDARY_USERS.values()] + ["active"]
    shared = stages_at(dataset.events, dataset.users, ids, np.full(len(ids), AT.value), config.lifecycle)
    assert [LIFECYCLE_STAGES[c] for c in shared] == expected
    features = FeatureStore.build(dataset, config).snapshot(AT, ids)["user_lifecycle_stage"]
    assert [LIFECYCLE_STAGES[c] for c in features] == expected


# ---------------------------------------------------------------------- every path on a seeded world


def _world_tables() -> dict[str, pd.DataFrame]:
    """The seeded world, plus one probe message per stage (every channel, always live) for the decision
    path, and the decision log as experiment :data:`EXPERIMENT`: each user enters on a day of their own."""
    tables = dict(simulate(WORLD).tables)
    channels = list(load_config(environ={}).channels)
    probes = pd.DataFrame({"message_id": [f"probe_{s}" for s in LIFECYCLE_STAGES], "topic": "probe",
                           "tags": [[] for _ in LIFECYCLE_STAGES], "channels": [channels] * len(LIFECYCLE_STAGES),
                           "lifecycle_stages": [[s] for s in LIFECYCLE_STAGES], "value": 1.0})
    tables["messages"] = pd.concat([tables["messages"], probes], ignore_index=True)
    rng = np.random.default_rng(WORLD.seed)
    user_ids = tables["users"]["user_id"].to_numpy(dtype=object)
    entry = pd.Series(WORLD.period_start + pd.to_timedelta(rng.integers(0, WORLD.n_days, len(user_ids)), unit="D"),
                      index=user_ids)
    arm = pd.Series(rng.choice(["model", "rules", "holdout"], len(user_ids)), index=user_ids)
    decisions = tables["decisions"]
    decisions = decisions[decisions["timestamp"] >= entry.reindex(decisions["user_id"]).to_numpy()].copy()
    decisions["arm"] = arm.reindex(decisions["user_id"]).to_numpy()
    decisions["experiment"] = EXPERIMENT
    tables["decisions"] = decisions.reset_index(drop=True)
    return tables


OPERATOR = {"activity_events": ["click"], "at_risk_after_days": 14, "dormant_after_days": 45,
            "loyal_min_conversions": 2, "loyal_window_days": 60}
"""A brand's own lifecycle: `active` means clicked (visits and conversions do not count), shorter thresholds,
and a loyal stage of two conversions in 60 days."""


@pytest.fixture(scope="module", params=["default", "operator"])
def world(request):
    """(dataset, config, store, the minimum users a stage must hold at the checks) under nbm's default
    lifecycle and under an operator's own."""
    config = load_config(environ={})
    if request.param == "operator":                       # validated as a configuration file's [lifecycle]
        config = NbmConfig.model_validate({**config.model_dump(), "lifecycle": OPERATOR})
    dataset, report = build_dataset(_world_tables(), config, now=WORLD.period_end + DAY)
    assert report.exit_code == 0
    minimum = np.array([50, 50, 50, 50, 0]) if request.param == "default" else np.array([20, 20, 20, 20, 20])
    return dataset, config, FeatureStore.build(dataset, config), minimum


def _feature_stages(store: FeatureStore, user_ids: np.ndarray, instants: np.ndarray) -> np.ndarray:
    """`user_lifecycle_stage` of each user as of each instant (aligned arrays), as the ranker sees it."""
    none = np.full(len(user_ids), None, dtype=object)
    frame = store.featurise(Candidates(user_ids, none, none, instants, instants))
    return frame["user_lifecycle_stage"].to_numpy(dtype=np.int64)


def test_the_report_counts_every_user_at_the_stage_of_the_features(world) -> None:
    """`nbm report`'s stage counts at each week's end and its week-on-week transitions equal those of the
    features' stage of every user, and `nbm.lifecycle.stages_at` equals the features user by user."""
    dataset, config, store, minimum = world
    start, weeks = WORLD.period_start, 12
    report = audience.analyze(dataset, config, start=start, end=start + 7 * weeks * DAY)
    instants = start.value + 7 * DAY_NS * np.arange(weeks + 1)
    users = dataset.users
    ids = users["user_id"].to_numpy(dtype=object)
    n = len(ids)
    features = _feature_stages(store, np.repeat(ids, len(instants)), np.tile(instants, n)).reshape(n, -1)
    shared = stages_at(dataset.events, users, np.repeat(ids, len(instants)), np.tile(instants, n),
                       config.lifecycle).reshape(n, -1)
    np.testing.assert_array_equal(shared, features)

    signup = users["signup_at"].to_numpy(dtype="datetime64[ns]").view("int64")
    signed_up = (signup == NAT)[:, None] | (signup[:, None] < instants[None, :])
    stages = stages_in_use(config.lifecycle)           # the report counts the stages in use, `loyal` only with one
    counts = report.section("lifecycle").pivot(index="segment_value", columns="period", values="count")
    assert sorted(counts.index) == sorted(stages)
    for k, week in enumerate(report.weeks):
        expected = np.bincount(features[signed_up[:, k + 1], k + 1], minlength=len(stages))
        np.testing.assert_array_equal(counts.loc[list(stages), week].to_numpy(), expected, err_msg=week)
    transitions = report.section("transitions")
    transitions = transitions[transitions["period"] == "all"].set_index(["segment_value", "metric"])["count"]
    pairs = np.zeros((len(stages),) * 2, dtype=np.int64)
    for k in range(weeks):
        np.add.at(pairs, (features[signed_up[:, k], k], features[signed_up[:, k], k + 1]), 1)
    for i, a in enumerate(stages):
        for j, b in enumerate(stages):
            assert transitions[a, f"to_{b}"] == pairs[i, j], (a, b)
    assert (np.bincount(features[:, -1], minlength=len(LIFECYCLE_STAGES)) >= minimum).all()   # stages populated


def test_the_ab_segment_is_the_stage_of_the_features_at_the_first_decision(world) -> None:
    dataset, config, store, minimum = world
    result = ab.analyze(dataset, EXPERIMENT, config)
    users = result.users
    ids = users.index.to_numpy(dtype=object)
    features = _feature_stages(store, ids, users["first_t"].to_numpy(dtype=np.int64))
    np.testing.assert_array_equal(users["lifecycle"].to_numpy(dtype=object),
                                  np.asarray(LIFECYCLE_STAGES, dtype=object)[features])
    assert (np.bincount(features, minlength=len(LIFECYCLE_STAGES)) >= minimum).all()


def test_a_message_targeted_to_a_stage_is_a_candidate_exactly_for_the_users_in_it(world) -> None:
    """The decision path's eligibility (a message's `lifecycle_stages`) uses the features' stage: each user
    with a consented channel gets the probe message of their own stage, and no other — in the batch
    (`expand_pairs`) and in the one-user expansion (`expand`) alike."""
    from decision.candidates import expand
    from decision.pairs import expand_pairs

    dataset, config, store, _ = world
    ids = dataset.users["user_id"].to_numpy(dtype=object)
    probe = {f"probe_{s}": code for code, s in enumerate(LIFECYCLE_STAGES)}
    for day in CHECKED_DAYS:
        now = np.full(len(ids), (WORLD.period_start + day * DAY).value, dtype=np.int64)
        pairs = expand_pairs(store, ids, now)
        message = pairs.messages[pairs.message_code]
        targeted = np.zeros((len(ids), len(LIFECYCLE_STAGES)), dtype=bool)
        is_probe = np.isin(message, list(probe))
        targeted[pairs.group[is_probe], [probe[m] for m in message[is_probe]]] = True
        has_candidates = np.bincount(pairs.group, minlength=len(ids)) > 0
        features = _feature_stages(store, ids, now)
        expected = np.zeros_like(targeted)
        expected[np.arange(len(ids)), features] = has_candidates
        np.testing.assert_array_equal(targeted, expected, err_msg=f"day {day}")
        assert has_candidates.mean() > 0.5
        for i in range(0, len(ids), 10):
            alone = expand(store, ids[i], pd.Timestamp(now[i], tz="UTC"), message_ids=list(probe))
            assert set(alone.message_id) == ({f"probe_{LIFECYCLE_STAGES[features[i]]}"} if has_candidates[i] else set())
