"""The population oracle: calibrated on the truth, blind to each person's hidden taste, between uniform and
the oracle, and far below the oracle where individual taste dominates (the ``taste`` preset)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nbm.simulate import (Environment, OraclePolicy, PopulationOraclePolicy, RuleBasedPolicy, UniformRandomPolicy,
                          World, world_config)
from nbm.simulate.policies import action_values, true_value_of, uniform_values
from nbm.simulate.population_oracle import expected_value_of
from nbm.simulate.truth import GroundTruth


def _environment(preset: str | None, seed: int, n_users: int = 600) -> Environment:
    """A seeded world after two days of its rules (some fatigue, some contact history)."""
    env = Environment(World.build(world_config(preset, n_users=n_users, n_days=14, seed=seed)), seed=1)
    env.run(RuleBasedPolicy(), days=2)
    return env


def _normalised(env: Environment) -> dict[str, float]:
    """True value of one day's decisions of every live user: 0 = uniform random, 1 = the oracle."""
    ctx = env.context()
    rng = np.random.default_rng(0)
    value = {policy.name: float(action_values(ctx, policy.act(ctx, rng)).sum())
             for policy in (OraclePolicy(), PopulationOraclePolicy())}
    uniform = float(uniform_values(ctx).sum())
    return {name: (v - uniform) / (value["oracle"] - uniform) for name, v in value.items()}


@pytest.mark.parametrize("seed", [0])
def test_population_oracle_lies_between_uniform_and_the_oracle_and_far_below_it_in_the_taste_world(seed) -> None:
    """Seeds 0–3 on 600 users: default world 0.33–0.41, ``taste`` 0.05–0.14 (gap to the oracle 0.59–0.67
    against 0.86–0.95)."""
    default = _normalised(_environment(None, seed))["population_oracle"]
    taste = _normalised(_environment("taste", seed))["population_oracle"]
    assert 0.15 < default < 0.9
    assert 0.0 < taste < 0.9
    assert (1 - taste) >= (1 - default) + 0.15      # the gap oracle − population oracle is much larger
    assert taste <= 0.5 * default


def test_uniform_values_are_the_mean_of_the_uniform_policys_draws() -> None:
    env = _environment(None, seed=2, n_users=200)
    ctx = env.context()
    rng = np.random.default_rng(3)
    draws = [action_values(ctx, UniformRandomPolicy().act(ctx, rng)).sum() for _ in range(400)]
    expected = uniform_values(ctx).sum()
    assert abs(np.mean(draws) - expected) <= 4 * np.std(draws) / np.sqrt(len(draws))


def test_the_expected_values_are_calibrated_on_the_truth() -> None:
    """Over every eligible (message, channel) at 12:00 of 1,500 people, the population oracle's expected value
    matches the mean true value, overall and where the message is about the profile's stated favourite
    (8,000 people: 0.239 against 0.239 and 1.16 against 1.18)."""
    env = _environment(None, seed=5, n_users=1500)
    ctx = env.context()
    rows = np.arange(ctx.k)
    r, m, c = np.nonzero(ctx.eligible(rows))
    slot = list(ctx.slot_hours).index(12)
    expected = expected_value_of(ctx, 16, np.random.default_rng(1))(rows)(r, m, c, slot)
    true = true_value_of(ctx, rows)(r, m, c, slot)
    favourite = env.world.catalog.topic[m] == env.world.favourite_topic[ctx.users[r]]
    assert expected.mean() == pytest.approx(true.mean(), rel=0.1)
    assert expected[favourite].mean() == pytest.approx(true[favourite].mean(), rel=0.1)
    assert expected[favourite].mean() > 3 * expected[~favourite].mean()   # it reads the stated favourite


def test_the_population_oracle_is_blind_to_hidden_taste() -> None:
    """Shuffling people's topic interest, preferred hour and channel noise (nothing observable changes) changes
    the oracle's choices but not the population oracle's."""
    world = World.build(world_config(None, n_users=400, n_days=7, seed=6))
    pop = world.population
    shuffle = np.random.default_rng(0).permutation(pop.n)
    hidden = replace(pop, interest=pop.interest[shuffle], preferred_hour=pop.preferred_hour[shuffle],
                     responsiveness=pop.responsiveness[shuffle])
    other = replace(world, population=hidden, truth=GroundTruth(world.config, hidden, world.catalog))
    chosen = {}
    for name, w in (("world", world), ("other", other)):
        ctx = Environment(w, seed=1).context()
        chosen[name] = [(a.users, a.messages, a.channels, a.slots)
                        for a in (PopulationOraclePolicy(draws=8).act(ctx, None), OraclePolicy().act(ctx, None))]
    for same, different in zip(chosen["world"][0], chosen["other"][0]):
        np.testing.assert_array_equal(same, different)
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(chosen["world"][1], chosen["other"][1]))


def test_draws_must_be_positive() -> None:
    with pytest.raises(ValueError, match="`draws`"):
        PopulationOraclePolicy(draws=0)
