"""The trained model acting in the simulated world: eligible actions only, and better than the rules."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from features.pipeline import build_training_set
from nbm.config import load_config
from nbm.dataset import build_dataset
from nbm.simulate import RuleBasedPolicy, SimConfig, UniformRandomPolicy, simulate
from training.fit import RankerParams, fit_ranker, time_split
from training.simulated import ModelPolicy


@pytest.mark.slow
def test_model_policy_beats_the_rules_on_true_value() -> None:
    """Seeded: 1,500 users, 35 logged days, 7 days played forward from the same state (measured 2.2×)."""
    config = load_config(environ={})
    data = simulate(SimConfig(n_users=1500, n_days=35, seed=0))
    dataset, _ = build_dataset(data.tables, config, now=data.world.config.period_end)
    artifact = fit_ranker(time_split(build_training_set(dataset, config)), RankerParams(target="convert"))
    value, revenue = {}, {}
    for policy in (ModelPolicy(artifact, config), RuleBasedPolicy(), UniformRandomPolicy()):
        env = copy.deepcopy(data.environment)
        ctx = env.context()
        actions = policy.act(ctx, np.random.default_rng(0))
        rows = np.searchsorted(ctx.users, actions.users)
        assert ctx.eligible()[rows, actions.messages, actions.channels].all()
        daily = env.run(policy, days=7)
        value[policy.name], revenue[policy.name] = daily["true_value"].sum(), daily["expected_revenue"].sum()
    assert value["model"] > 1.3 * value["rules"]
    assert revenue["model"] > 2 * revenue["uniform"]
