"""Policies in the simulated world: exact propensities, consent kept, and good decisions beat naive ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nbm.simulate import (
    Actions, Environment, EpsilonMixPolicy, NothingPolicy, OraclePolicy, RuleBasedPolicy, SimConfig,
    UniformRandomPolicy, World,
)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SimConfig(n_users=1500, n_days=21, seed=21))


def _sub_context(env: Environment, n: int, seed: int):
    """The environment's context restricted to ``n`` users chosen at random (seeded)."""
    ctx = env.context()
    rows = np.sort(np.random.default_rng(seed).choice(ctx.k, size=n, replace=False))
    per_user = ("users", "stage", "consent", "days_since_signup", "days_since_contact", "contacts_7d",
                "welcome_sent", "favourite_topic")
    return dataclasses.replace(ctx, **{f: getattr(ctx, f)[rows] for f in per_user})


@pytest.mark.parametrize("small_catalog", [False, True], ids=["full", "small-catalog"])
def test_logged_propensities_equal_choice_frequencies(world, small_catalog) -> None:
    """Replay one day's decision 20,000 times: every (user, action) frequency matches its propensity.

    Tolerance per cell: 4 binomial standard deviations plus 0.002 (about 1e-4 false-alarm rate per cell).
    The small catalog (two slots, six messages) makes the uniform share ε/(|A| + 1) large enough that a
    wrong formula would show.
    """
    if small_catalog:
        world = World.build(SimConfig(n_users=300, n_days=7, seed=8, slot_hours=(10, 18), n_initial_messages=6,
                                      new_message_every_days=0))
    env = Environment(world, seed=3)
    env.run(RuleBasedPolicy(), days=1)
    ctx = _sub_context(env, 25, seed=0)
    policy = EpsilonMixPolicy(RuleBasedPolicy(), epsilon=0.3)
    rng = np.random.default_rng(123)
    reps = 20_000
    counts: dict[tuple[int, int, int, int], int] = {}
    propensity: dict[tuple[int, int, int, int], float] = {}
    sent = np.zeros(ctx.k)
    for _ in range(reps):
        actions = policy.act(ctx, rng)
        keys = zip(actions.users.tolist(), actions.messages.tolist(), actions.channels.tolist(), actions.slots.tolist())
        for key, p in zip(keys, actions.propensity.tolist()):
            counts[key] = counts.get(key, 0) + 1
            assert propensity.setdefault(key, p) == pytest.approx(p)
        sent[np.searchsorted(ctx.users, actions.users)] += 1
    for key, count in counts.items():
        p = propensity[key]
        tolerance = 4 * np.sqrt(p * (1 - p) / reps) + 0.002
        assert abs(count / reps - p) <= tolerance, (key, count / reps, p)
    # "Nothing" has probability (1 − ε)·[base sends nothing] + ε / (|A| + 1).
    base = RuleBasedPolicy().act(ctx, np.random.default_rng(0))
    base_sends = np.isin(ctx.users, base.users)
    p_nothing = 0.7 * ~base_sends + 0.3 / (ctx.n_eligible_actions() + 1)
    observed = 1 - sent / reps
    assert np.all(np.abs(observed - p_nothing) <= 4 * np.sqrt(p_nothing * (1 - p_nothing) / reps) + 0.002)


def test_eligible_action_count_matches_the_eligibility_mask(world) -> None:
    env = Environment(world, seed=1)
    ctx = env.context()
    expected = ctx.eligible().sum(axis=(1, 2)) * len(ctx.slot_hours)
    np.testing.assert_array_equal(ctx.n_eligible_actions(), expected)


@pytest.mark.parametrize("policy", [UniformRandomPolicy(), RuleBasedPolicy(), EpsilonMixPolicy(RuleBasedPolicy(), 0.5),
                                    OraclePolicy()], ids=lambda p: p.name)
def test_policies_only_choose_eligible_actions(world, policy) -> None:
    env = Environment(world, seed=2)
    for _ in range(3):
        ctx = env.context()
        actions = policy.act(ctx, np.random.default_rng(0))
        rows = np.searchsorted(ctx.users, actions.users)
        assert ctx.eligible()[rows, actions.messages, actions.channels].all()
        env.step(policy)


def test_environment_refuses_an_action_without_consent(world) -> None:
    env = Environment(world, seed=0)
    ctx = env.context()
    no_sms = np.flatnonzero(~ctx.consent[:, world.config.channels.index("sms")])[0]
    sms_message = int(np.flatnonzero(world.catalog.channels[:, world.config.channels.index("sms")] & ctx.live)[0])

    class Rogue(NothingPolicy):
        name = "rogue"

        def _act(self, ctx, rng):
            one = np.array([ctx.users[no_sms]])
            return Actions(one, np.array([sms_message]), np.array([world.config.channels.index("sms")]),
                           np.array([0]), np.array([1.0]))

    with pytest.raises(ValueError, match="ineligible action"):
        env.step(Rogue())


def test_good_decisions_beat_naive_ones_on_true_value(world) -> None:
    """Oracle > rules > uniform random, on the truth's expected value over three weeks (same world)."""
    value = {}
    for policy in (OraclePolicy(), RuleBasedPolicy(), UniformRandomPolicy(), NothingPolicy()):
        value[policy.name] = Environment(world, seed=9).run(policy)["true_value"].sum()
    assert value["oracle"] > 5 * value["rules"] > 0
    assert value["rules"] > value["uniform"]
    assert value["nothing"] == 0


def test_regret_is_oracle_value_minus_policy_value(world) -> None:
    env = Environment(world, seed=4)
    daily = env.run(RuleBasedPolicy(), days=3, track_regret=True)
    np.testing.assert_allclose(daily["regret"], daily["oracle_value"] - daily["true_value"])
    assert (daily["regret"] >= -1e-9).all()
    oracle = Environment(world, seed=4).run(OraclePolicy(), days=1, track_regret=True)
    assert oracle["regret"].abs().max() < 1e-6
