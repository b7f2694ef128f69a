"""``nbm simulate``: a world, the log its rule-based CRM wrote, as the four tables of the data contract."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.simulate.config import SimConfig
from nbm.simulate.environment import Environment
from nbm.simulate.policies import EpsilonMixPolicy, Policy
from nbm.simulate.population import TIMEZONES
from nbm.simulate.rules import RuleBasedPolicy
from nbm.simulate.world import World


@dataclass(frozen=True)
class SimulatedData:
    """A simulated world, the environment after the logged period, and the tables it produced."""

    world: World
    environment: Environment
    daily: pd.DataFrame               # one row per day: sends, true value, realised revenue …
    tables: dict[str, pd.DataFrame]   # events, messages, users, links, decisions
    logging_policy: Policy


def logging_policy(config: SimConfig) -> Policy:
    """The policy that wrote the log: the rule-based CRM mixed with ε-uniform exploration."""
    return EpsilonMixPolicy(RuleBasedPolicy(), config.epsilon)


def environment_for(config: SimConfig) -> Environment:
    """The world of ``config`` and the environment that ``simulate`` plays it in (same seeds)."""
    world = World.build(config)
    env_seed = np.random.SeedSequence(config.seed).spawn(3)[2]
    return Environment(world, seed=int(env_seed.generate_state(1)[0]))


def simulate(config: SimConfig) -> SimulatedData:
    """Build the world of ``config`` and play its logging policy over the whole period."""
    environment = environment_for(config)
    world = environment.world
    policy = logging_policy(config)
    environment.log.policy_name = policy.name
    daily = environment.run(policy)
    events = environment.log.to_frame(until=config.period_end.value)
    tables = {
        "events": events,
        "messages": world.catalog.table.copy(),
        "users": users_table(world),
        "links": links_table(world),
        "decisions": environment.log.decisions_frame(until=config.period_end.value),
    }
    return SimulatedData(world, environment, daily, tables, policy)


def users_table(world: World) -> pd.DataFrame:
    """The ``users`` table: canonical id, signup, time zone, consent at the start, attributes."""
    pop, channels = world.population, np.asarray(world.config.channels, dtype=object)
    consent = [list(channels[row]) for row in pop.consent]  # per user, but tiny lists; ~0.1 s per 100k
    frame = pd.DataFrame({
        "user_id": pd.array(pop.user_ids, dtype="str"),
        "signup_at": pd.to_datetime(pop.signup_at, utc=True).floor("s"),
        "timezone": pd.array(np.asarray(TIMEZONES, dtype=object)[pop.timezone], dtype="str"),
        "consent": consent,
    })
    return pd.concat([frame, pop.attributes.reset_index(drop=True)], axis=1)


def links_table(world: World) -> pd.DataFrame:
    """The ``links`` table: user id ↔ device id, and device id ↔ cookie id (a chain)."""
    pop = world.population
    device = pop.device_ids != ""
    cookie = pop.cookie_ids != ""
    return pd.DataFrame({
        "identifier_a": pd.array(np.concatenate([pop.user_ids[device], pop.device_ids[cookie]]), dtype="str"),
        "identifier_b": pd.array(np.concatenate([pop.device_ids[device], pop.cookie_ids[cookie]]), dtype="str"),
    })
